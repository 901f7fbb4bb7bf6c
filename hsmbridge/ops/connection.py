"""Where the operator commands find the daemon, and how they say what it answered.

Every setting comes from a flag or, failing that, an environment variable, so that after pasting
the lines `hsmbridge dev` prints, `hsmbridge keys list` needs nothing else:

    flag             environment                    default
    --address        HSMBRIDGE_GRPC_ADDRESS         127.0.0.1:50051 (HOST:PORT or unix:/path)
    --tenant         HSMBRIDGE_TENANT, KP_INSTANCE  (required)
    --token-file     HSMBRIDGE_TOKEN (the token)    none: dev servers trust loopback callers
    --ca-file        HSMBRIDGE_GRPC_CA_FILE         none: plaintext
    --cert-file      HSMBRIDGE_GRPC_CERT_FILE       client certificate for mutual TLS
    --key-file       HSMBRIDGE_GRPC_KEY_FILE
    --server-name    HSMBRIDGE_GRPC_SERVER_NAME     the name the server certificate is checked for

The bearer token is never a flag: a command line shows in `ps` and in shell history. KP_TOKEN is
deliberately not read: it is the dev server's REST token, which its gRPC side does not know.

Failures of the daemon are reported as the gRPC code, the machine-readable reason from its
`google.rpc.ErrorInfo`, and the message (`hsmbridge: NOT_FOUND KEY_NOT_FOUND: ...`), with exit
status 1; `--json` puts the same fields on stderr as one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status

from hsmbridge.client import Client, _reason

DEFAULT_ADDRESS = "127.0.0.1:50051"
ADDRESS_ENV = "HSMBRIDGE_GRPC_ADDRESS"
TENANT_ENVS = ("HSMBRIDGE_TENANT", "KP_INSTANCE")
TOKEN_ENV = "HSMBRIDGE_TOKEN"
TLS_ENVS = {
    "ca_file": "HSMBRIDGE_GRPC_CA_FILE",
    "cert_file": "HSMBRIDGE_GRPC_CERT_FILE",
    "key_file": "HSMBRIDGE_GRPC_KEY_FILE",
    "server_name": "HSMBRIDGE_GRPC_SERVER_NAME",
}
#: exit status when the daemon refused or failed a call (argparse uses 2 for usage errors)
EXIT_FAILED = 1


class UsageError(Exception):
    """A problem with what the operator typed or configured, said in one sentence."""


def common_options() -> argparse.ArgumentParser:
    """The flags every operator command takes (an argparse parent, so they go after the command)."""
    p = argparse.ArgumentParser(add_help=False)
    group = p.add_argument_group("connection (flags override the environment)")
    group.add_argument("--address", help=f"daemon gRPC address (${ADDRESS_ENV}, default {DEFAULT_ADDRESS})")
    group.add_argument(
        "--tenant", help="tenant / Key Protect instance id ($HSMBRIDGE_TENANT or $KP_INSTANCE)"
    )
    group.add_argument("--token-file", help=f"file holding the bearer token (or ${TOKEN_ENV})")
    group.add_argument(
        "--ca-file", help="CA certificate(s) to verify the daemon: TLS ($HSMBRIDGE_GRPC_CA_FILE)"
    )
    group.add_argument("--cert-file", help="client certificate for mutual TLS ($HSMBRIDGE_GRPC_CERT_FILE)")
    group.add_argument("--key-file", help="client private key for mutual TLS ($HSMBRIDGE_GRPC_KEY_FILE)")
    group.add_argument("--server-name", help="name to check the server certificate for")
    group.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    p.add_argument("--json", action="store_true", help="machine-readable output for scripts")
    return p


def _setting(args: argparse.Namespace, name: str, *envs: str) -> str | None:
    value = getattr(args, name, None)
    if value:
        return str(value)
    return next((os.environ[env] for env in envs if os.environ.get(env)), None)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None


def read_input(path: str, what: str) -> bytes:
    """A file's bytes, or standard input's for ``-``."""
    return sys.stdin.buffer.read() if path == "-" else _read(path, what)


def decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"the {what} must be base64") from None


def credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    ca, cert, key = (_setting(args, name, TLS_ENVS[name]) for name in ("ca_file", "cert_file", "key_file"))
    if bool(cert) != bool(key):
        raise UsageError("mutual TLS needs both --cert-file and --key-file")
    if not ca and not cert:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA file") if ca else None,
        private_key=_read(key, "client key") if key else None,
        certificate_chain=_read(cert, "client certificate") if cert else None,
    )


def connect(args: argparse.Namespace) -> Client:
    address = _setting(args, "address", ADDRESS_ENV) or DEFAULT_ADDRESS
    tenant = _setting(args, "tenant", *TENANT_ENVS)
    if not tenant:
        raise UsageError(
            "name the tenant with --tenant or $HSMBRIDGE_TENANT (hsmbridge dev prints KP_INSTANCE)"
        )
    token_file = getattr(args, "token_file", None)
    token = (
        _read(token_file, "token file").decode(errors="replace").strip()
        if token_file
        else os.environ.get(TOKEN_ENV)
    )
    creds = credentials(args)
    if creds is None:
        return Client(address, tenant, token=token or None)
    server_name = _setting(args, "server_name", TLS_ENVS["server_name"])
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    channel = grpc.secure_channel(address, creds, options=options)
    return Client(channel, tenant, token=token or None)


def describe_rpc_error(err: grpc.RpcError) -> dict[str, str]:
    """The daemon's answer, as the operator needs it: code, reason, message."""
    code = err.code() if callable(getattr(err, "code", None)) else None
    try:
        status = rpc_status.from_call(err) if isinstance(err, grpc.Call) else None
    except ValueError:  # details that do not match the status: no reason to show, the code stays
        status = None
    message = err.details() if callable(getattr(err, "details", None)) else ""
    return {
        "code": code.name if code is not None else "UNKNOWN",
        "reason": _reason(status) if status is not None else "",
        "message": message or "",
    }


def report_error(fields: dict[str, str], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"error": fields}), file=sys.stderr)
        return
    reason = f" {fields['reason']}" if fields.get("reason") else ""
    print(f"hsmbridge: {fields['code']}{reason}: {fields['message']}", file=sys.stderr)


Handler = Callable[[argparse.Namespace, Client], int]


def command(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """Turn `handler(args, client)` into an argparse `func`: connect, run, and map a refused call
    or a usage problem to a one-line message and a non-zero exit status (never a traceback)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            client = connect(args)
        except UsageError as exc:
            report_error({"code": "USAGE", "reason": "", "message": str(exc)}, as_json=args.json)
            return 2
        try:
            return handler(args, client)
        except UsageError as exc:
            report_error({"code": "USAGE", "reason": "", "message": str(exc)}, as_json=args.json)
            return 2
        except grpc.RpcError as err:
            report_error(describe_rpc_error(err), as_json=args.json)
            return EXIT_FAILED
        except BrokenPipeError:  # `... | head`: the reader has all it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        finally:
            client.close()

    return run


def call_options(args: argparse.Namespace, client: Client) -> dict[str, Any]:
    return {"metadata": client.metadata, "timeout": args.timeout}
