"""Wire configuration, HSM, store and services together and serve them.

Start-up order matters: SOFTHSM2_CONF must be set before the PKCS#11 module is loaded, the store is
migrated before anything reads it, and health turns SERVING only once the HSM is logged in, the
master KEK found and the store answers. Shutdown is the reverse: NOT_SERVING, drain in-flight calls,
then close sessions (the login session last) and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from hsmbridge import softhsm
from hsmbridge.config import Config
from hsmbridge.core.services import Services
from hsmbridge.core.store.sqlite import SqliteStore
from hsmbridge.errors import InvalidInput
from hsmbridge.grpc.context import DevAuthenticator
from hsmbridge.grpc.server import build_server, mark_serving

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

    return Pkcs11Settings(
        module=module_path(config),
        pin=config.resolve_pin(),
        token_label=config.hsm.token_label,
        slot_id=config.hsm.slot,
        kek_label=config.hsm.kek_label,
        pool_size=config.hsm.pool_size,
        checkout_timeout=config.hsm.checkout_timeout,
        cache_size=config.hsm.cache_size,
        oaep_sha256_fallback=config.hsm.oaep_sha256_fallback,
    )


def open_store(config: Config) -> SqliteStore:
    path = Path(config.store.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(path)
    store.migrate()
    return store


def open_services(config: Config, *, create_kek: bool = False) -> Services:
    from hsmbridge.hsm.backend import Pkcs11Backend

    prepare_environment(config)
    backend = Pkcs11Backend(hsm_settings(config), create_kek=create_kek)
    try:
        store = open_store(config)
    except BaseException:
        backend.close()
        raise
    return Services.build(store, backend)


def _is_loopback(listen: str) -> bool:
    host = listen.rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.") or listen.startswith("unix:")


async def _sweep(services: Services, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            swept = await asyncio.to_thread(services.import_tokens.sweep_expired)
            if swept:
                log.info("destroyed %d expired import token keypair(s)", swept)
        except Exception as exc:
            log.warning("import token sweep failed: %s", type(exc).__name__)


async def serve(config: Config, *, on_ready: Callable[[dict[str, str]], None] | None = None) -> None:
    if not config.server.dev:
        raise InvalidInput(
            "only development mode (server.dev = true) is available until authentication is configured"
        )
    if not _is_loopback(config.grpc.listen):
        raise InvalidInput(
            f"development mode refuses to listen on {config.grpc.listen}: use a loopback address"
        )
    services = await asyncio.to_thread(open_services, config)
    server, health = build_server(services, DevAuthenticator())
    port = server.add_insecure_port(config.grpc.listen)
    if port == 0:
        services.close()
        raise InvalidInput(f"cannot listen on {config.grpc.listen}")
    grpc_address = f"{config.grpc.listen.rsplit(':', 1)[0]}:{port}"
    await server.start()
    await mark_serving(health, True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    sweeper = asyncio.create_task(_sweep(services, config.server.sweep_interval))
    log.info("hsmbridge serving gRPC on %s", grpc_address)
    print(f"hsmbridge: gRPC listening on {grpc_address}", flush=True)
    if on_ready is not None:
        on_ready({"grpc": grpc_address})
    try:
        await stop.wait()
    finally:
        log.info("shutting down: draining in-flight calls")
        await mark_serving(health, False)
        sweeper.cancel()
        await server.stop(grace=10)
        services.close()
        log.info("stopped")
