"""`hsmbridge init | serve [--workers N] | dev | hsm-info` (and the internal `worker`).

`hsmbridge dev` is the one-command development server, like `bao server -dev`: it creates what a
first start needs under ./var (a SoftHSM2 token, the master KEK, the store), serves gRPC on
127.0.0.1:50051 and the Key Protect REST API on 127.0.0.1:8080, and prints a bearer token, an
instance id and ready-to-paste `export` lines. Loopback only: it trusts whoever connects.

The operator commands (`keys`, `wrap`, `unwrap`, `import-token`, `rewrap`) are gRPC clients of a
running daemon and live in hsmbridge/ops/, registered below with one call.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hsmbridge import config as config_module
from hsmbridge import softhsm
from hsmbridge.errors import HsmBridgeError, InvalidInput
from hsmbridge.push import cli as push_cli


def _config(args: argparse.Namespace) -> config_module.Config:
    return config_module.load(args.config or os.environ.get("HSMBRIDGE_CONFIG"))


def cmd_init(args: argparse.Namespace) -> int:
    """Create what a first start needs: a SoftHSM2 token (if asked), the master KEK, the schema."""
    return initialise(_config(args), softhsm_token=args.softhsm)


def initialise(cfg: config_module.Config, *, softhsm_token: bool, force_conf: bool = False) -> int:
    """`init`'s work, shared with `dev`. `force_conf` points SOFTHSM2_CONF at our directory even if
    the environment names another one: the dev server must never touch a token it did not make."""
    from hsmbridge import daemon

    if softhsm_token:
        directory = Path(cfg.hsm.softhsm_dir or "var/softhsm")
        conf = directory / "softhsm2.conf"
        if not conf.exists():
            softhsm.write_config(directory)
        if force_conf:
            os.environ["SOFTHSM2_CONF"] = str(conf.resolve())
        else:
            os.environ.setdefault("SOFTHSM2_CONF", str(conf.resolve()))
        if cfg.hsm.tokens:
            return _initialise_softhsm_group(cfg, directory, conf)
        label = cfg.hsm.token_label or "hsmbridge"
        if not softhsm.token_exists(conf, label):
            pin = softhsm.new_pin()
            pin_file = Path(cfg.hsm.pin_file or directory / "pin")
            pin_file.parent.mkdir(parents=True, exist_ok=True)
            pin_file.touch(mode=0o600)
            pin_file.write_text(pin)
            softhsm.init_token(conf, label, pin)
            print(f"created SoftHSM2 token {label!r} in {directory} (PIN in {pin_file}, mode 0600)")
        else:
            print(f"SoftHSM2 token {label!r} already exists in {directory}")
    services = daemon.open_services(cfg, create_kek=not cfg.hsm.tokens)
    try:
        version = services.store.schema_version()
        if cfg.hsm.tokens:
            _check_group(services.backend)
        print(f"master KEK {cfg.hsm.kek_label!r} present; store schema version {version}")
    finally:
        services.close()
    return 0


def _initialise_softhsm_group(cfg: config_module.Config, directory: Path, conf: Path) -> int:
    """`init --softhsm` for an HSM group: every listed token, one PIN, one KEK imported into all.

    Real HSM groups get their KEK onto each member with the vendor's tools; `init` on them only
    checks that every member holds the same one (`_check_group`)."""
    from hsmbridge import daemon
    from hsmbridge.hsm.group import import_shared_kek

    pin_file = Path(cfg.hsm.pin_file or directory / "pin")
    if not pin_file.exists():
        pin_file.parent.mkdir(parents=True, exist_ok=True)
        pin_file.touch(mode=0o600)
        pin_file.write_text(softhsm.new_pin())
    pin = pin_file.read_text().strip()
    for token in cfg.hsm.tokens:
        if token.token_label is None:
            raise InvalidInput("`init --softhsm` names each [[hsm.tokens]] entry by token_label")
        if not softhsm.token_exists(conf, token.token_label):
            softhsm.init_token(conf, token.token_label, pin)
            print(f"created SoftHSM2 token {token.token_label!r} in {directory} (PIN in {pin_file})")
    cfg = cfg.model_copy(update={"hsm": cfg.hsm.model_copy(update={"pin_file": str(pin_file)})})
    if import_shared_kek(daemon.group_settings(cfg)):
        print(f"imported one new master KEK {cfg.hsm.kek_label!r} into {len(cfg.hsm.tokens)} tokens")
    return initialise(cfg, softhsm_token=False)


def _check_group(backend: Any) -> None:
    """`init` on a group succeeds only when every token is up with the same KEK."""
    tokens = backend.status()
    missing = [f"{t.name} ({t.state}, {t.last_error})" for t in tokens if t.state != "up"]
    if missing:
        raise InvalidInput(
            f"HSM group tokens not ready: {', '.join(missing)}; each must hold the master KEK "
            f"{backend.settings.kek_label!r} (docs/operating.md, HSM groups)"
        )
    for t in tokens:
        print(f"token {t.name!r}: master KEK check value {t.kek_check}")


def worker_count(requested: int | None, cfg: config_module.Config) -> int:
    """`--workers`, else `server.workers`, else (0) one per core."""
    count = requested if requested is not None else cfg.server.workers
    return count if count > 0 else max(os.cpu_count() or 1, 1)


def cmd_serve(args: argparse.Namespace) -> int:
    """One worker: everything in this process. More: a supervisor (no PKCS#11 in it) spawning
    fresh worker interpreters that share the ports (hsmbridge/supervisor.py)."""
    from hsmbridge import daemon

    cfg = _config(args)
    workers = worker_count(args.workers, cfg)
    if workers == 1:
        daemon.run(daemon.serve(cfg))
        return 0
    from hsmbridge import supervisor

    return supervisor.run(cfg, workers, config_path=args.config or os.environ.get("HSMBRIDGE_CONFIG"))


def cmd_worker(args: argparse.Namespace) -> int:
    """Internal: one worker process under `serve --workers N`; the supervisor passes the ports
    (in HSMBRIDGE_* variables) and the readiness and lifeline pipes."""
    from hsmbridge import daemon

    cfg = _config(args)
    role = daemon.WorkerRole(args.index, args.count, args.ready_fd, args.lifeline_fd)
    daemon.run(daemon.serve(cfg, role=role))
    return 0


DEV_GRPC_LISTEN = "127.0.0.1:50051"
DEV_REST_LISTEN = "127.0.0.1:8080"
DEV_METRICS_LISTEN = "127.0.0.1:9464"
DEV_AUDIT_LOG = "var/audit.log"


def describe_store(location: str) -> str:
    """The store as the banner shows it: the SQLite path, or PostgreSQL's host and database
    (never the URL: it may hold a password)."""
    from urllib.parse import urlsplit

    from hsmbridge.core.store.factory import parse_store_url

    parsed = parse_store_url(location)
    if parsed.backend == "sqlite":
        return f"SQLite {parsed.target}"
    parts = urlsplit(parsed.target)
    return f"PostgreSQL {parts.hostname or 'localhost'}{parts.path or ''}"


def require_free_dev_ports(listeners: list[tuple[str, str, str]]) -> None:
    """Refuse a taken port before creating anything, naming the port and the flag to change.

    The daemon binds with SO_REUSEPORT (for `serve --workers N`), so a second `hsmbridge dev`
    would otherwise *share* gRPC and REST ports with the first one and the kernel would split
    requests between two servers with different tokens. A probe without SO_REUSEPORT fails on a
    port anyone holds. Port 0 (the kernel picks) needs no probe.
    """
    import socket

    from hsmbridge.daemon import _split_listen

    for flag, what, listen in listeners:
        if listen.startswith("unix:"):
            continue
        host, port = _split_listen(listen, what)
        if port == 0:
            continue
        try:
            family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not "taken"
                probe.bind(address)
        except OSError as exc:
            raise InvalidInput(
                f"cannot listen on {listen} for {what}: {exc.strerror or exc} (another process, perhaps "
                f"another `hsmbridge dev`, holds port {port}); pick another with {flag} HOST:PORT, "
                f"e.g. {flag} 127.0.0.1:0 for a free one"
            ) from None


def dev_banner(
    credentials: config_module.DevCredentials,
    addresses: dict[str, str],
    cfg: config_module.Config,
    huawei: Any = None,
) -> str:
    """What `hsmbridge dev` prints once both servers listen. The IBM_KEY_PROTECT_API_* lines make
    the official Python SDK's `IbmKeyProtectApiV2.new_instance()` find this server unchanged."""
    rest = addresses.get("rest", "")
    lines = [
        "",
        "hsmbridge development server: SoftHSM2, static dev tokens, loopback only. Not for production.",
        "",
        f"  Key Protect API:  {rest or '(disabled)'}" + (f"   (docs: {rest}/docs)" if rest else ""),
        f"  gRPC:             {addresses['grpc']}",
        f"  metrics:          {addresses.get('metrics') or '(disabled)'}",
        f"  bearer token:     {credentials.token}   (principal {config_module.DEV_PRINCIPAL})",
        f"  instance id:      {credentials.instance}",
        f"  SoftHSM2 token:   {cfg.hsm.token_label} in {cfg.hsm.softhsm_dir}",
        f"  store:            {describe_store(cfg.store.location)}",
        f"  audit log:        {audit_destination(cfg)}",
    ]
    for token, principal in credentials.extra_tokens.items():
        lines.append(f"  extra token:      {token}   (principal {principal})")
    if credentials.token_generated:
        lines.append(f"  The token changes on every start; set {config_module.DEV_TOKEN_ENV} to fix it.")
    if huawei is not None:
        from hsmbridge.huawei.auth import DEV_AK_ENV, DEV_SK_ENV

        lines.append(f"  Huawei KMS API:   {rest}/v1.0/{{project_id}}/kms/...   (any project id)")
        lines.append(f"  Huawei AK / SK:   {huawei.access_key} / {huawei.secret_key}")
        if huawei.generated:
            lines.append(f"  The pair changes on every start; set {DEV_AK_ENV} and {DEV_SK_ENV} to fix it.")
    lines += [
        "",
        "Paste into a shell:",
        "",
        f"    export KP_URL={rest}",
        f"    export KP_TOKEN={credentials.token}",
        f"    export KP_INSTANCE={credentials.instance}",
        f"    export IBM_KEY_PROTECT_API_URL={rest}",
        "    export IBM_KEY_PROTECT_API_AUTH_TYPE=bearerToken",
        f"    export IBM_KEY_PROTECT_API_BEARER_TOKEN={credentials.token}",
        f"    export HSMBRIDGE_GRPC_ADDRESS={addresses['grpc']}",
        *(
            [
                f"    export HUAWEICLOUD_SDK_AK={huawei.access_key}",
                f"    export HUAWEICLOUD_SDK_SK={huawei.secret_key}",
                f"    export HUAWEI_KMS_ENDPOINT={rest}",
            ]
            if huawei is not None
            else []
        ),
        "",
        'Try:  curl -s "$KP_URL/api/v2/keys" -H "authorization: Bearer $KP_TOKEN" '
        '-H "bluemix-instance: $KP_INSTANCE"',
        "      hsmbridge keys list      (the operator CLI finds this server through the lines above)",
        "",
    ]
    return "\n".join(lines)


def audit_destination(cfg: config_module.Config) -> str:
    audit = cfg.security.audit
    if audit.sink == "file":
        return f"{audit.path}   (--audit-stdout prints it here instead)"
    return "stdout" if audit.sink == "stdout" else "off"


def dev_audit(cfg: config_module.Config, *, to_stdout: bool) -> None:
    """Dev traffic is audited like production's, but one JSON line per request on the terminal
    drowns the banner and any log worth reading: unless the configuration chose a sink (or
    `--audit-stdout` asks for the old behaviour), the events go to var/audit.log."""
    from hsmbridge.security.audit import AuditConfig

    if to_stdout or "audit" in cfg.security.model_fields_set:
        return
    Path(DEV_AUDIT_LOG).parent.mkdir(parents=True, exist_ok=True)
    audit = AuditConfig(sink="file", path=DEV_AUDIT_LOG)
    cfg.security = cfg.security.model_copy(update={"audit": audit})


def cmd_dev(args: argparse.Namespace) -> int:
    """`bao server -dev` for hsmbridge: initialise ./var if needed, then serve on loopback."""
    from hsmbridge import daemon
    from hsmbridge.rest.context import StaticTokenAuthenticator

    cfg = _config(args)
    cfg.server.dev = True
    cfg.server.workers = 1  # one process: the banner, the token and Ctrl-C stay simple
    cfg.grpc.listen = args.grpc_listen or cfg.grpc.listen  # the defaults are DEV_*_LISTEN
    cfg.rest.enabled = True
    cfg.rest.listen = args.rest_listen or cfg.rest.listen
    cfg.metrics.listen = args.metrics_listen or cfg.metrics.listen
    daemon.require_loopback("gRPC", cfg.grpc.listen)
    daemon.require_loopback("REST", cfg.rest.listen)
    listeners = [("--grpc-listen", "gRPC", cfg.grpc.listen), ("--rest-listen", "REST", cfg.rest.listen)]
    if cfg.metrics.enabled:
        daemon.require_loopback("metrics", cfg.metrics.listen)
        listeners.append(("--metrics-listen", "metrics", cfg.metrics.listen))
    require_free_dev_ports(listeners)
    credentials = config_module.dev_credentials()
    initialise(cfg, softhsm_token=True, force_conf=True)
    dev_audit(cfg, to_stdout=args.audit_stdout)
    from hsmbridge.huawei.auth import dev_access_key

    huawei = dev_access_key() if cfg.huawei.enabled else None

    def ready(addresses: dict[str, str]) -> None:
        print(dev_banner(credentials, addresses, cfg, huawei), flush=True)

    authenticator = StaticTokenAuthenticator(credentials.tokens())
    daemon.run(daemon.serve(cfg, rest_authenticator=authenticator, on_ready=ready, huawei_dev=huawei))
    return 0


def cmd_hsm_info(args: argparse.Namespace) -> int:
    from hsmbridge import daemon

    cfg = _config(args)
    daemon.prepare_environment(cfg)
    backend = daemon.open_backend(cfg)
    try:
        info = asdict(backend.info())
    finally:
        backend.close()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        caps = info.pop("capabilities")
        tokens = info.pop("tokens")
        for name, value in info.items():
            print(f"{name:22} {value}")
        print("capabilities:")
        for name, value in caps.items():
            print(f"  {name:20} {'yes' if value else 'no'}")
        if tokens:
            print("tokens (HSM group):")
            for token in tokens:
                active = " active" if token["active"] else ""
                print(
                    f"  {token['name']:20} {token['state']}{active}  KEK check {token['kek_check'] or '?'}"
                    f"  failures {token['failures']}"
                )
    return 0


def cmd_rotate_kek(args: argparse.Namespace) -> int:
    """Rewrap every stored key version under a new master KEK while daemons keep serving."""
    import signal
    import threading
    from dataclasses import replace

    from hsmbridge import daemon
    from hsmbridge.hsm.backend import Pkcs11Backend
    from hsmbridge.kek_rotation import format_progress, rotate_master_kek

    cfg = _config(args)
    if cfg.hsm.tokens:
        # A new KEK generated on one token of a group could not be copied to the others.
        raise InvalidInput(
            "rotate-kek does not run on an HSM group: put the new KEK on every token with the HSM's own "
            "tools, then rotate with a configuration naming one token (docs/operating.md, HSM groups)"
        )
    daemon.prepare_environment(cfg)
    settings = daemon.hsm_settings(cfg)
    backend = Pkcs11Backend(replace(settings, pool_size=max(settings.pool_size, args.workers + 1)))
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        store = daemon.open_store(cfg)
        try:
            report = rotate_master_kek(
                (store, backend),
                args.new_label,
                progress=lambda p: print(format_progress(p), flush=True),
                stop=stop,
                create_only=args.create_only,
                batch_size=args.batch_size,
                workers=args.workers,
            )
        finally:
            store.close()
    finally:
        backend.close()
    print(f"master KEK {args.new_label!r}: {'created' if report.created_kek else 'present'}")
    if args.create_only:
        return 0
    print(
        f"rewrapped {report.rewrapped}, skipped {report.skipped}, failed {len(report.failures)}"
        f"{', interrupted' if report.interrupted else ''} in {report.elapsed:.1f} s"
    )
    for tenant, version_id, message in report.failures:
        print(f"  failed: tenant {tenant} version {version_id}: {message}")
    for label, count in sorted(report.by_kek.items()):
        print(f"  {label}: {count} version(s)")
    if not report.complete:
        print("not complete: run the same command again to continue", file=sys.stderr)
    return 0 if report.complete else 1


def cmd_health(args: argparse.Namespace) -> int:
    """A probe for Kubernetes exec checks: no configuration, no PKCS#11, writes nothing."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = f"unix:{args.socket}" if args.socket else args.address
    if not target:
        print("hsmbridge health: give --socket PATH or --address HOST:PORT", file=sys.stderr)
        return 2
    # --live asks the `liveness` service: NOT_SERVING only while HSM recovery is wedged
    service = args.service or ("liveness" if args.live else "")
    try:
        with grpc.insecure_channel(target) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=args.timeout
            )
    except grpc.RpcError as err:
        print(f"hsmbridge health: {err.code().name}", file=sys.stderr)
        return 2
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    # An HSM outage makes the daemon unready but still live: it recovers by itself.
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hsmbridge", description="A PKCS#11 HSM behind gRPC and a Key Protect API"
    )
    p.add_argument(
        "--config", "-c", help="TOML configuration file (default: $HSMBRIDGE_CONFIG or built-in dev defaults)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the master KEK (and a SoftHSM2 dev token with --softhsm)")
    init.add_argument("--softhsm", action="store_true", help="create a SoftHSM2 token under hsm.softhsm_dir")
    init.set_defaults(func=cmd_init)
    serve = sub.add_parser("serve", help="run the daemon")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the ports (default: server.workers, 0 = one per core); "
        "1 serves in this process",
    )
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", help=argparse.SUPPRESS)
    worker.add_argument("--index", type=int, required=True)
    worker.add_argument("--count", type=int, required=True)
    worker.add_argument("--ready-fd", type=int)
    worker.add_argument("--lifeline-fd", type=int)
    worker.set_defaults(func=cmd_worker)
    dev = sub.add_parser(
        "dev",
        help="development server: create ./var (SoftHSM2 token, KEK), serve gRPC + REST on loopback",
        description=(
            "Like `bao server -dev`. Prints a bearer token and an instance id (random each start "
            f"unless {config_module.DEV_TOKEN_ENV} / {config_module.DEV_INSTANCE_ENV} fix them); "
            f"{config_module.DEV_EXTRA_TOKENS_ENV}='tok=principal,...' adds principals."
        ),
    )
    dev.add_argument(
        "--grpc-listen", help=f"loopback HOST:PORT for gRPC (default {DEV_GRPC_LISTEN}; 0 = random)"
    )
    dev.add_argument(
        "--rest-listen", help=f"loopback HOST:PORT for REST (default {DEV_REST_LISTEN}; 0 = random)"
    )
    dev.add_argument(
        "--metrics-listen",
        help=f"loopback HOST:PORT for Prometheus metrics (default {DEV_METRICS_LISTEN}; 0 = random)",
    )
    dev.add_argument(
        "--audit-stdout",
        action="store_true",
        help=f"print audit events (one JSON line per call) instead of appending them to {DEV_AUDIT_LOG}",
    )
    dev.set_defaults(func=cmd_dev)
    info = sub.add_parser("hsm-info", help="show the module, token and probed capabilities")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_hsm_info)
    rotate = sub.add_parser("rotate-kek", help="rewrap every stored key version under a new master KEK")
    rotate.add_argument("--new-label", required=True, help="label of the new master KEK (created if missing)")
    rotate.add_argument("--create-only", action="store_true", help="only create the new KEK")
    rotate.add_argument("--batch-size", type=int, default=256)
    rotate.add_argument("--workers", type=int, default=4)
    rotate.set_defaults(func=cmd_rotate_kek)
    probe = sub.add_parser("health", help="check a daemon's gRPC health (for container probes)")
    where = probe.add_mutually_exclusive_group()
    where.add_argument("--socket", help="the daemon's unix socket path")
    where.add_argument("--address", help="HOST:PORT of the daemon's gRPC (or health) listener")
    probe.add_argument("--service", default="", help="health service name (default: the whole server)")
    probe.add_argument("--timeout", type=float, default=3.0)
    probe.add_argument("--live", action="store_true", help="liveness: fails only when HSM recovery is wedged")
    probe.set_defaults(func=cmd_health)
    from hsmbridge import ops  # the operator CLI over gRPC: keys, wrap, unwrap, import-token, rewrap

    ops.register(sub)
    push_cli.register(sub)  # `hsmbridge push ...` (hsmbridge/push/cli.py)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = os.environ.get("HSMBRIDGE_SERVER__LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except HsmBridgeError as exc:
        print(f"hsmbridge: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
