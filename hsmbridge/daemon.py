"""Wire configuration, HSM, store and services together and serve them.

Start-up order matters: SOFTHSM2_CONF must be set before the PKCS#11 module is loaded, the store is
migrated before anything reads it, and health turns SERVING only once the HSM is logged in, the
master KEK found and the store answers. Shutdown is the reverse: NOT_SERVING, drain in-flight calls,
then close sessions (the login session last) and the store.

The REST facade (Key Protect API v2) runs in the same process and event loop as the gRPC aio
server: uvicorn serves the FastAPI app as one more task over a socket bound here, and both call
the one service layer directly. Uvicorn's own signal handling is switched off, so SIGTERM/SIGINT
reach the daemon's handler, which stops REST and gRPC together and gracefully.

This module is one process. `serve --workers N` (N > 1) runs it N times under the supervisor
(hsmbridge/supervisor.py), each worker a fresh interpreter with its own PKCS#11 initialisation,
binding the same ports with SO_REUSEPORT (`reuseport_socket`, `bind_grpc`). The listeners are
built in `rest_socket` / `bind_grpc` only, so TLS and authentication have one place to go.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hsmbridge import softhsm
from hsmbridge.config import Config, dev_credentials
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import Store
from hsmbridge.errors import InvalidInput
from hsmbridge.grpc.context import DevAuthenticator
from hsmbridge.grpc.interceptors import MetricsInterceptor
from hsmbridge.grpc.server import build_server, mark_serving
from hsmbridge.metrics import Metrics

log = logging.getLogger("hsmbridge")


def prepare_environment(config: Config) -> None:
    """Point SoftHSM2 at the configured directory unless the caller already chose one."""
    if config.hsm.softhsm_dir and "SOFTHSM2_CONF" not in os.environ:
        conf = Path(config.hsm.softhsm_dir) / "softhsm2.conf"
        if conf.exists():
            os.environ["SOFTHSM2_CONF"] = str(conf.resolve())


def module_path(config: Config) -> str:
    module = config.hsm.module or softhsm.find_module()
    if not module:
        raise InvalidInput(
            "no PKCS#11 module configured and SoftHSM2 not found: set hsm.module or install softhsm2"
        )
    if not Path(module).exists():
        raise InvalidInput(f"the PKCS#11 module {module} does not exist: check hsm.module")
    return module


def hsm_settings(config: Config):  # type: ignore[no-untyped-def]
    from hsmbridge.hsm.backend import Pkcs11Settings
    from hsmbridge.hsm.recovery import RecoveryPolicy

    return Pkcs11Settings(
        module=module_path(config),
        init_args=config.hsm.init_args,
        pin=config.resolve_pin(),
        token_label=config.hsm.token_label,
        slot_id=config.hsm.slot,
        kek_label=config.hsm.kek_label,
        pool_size=config.hsm.pool_size,
        checkout_timeout=config.hsm.checkout_timeout,
        cache_size=config.hsm.cache_size,
        oaep_sha256_fallback=config.hsm.oaep_sha256_fallback,
        recovery=RecoveryPolicy(
            max_backoff=config.hsm.recovery_max_backoff, wedged_after=config.hsm.recovery_wedged_after
        ),
        export_software_fallback=config.hsm.export_software_fallback,
    )


def group_settings(config: Config):  # type: ignore[no-untyped-def]
    """One `Pkcs11Settings` per `[[hsm.tokens]]` entry (an HSM group); unset fields from `[hsm]`."""
    from dataclasses import replace

    base = hsm_settings(config)
    return [
        replace(
            base,
            module=token.module or base.module,
            init_args=token.init_args if token.init_args is not None else base.init_args,
            token_label=token.token_label if token.slot is None else None,
            slot_id=token.slot,
            pin=config.resolve_token_pin(token),
        )
        for token in config.hsm.tokens
    ]


def open_backend(config: Config, *, create_kek: bool = False):  # type: ignore[no-untyped-def]
    """The one token of `[hsm]`, or an HSM group with failover when `[[hsm.tokens]]` lists some."""
    if not config.hsm.tokens:
        from hsmbridge.hsm.backend import Pkcs11Backend

        return Pkcs11Backend(hsm_settings(config), create_kek=create_kek)
    from hsmbridge.hsm.group import Pkcs11Group

    return Pkcs11Group(
        group_settings(config),
        health_interval=config.hsm.health_interval,
        recovery_interval=config.hsm.recovery_interval,
    )


def open_store(config: Config) -> Store:
    """SQLite by default, PostgreSQL for replicas (`store.url`); migrated before anything reads."""
    from hsmbridge.core.store import open_store as open_store_at

    store = open_store_at(
        config.store.location,
        pool_min_size=config.store.pool_min_size,
        pool_max_size=config.store.pool_max_size,
    )
    try:
        store.migrate()
    except BaseException:
        store.close()
        raise
    return store


def open_services(config: Config, *, create_kek: bool = False) -> Services:
    prepare_environment(config)
    backend = open_backend(config, create_kek=create_kek)
    try:
        store = open_store(config)
    except BaseException:
        backend.close()
        raise
    return Services.build(store, backend)


def _is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.") or listen.startswith("unix:")


def require_loopback(what: str, listen: str) -> None:
    """Development mode trusts whoever connects; only this machine may."""
    if not _is_loopback(listen):
        raise InvalidInput(
            f"development mode refuses to listen on {listen} for {what}: use a loopback address"
        )


def _split_listen(listen: str, what: str = "rest") -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise InvalidInput(f"{what}.listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def reuseport_socket(listen: str, what: str, *, backlog: int | None = 2048) -> socket.socket:
    """A TCP socket bound to `listen` with SO_REUSEPORT, listening unless `backlog` is None.

    SO_REUSEPORT lets every worker process bind the same port and the kernel spread connections
    evenly across them. The supervisor uses `backlog=None` to reserve a port (and to turn port 0
    into a concrete one) without receiving connections: only listening sockets get any.
    """
    host, port = _split_listen(listen, what.lower())
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InvalidInput(f"cannot listen on {listen} for {what}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if backlog is not None:
            sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise InvalidInput(f"cannot listen on {listen} for {what}: {exc.strerror or exc}") from None
    return sock


def bind_rest_socket(listen: str) -> socket.socket:
    """Bind here, not in uvicorn: a busy port becomes a clear error instead of uvicorn's
    sys.exit, and port 0 yields the real port before anything is printed."""
    return reuseport_socket(listen, "REST")


def rest_socket(config: Config) -> socket.socket:
    """The REST listener. One place to extend (TLS is wrapped by uvicorn, not here)."""
    return bind_rest_socket(config.rest.listen)


def bind_grpc(server: Any, config: Config) -> str:
    """Add the gRPC listener to `server` (SO_REUSEPORT comes from the server options) and return
    the bound address: TLS/mTLS with `[grpc.tls]`, a unix socket for ``unix:/path`` (its mode is
    set by `secure_grpc_socket` once the server started)."""
    from hsmbridge.security.tls import grpc_server_credentials, prepare_unix_socket

    listen = config.grpc.listen
    if listen.startswith("unix:"):
        listen = prepare_unix_socket(listen.removeprefix("unix:"), config.grpc.socket_mode)
    if config.grpc.tls is not None:
        port = server.add_secure_port(listen, grpc_server_credentials(config.grpc.tls))
    else:
        port = server.add_insecure_port(listen)
    if port == 0:
        raise InvalidInput(f"cannot listen on {config.grpc.listen}")
    if listen.startswith("unix:"):
        return listen
    return f"{listen.rsplit(':', 1)[0]}:{port}"


def check_ready(services: Services) -> bool:
    """Readiness: the HSM is not recovering from an outage, the store answers, the HSM answers on
    a session, and the master KEK is there. Liveness is separate (`check_live`), so an HSM outage
    makes a pod unready instead of getting it restarted."""
    backend: Any = services.backend
    if not getattr(backend, "healthy", True):
        return False  # recovering (hsm/recovery.py): no HSM call needed to know
    # One HSM call that notices a vanished token and starts recovering even when no request
    # comes (an unready pod gets none); `confirm` never raises.
    if hasattr(backend, "check") and not backend.check():
        return False
    try:
        services.store.ping()
        backend.random(1)
        backend.ensure_kek(backend.settings.kek_label, create=False)
    except Exception as exc:
        log.warning("not ready: %s", type(exc).__name__)
        return False
    return True


def check_live(services: Services) -> bool:
    """Liveness fails only when the HSM's recovery is wedged: it has not completed an attempt
    for `RecoveryPolicy.wedged_after` seconds (a PKCS#11 call stuck inside the module blocks the
    re-initialisation, or the recovery thread died). An HSM that is merely down is not that:
    recovery keeps trying and the daemon serves again by itself once the HSM is back, so a
    restart would only add a cold start. See docs/operating.md."""
    health = getattr(services.backend, "health", None)
    return not (health is not None and health.wedged)


async def _watch_readiness(services: Services, health: Any, interval: float) -> None:
    from grpc_health.v1 import health_pb2

    serving = live = True
    while True:
        await asyncio.sleep(interval)
        ready = await asyncio.to_thread(check_ready, services)
        if ready != serving:
            serving = ready
            log.warning("readiness: %s", "SERVING" if ready else "NOT_SERVING")
            await mark_serving(health, ready)
        alive = check_live(services)
        if alive != live:
            live = alive
            log.error("liveness: %s", "SERVING" if alive else "NOT_SERVING (HSM recovery is wedged)")
            status = (
                health_pb2.HealthCheckResponse.SERVING
                if alive
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await health.set("liveness", status)


async def _start_health_listener(health: Any, config: Config) -> Any:
    """`grpc.health_listen`: the health service alone, in plaintext, for probes."""
    import grpc
    from grpc_health.v1 import health_pb2_grpc

    if not config.grpc.health_listen:
        return None
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    if server.add_insecure_port(config.grpc.health_listen) == 0:
        raise InvalidInput(f"cannot listen on {config.grpc.health_listen} for grpc.health_listen")
    await server.start()
    return server


def secure_grpc_socket(config: Config) -> None:
    if config.grpc.listen.startswith("unix:"):
        from hsmbridge.security.tls import secure_unix_socket

        secure_unix_socket(config.grpc.listen, config.grpc.socket_mode, config.grpc.socket_group)


def require_safe_listeners(config: Config) -> None:
    """Development mode: loopback only. Otherwise: credentials must be configured, and a plaintext
    listener off loopback needs `server.allow_plaintext_remote` (TLS terminated in front)."""
    if config.server.dev:
        require_loopback("gRPC", config.grpc.listen)
        if config.rest.enabled:
            require_loopback("REST", config.rest.listen)
        return
    if not config.security.has_credentials:
        raise InvalidInput(
            "no way to authenticate callers is configured: add [[security.tokens]], [security.jwt] or "
            "[[security.mtls.clients]] (docs/operating.md), or run `hsmbridge dev` for development"
        )
    listeners = [("gRPC", config.grpc.listen, config.grpc.tls)]
    if config.rest.enabled:
        listeners.append(("REST", config.rest.listen, config.rest.tls))
    for what, listen, tls in listeners:
        if tls is None and not _is_loopback(listen) and not config.server.allow_plaintext_remote:
            raise InvalidInput(
                f"{what} would listen in plaintext on {listen}: configure [{what.lower()}.tls], a loopback "
                "or unix-socket address, or set server.allow_plaintext_remote = true"
            )


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is installed (a dependency), else asyncio's own loop.

    Why: on the asyncio loop with h11, uvicorn's HTTP parsing and the loop cost ≈270 µs of CPU per
    request before any work; with httptools (which uvicorn picks by itself when installed) on
    uvloop ≈37 µs (../shared/PITFALLS.md). gRPC aio runs on the same uvloop loop as REST: grpc.aio
    drives any asyncio-compatible loop through its C-core poller thread, and the daemon keeps one
    loop for both so each handler still calls the service layer directly, with no hand-off.

    ``HSMBRIDGE_EVENT_LOOP=asyncio`` forces asyncio's loop (to compare, or to rule uvloop out).
    """
    if os.environ.get("HSMBRIDGE_EVENT_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def run(main: Coroutine[Any, Any, None]) -> None:
    """`asyncio.run` on the daemon's event loop (`event_loop_factory`)."""
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        runner.run(main)


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _uvicorn_server(app: Any, config: Config) -> Any:
    import uvicorn

    class EmbeddedServer(uvicorn.Server):
        """uvicorn without its signal handlers: the daemon owns SIGTERM/SIGINT."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    from hsmbridge.rest.limits import apply_to_uvicorn
    from hsmbridge.security.tls import uvicorn_ssl_kwargs

    uvicorn_config = uvicorn.Config(
        app,
        **(uvicorn_ssl_kwargs(config.rest.tls) if config.rest.tls is not None else {}),
        log_config=None,
        access_log=config.rest.access_log,
        lifespan="off",
        timeout_graceful_shutdown=int(config.rest.shutdown_grace),
        server_header=False,
    )
    apply_to_uvicorn(
        uvicorn_config,
        header_timeout=config.rest.header_timeout,
        idle_timeout=config.rest.idle_timeout,
        max_connections=config.rest.max_connections,
    )
    return EmbeddedServer(uvicorn_config)


def rest_authenticator_for(config: Config) -> Any:
    """The development REST authenticator: the dev token (fixed by HSMBRIDGE_DEV_TOKEN, random
    otherwise) plus HSMBRIDGE_DEV_EXTRA_TOKENS. A random token is printed so it can be used."""
    from hsmbridge.rest.context import StaticTokenAuthenticator

    credentials = dev_credentials()
    if credentials.token_generated:
        print(f"hsmbridge: REST dev bearer token {credentials.token}", flush=True)
    return StaticTokenAuthenticator(credentials.tokens())


def huawei_authenticator_for(config: Config, rest_authenticator: Any, dev: Any = None) -> Any:
    """The Huawei KMS API's authenticator: ``[huawei]`` access keys, X-Auth-Token through the REST
    authenticator, and in dev mode the dev AK/SK (`dev`, or HSMBRIDGE_DEV_HUAWEI_AK/_SK, or a
    printed random pair). None when ``huawei.enabled`` is false."""
    from hsmbridge.huawei.auth import HuaweiAuthenticator, dev_access_key

    if not config.huawei.enabled:
        return None
    if config.server.dev and dev is None:
        dev = dev_access_key()
        if dev.generated:
            print(f"hsmbridge: Huawei dev AK {dev.access_key} SK {dev.secret_key}", flush=True)
    identify = getattr(rest_authenticator, "identify_rest", None)
    return HuaweiAuthenticator.from_config(config.huawei, identify, dev if config.server.dev else None)


def rest_app(
    services: Services,
    config: Config,
    authenticator: Any,
    metrics: Metrics | None,
    gate: Any,
    huawei_dev: Any = None,
) -> Any:
    from hsmbridge.rest.app import create_app
    from hsmbridge.rest.representation import RenderContext

    return create_app(
        services,
        authenticator,
        RenderContext(config.rest.region, config.rest.account),
        metrics=metrics,
        gate=gate,
        huawei=huawei_authenticator_for(config, authenticator, huawei_dev),
        max_body_bytes=config.rest.max_body_bytes,
    )


async def _start_rest(app: Any, config: Config) -> tuple[Any, asyncio.Task[None], str]:
    sock = rest_socket(config)
    server = _uvicorn_server(app, config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="hsmbridge-rest")
    while not server.started:
        if task.done():
            sock.close()
            task.result()  # re-raise what stopped it
            raise InvalidInput(f"the REST server on {config.rest.listen} did not start")
        await asyncio.sleep(0.01)
    return server, task, _url(sock)


async def _sweep(services: Services, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            swept = await asyncio.to_thread(services.import_tokens.sweep_expired)
            if swept:
                log.info("destroyed %d expired import token keypair(s)", swept)
        except Exception as exc:
            log.warning("import token sweep failed: %s", type(exc).__name__)
        try:
            swept = await asyncio.to_thread(services.external_keys.sweep)
            if swept:
                log.info("external keys: %d expired material, due deletion or import keypair(s) done", swept)
        except Exception as exc:
            log.warning("external key sweep failed: %s", type(exc).__name__)


def _rotation_scheduler(
    services: Services, gate: Any, metrics: Metrics | None, role: WorkerRole | None
) -> Any:
    """Worker 0 of each daemon scans (its siblings share its store, so more scanners would only
    lose claims); replicas each scan, and the store claim makes every rotation happen once."""
    from hsmbridge.core.rotation_scheduler import RotationScheduler
    from hsmbridge.security.system_audit import RotationAuditLog

    if role is not None and role.index != 0:
        return None
    scheduler = RotationScheduler(
        services.store, services.keys, services.clock, audit=RotationAuditLog(gate.audit)
    )
    if metrics is not None:
        metrics.watch_rotation_scheduler(scheduler)
    return scheduler


async def _rotate_due_keys(scheduler: Any, interval: float) -> None:
    while True:
        try:
            await asyncio.to_thread(scheduler.run_once)
        except Exception as exc:
            log.warning("rotation scan failed: %s", type(exc).__name__)
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class WorkerRole:
    """How a worker process started by the supervisor (hsmbridge/supervisor.py) differs from a
    stand-alone daemon: it reports readiness as one JSON line on `ready_fd` instead of printing
    the listen lines, and stops when the supervisor's `lifeline_fd` pipe closes (the supervisor
    died). `index` of `count` names it in logs and metrics."""

    index: int
    count: int
    ready_fd: int | None = None
    lifeline_fd: int | None = None


def start_metrics_http(metrics: Metrics, config: Config) -> tuple[Any, str]:
    """Serve this process's registry on `metrics.listen` (a busy port is a clear start-up error)."""
    from hsmbridge.metrics import serve_http

    try:
        return serve_http(metrics.registry, config.metrics.listen)
    except (OSError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidInput(f"cannot listen on {config.metrics.listen} for metrics: {detail}") from None


def _attach_keypair_pool(services: Services, config: Config) -> Any:
    """Each process's pool has its own owner id and lease (core/keypair_pool.py), so workers,
    daemons and replicas on one token never destroy each other's keypairs."""
    from hsmbridge.core.keypair_pool import KeypairPool

    if config.hsm.import_key_pool_size <= 0:
        return None
    pool = KeypairPool(
        services.backend, size=config.hsm.import_key_pool_size, bits=config.hsm.import_key_pool_bits
    )
    services.import_tokens.attach_pool(pool)
    return pool


def _report_ready(role: WorkerRole, addresses: dict[str, str]) -> None:
    if role.ready_fd is None:
        return
    message = json.dumps({"pid": os.getpid(), **addresses}).encode() + b"\n"
    try:
        os.write(role.ready_fd, message)
    finally:
        os.close(role.ready_fd)


async def serve(
    config: Config,
    *,
    rest_authenticator: Any = None,
    on_ready: Callable[[dict[str, str]], None] | None = None,
    role: WorkerRole | None = None,
    huawei_dev: Any = None,
) -> None:
    """Run gRPC (and REST unless `rest.enabled` is false) in this process until SIGTERM/SIGINT.

    `rest_authenticator` defaults to the development one (`rest_authenticator_for`). Without a
    `role` this is the whole daemon (`serve --workers 1`, `dev`) and prints the listen lines; with
    one it is a worker under the supervisor.
    """
    require_safe_listeners(config)
    if config.rest.enabled:
        _split_listen(config.rest.listen)
    from hsmbridge.security.config import build_authenticator, build_gate

    gate = build_gate(config.security)
    if config.server.dev:
        grpc_authenticator: Any = DevAuthenticator()
        rest_auth = rest_authenticator or (rest_authenticator_for(config) if config.rest.enabled else None)
    else:
        grpc_authenticator = rest_auth = rest_authenticator or build_authenticator(config.security)
    services = await asyncio.to_thread(open_services, config)
    services.external_keys.allow_pkcs1_v15 = config.huawei.allow_pkcs1_v15
    metrics = Metrics() if config.metrics.enabled else None
    rest: tuple[Any, asyncio.Task[None], str] | None = None
    metrics_http: Any = None
    addresses: dict[str, str] = {}
    try:
        if metrics is not None:
            metrics.watch_backend(services.backend)
        pool = await asyncio.to_thread(_attach_keypair_pool, services, config)
        if pool is not None and metrics is not None:
            metrics.watch_keypair_pool(pool)
        interceptors = [MetricsInterceptor(metrics)] if metrics is not None else []
        app = (
            rest_app(services, config, rest_auth, metrics, gate, huawei_dev) if config.rest.enabled else None
        )
        server, health = build_server(
            services, grpc_authenticator, rest_app=app, interceptors=interceptors, gate=gate
        )
        addresses["grpc"] = bind_grpc(server, config)
        if app is not None:
            rest = await _start_rest(app, config)
            addresses["rest"] = rest[2]
        if metrics is not None:
            metrics_http, addresses["metrics"] = start_metrics_http(metrics, config)
        await server.start()
        secure_grpc_socket(config)
    except BaseException:
        if rest is not None:
            rest[0].should_exit = True
            await rest[1]
        if metrics_http is not None:
            metrics_http.shutdown()
        await asyncio.to_thread(_close_services, services)
        raise
    await mark_serving(health, True)
    from grpc_health.v1 import health_pb2

    await health.set("liveness", health_pb2.HealthCheckResponse.SERVING)
    health_server = await _start_health_listener(health, config)
    readiness = asyncio.create_task(_watch_readiness(services, health, config.server.readiness_interval))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    if role is not None and role.lifeline_fd is not None:
        loop.add_reader(role.lifeline_fd, stop.set)  # readable = EOF: the supervisor is gone
    sweeper = asyncio.create_task(_sweep(services, config.server.sweep_interval))
    scheduler = _rotation_scheduler(services, gate, metrics, role) if config.server.auto_rotation else None
    rotations = (
        asyncio.create_task(_rotate_due_keys(scheduler, config.server.rotation_interval))
        if scheduler is not None
        else None
    )
    if role is not None:
        _report_ready(role, addresses)
    else:
        if "metrics" in addresses:
            print(f"hsmbridge: metrics listening on {addresses['metrics']}", flush=True)
        if rest is not None:
            log.info("hsmbridge serving REST on %s", rest[2])
            print(f"hsmbridge: REST listening on {rest[2]}", flush=True)
        log.info("hsmbridge serving gRPC on %s", addresses["grpc"])
        print(f"hsmbridge: gRPC listening on {addresses['grpc']}", flush=True)
    if on_ready is not None:
        on_ready(addresses)
    waiters = [asyncio.ensure_future(stop.wait())]
    if rest is not None:
        waiters.append(rest[1])  # an unexpected REST exit stops the daemon too
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("shutting down: draining in-flight calls")
        if role is not None and role.lifeline_fd is not None:
            loop.remove_reader(role.lifeline_fd)
        await mark_serving(health, False)
        sweeper.cancel()
        if rotations is not None:
            rotations.cancel()
        readiness.cancel()
        if health_server is not None:
            await health_server.stop(None)
        if rest is not None:
            rest[0].should_exit = True
        await asyncio.gather(
            server.stop(grace=config.server.shutdown_grace),
            *([rest[1]] if rest is not None else []),
            return_exceptions=True,
        )
        waiters[0].cancel()
        if metrics_http is not None:
            metrics_http.shutdown()
        if scheduler is not None:
            await asyncio.to_thread(scheduler.stop)
        await asyncio.to_thread(_close_services, services)
        log.info("stopped")


def _close_services(services: Services) -> None:
    """Pool first (its unused keypairs are destroyed through the backend), then sessions (the
    login session last, inside the backend) and the store."""
    try:
        services.import_tokens.close()
    finally:
        services.close()
