"""`hsmbridge init | serve | hsm-info`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path

from hsmbridge import config as config_module
from hsmbridge import softhsm
from hsmbridge.errors import HsmBridgeError


def _config(args: argparse.Namespace) -> config_module.Config:
    return config_module.load(args.config or os.environ.get("HSMBRIDGE_CONFIG"))


def cmd_init(args: argparse.Namespace) -> int:
    """Create what a first start needs: a SoftHSM2 token (if asked), the master KEK, the schema."""
    from hsmbridge import daemon

    cfg = _config(args)
    if args.softhsm:
        directory = Path(cfg.hsm.softhsm_dir or "var/softhsm")
        conf = directory / "softhsm2.conf"
        if not conf.exists():
            softhsm.write_config(directory)
        os.environ.setdefault("SOFTHSM2_CONF", str(conf.resolve()))
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
    services = daemon.open_services(cfg, create_kek=True)
    try:
        version = services.store.schema_version()
        print(f"master KEK {cfg.hsm.kek_label!r} present; store schema version {version}")
    finally:
        services.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from hsmbridge import daemon

    cfg = _config(args)
    asyncio.run(daemon.serve(cfg))
    return 0


def cmd_hsm_info(args: argparse.Namespace) -> int:
    from hsmbridge import daemon
    from hsmbridge.hsm.backend import Pkcs11Backend

    cfg = _config(args)
    daemon.prepare_environment(cfg)
    backend = Pkcs11Backend(daemon.hsm_settings(cfg))
    try:
        info = asdict(backend.info())
    finally:
        backend.close()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        caps = info.pop("capabilities")
        for name, value in info.items():
            print(f"{name:22} {value}")
        print("capabilities:")
        for name, value in caps.items():
            print(f"  {name:20} {'yes' if value else 'no'}")
    return 0


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
    sub.add_parser("serve", help="run the daemon").set_defaults(func=cmd_serve)
    info = sub.add_parser("hsm-info", help="show the module, token and probed capabilities")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_hsm_info)
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
