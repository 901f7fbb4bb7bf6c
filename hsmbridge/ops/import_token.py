"""`hsmbridge import-token create|get`: the tenant's import token for secure import (BYOK).

`get` spends one of the token's retrievals and shows the RSA public key (PEM) and the nonce to
encrypt key material for; `--pem-out` writes the key to a file for openssl or a vendor tool.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

from hsmbridge.client import Client
from hsmbridge.ops import output
from hsmbridge.ops.connection import UsageError, call_options, command
from hsmbridge.v1 import import_tokens_pb2


def _summary(token: import_tokens_pb2.ImportToken) -> dict[str, str]:
    return {
        "id": token.id,
        "created": output.when(token.create_time, token.HasField("create_time")),
        "expires": output.when(token.expire_time, token.HasField("expire_time")),
        "retrievals": f"{token.remaining_retrievals} of {token.max_retrievals} left",
        "key bits": str(token.key_bits or ""),
    }


def create(args: argparse.Namespace, client: Client) -> int:
    request = import_tokens_pb2.CreateImportTokenRequest(
        expiration_seconds=args.expiration or 0,
        max_retrievals=args.max_retrievals or 0,
        key_bits=args.key_bits or 0,
    )
    token = client.import_tokens.CreateImportToken(request, **call_options(args, client))
    if args.json:
        output.print_json(output.as_dict(token))
    else:
        output.fields(_summary(token))
    return 0


def get(args: argparse.Namespace, client: Client) -> int:
    request = import_tokens_pb2.GetImportTokenRequest()
    token = client.import_tokens.GetImportToken(request, **call_options(args, client))
    if args.pem_out:
        try:
            Path(args.pem_out).write_text(token.public_key_pem)
        except OSError as exc:
            raise UsageError(f"cannot write {args.pem_out}: {exc.strerror or exc}") from None
    if args.json:
        output.print_json(output.as_dict(token))
        return 0
    output.fields({**_summary(token), "nonce": base64.b64encode(token.nonce).decode()})
    if not args.pem_out:
        output.console().print(token.public_key_pem.rstrip())
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    tokens = sub.add_parser(
        "import-token", help="create or retrieve the tenant's import token (secure import)"
    )
    verbs = tokens.add_subparsers(dest="import_token_command", required=True, metavar="COMMAND")
    c = verbs.add_parser(
        "create", parents=[common], help="a new import token (replaces the tenant's old one)"
    )
    c.add_argument("--expiration", type=int, help="seconds it stays usable (server default 600)")
    c.add_argument("--max-retrievals", type=int, help="how often `get` may retrieve it (server default 1)")
    c.add_argument(
        "--key-bits", type=int, choices=(2048, 3072, 4096), help="RSA key size (server default 4096)"
    )
    c.set_defaults(func=command(create))
    g = verbs.add_parser(
        "get", parents=[common], help="retrieve its public key and nonce (spends a retrieval)"
    )
    g.add_argument("--pem-out", help="write the public key (PEM) to this file")
    g.set_defaults(func=command(get))
