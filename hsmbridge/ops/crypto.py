"""`hsmbridge wrap` / `hsmbridge unwrap`: one data key at a time (bulk work: `hsmbridge rewrap`).

Ciphertexts and data keys travel as base64 on the command line and in the output, the way the
REST API and `grpcurl` show them. Without `--plaintext-file`, wrap asks the HSM for a fresh
32-byte data key and prints it with its ciphertext: that is the point of envelope encryption's
"generate" call, so the key is printed once, and it is the caller's to protect.
"""

from __future__ import annotations

import argparse

from hsmbridge.client import Client
from hsmbridge.ops import output
from hsmbridge.ops.connection import call_options, command, decode_base64, read_input
from hsmbridge.v1 import crypto_pb2


def wrap(args: argparse.Namespace, client: Client) -> int:
    request = crypto_pb2.WrapRequest(key_id=args.key, aad=args.aad or [])
    if args.plaintext_file:
        request.plaintext = read_input(args.plaintext_file, "data key")
    response = client.crypto.Wrap(request, **call_options(args, client))
    if args.json:
        output.print_json(output.as_dict(response))
        return 0
    output.fields(
        {
            "ciphertext": output.b64(response.ciphertext),
            "key version": response.key_version_id,
            "plaintext": output.b64(response.plaintext) if not args.plaintext_file else "",
        }
    )
    return 0


def unwrap(args: argparse.Namespace, client: Client) -> int:
    text = read_input("-", "ciphertext").decode() if args.ciphertext == "-" else args.ciphertext
    request = crypto_pb2.UnwrapRequest(
        key_id=args.key, ciphertext=decode_base64(text, "ciphertext"), aad=args.aad or []
    )
    response = client.crypto.Unwrap(request, **call_options(args, client))
    if args.json:
        output.print_json(output.as_dict(response))
        return 0
    output.fields(
        {
            "plaintext": output.b64(response.plaintext),
            "key version": response.key_version_id,
            # an old version wrapped it: here is the same key under the current one, to store back
            "rewrapped": output.b64(response.rewrapped_ciphertext) if response.rewrapped_ciphertext else "",
            "rewrapped version": response.rewrapped_key_version_id,
        }
    )
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    w = sub.add_parser("wrap", parents=[common], help="wrap a data key (a new one from the HSM by default)")
    w.add_argument("key", help="key id or alias")
    w.add_argument("--plaintext-file", help="wrap this data key (raw bytes; - reads stdin)")
    w.add_argument("--aad", action="append", help="additional authenticated data (repeatable, in order)")
    w.set_defaults(func=command(wrap))

    u = sub.add_parser("unwrap", parents=[common], help="unwrap a ciphertext; prints the data key as base64")
    u.add_argument("key", help="key id or alias")
    u.add_argument("ciphertext", help="base64 ciphertext from wrap (- reads stdin)")
    u.add_argument("--aad", action="append", help="the AAD it was wrapped with (repeatable, in order)")
    u.set_defaults(func=command(unwrap))
