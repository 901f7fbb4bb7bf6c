"""`hsmbridge keys list|create|get|rotate|enable|disable|delete|versions`: KeyService from a shell.

`{key}` is a key id or an alias everywhere, as in the API. Creating with `--material-file`
imports that key material (16, 24 or 32 raw bytes) instead of letting the HSM generate it.
"""

from __future__ import annotations

import argparse
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from hsmbridge.client import Client
from hsmbridge.ops import output
from hsmbridge.ops.connection import Handler, UsageError, call_options, command, read_input
from hsmbridge.v1 import keys_pb2

STATES = {
    "active": keys_pb2.KEY_STATE_ACTIVE,
    "suspended": keys_pb2.KEY_STATE_SUSPENDED,
    "deactivated": keys_pb2.KEY_STATE_DEACTIVATED,
    "destroyed": keys_pb2.KEY_STATE_DESTROYED,
}
LIST_COLUMNS = ("id", "name", "state", "aliases", "key ring", "created")


def show_key(args: argparse.Namespace, key: keys_pb2.Key) -> int:
    if args.json:
        output.print_json(output.as_dict(key))
    else:
        output.fields(output.key_details(key))
    return 0


def list_keys(args: argparse.Namespace, client: Client) -> int:
    request = keys_pb2.ListKeysRequest(
        limit=args.limit,
        offset=args.offset,
        states=[STATES[state] for state in args.state or ()],
        key_ring=args.key_ring or "",
    )
    if args.extractable is not None:
        request.extractable = args.extractable
    listed = client.keys.ListKeys(request, **call_options(args, client))
    if args.json:
        output.print_json(output.as_dict(listed) | {"total": listed.total})
        return 0
    rows = [output.key_row(key) for key in listed.keys]
    output.table(rows, LIST_COLUMNS)
    shown = f"{args.offset + 1}-{args.offset + len(rows)} of " if rows else ""
    output.console().print(f"{shown}{listed.total} key(s)")
    return 0


def _expiry(text: str | None) -> Timestamp | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--expires must be an ISO 8601 time such as 2027-01-31T00:00:00Z, not {text!r}"
        ) from None
    if moment.tzinfo is None:
        raise UsageError("--expires needs a time zone (e.g. a trailing Z for UTC)")
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def create_key(args: argparse.Namespace, client: Client) -> int:
    spec = keys_pb2.CreateKeyRequest(
        name=args.name,
        description=args.description or "",
        extractable=args.extractable,
        aliases=args.alias or [],
        key_ring=args.key_ring or "",
        dual_auth_delete=args.dual_auth_delete,
    )
    expiry = _expiry(args.expires)
    if expiry is not None:
        spec.expire_time.CopyFrom(expiry)
    options = call_options(args, client)
    if args.material_file:
        material = keys_pb2.KeyMaterial(plaintext=read_input(args.material_file, "key material"))
        key = client.keys.ImportKey(keys_pb2.ImportKeyRequest(key=spec, material=material), **options)
    else:
        key = client.keys.CreateKey(spec, **options)
    return show_key(args, key)


def get_key(args: argparse.Namespace, client: Client) -> int:
    return show_key(
        args, client.keys.GetKey(keys_pb2.GetKeyRequest(key_id=args.key), **call_options(args, client))
    )


def rotate_key(args: argparse.Namespace, client: Client) -> int:
    request = keys_pb2.RotateKeyRequest(key_id=args.key)
    if args.material_file:
        request.material.plaintext = read_input(args.material_file, "key material")
    return show_key(args, client.keys.RotateKey(request, **call_options(args, client)))


def set_state(state: int) -> Handler:
    def handler(args: argparse.Namespace, client: Client) -> int:
        request = keys_pb2.SetKeyStateRequest(key_id=args.key, state=state)
        return show_key(args, client.keys.SetKeyState(request, **call_options(args, client)))

    return handler


def delete_key(args: argparse.Namespace, client: Client) -> int:
    return show_key(
        args, client.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=args.key), **call_options(args, client))
    )


def list_versions(args: argparse.Namespace, client: Client) -> int:
    request = keys_pb2.ListKeyVersionsRequest(key_id=args.key)
    versions = client.keys.ListKeyVersions(request, **call_options(args, client))
    if args.json:
        output.print_json(output.as_dict(versions))
        return 0
    rows = [
        {
            "version": str(v.number),
            "id": v.id,
            "created": output.when(v.create_time, v.HasField("create_time")),
        }
        for v in versions.versions
    ]
    output.table(rows, ("version", "id", "created"))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    keys = sub.add_parser("keys", help="list, create, rotate, enable, disable and delete root keys (gRPC)")
    verbs = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    listing = verbs.add_parser("list", parents=[common], help="list keys (newest first)")
    listing.add_argument("--limit", type=int, default=200, help="at most this many (default 200)")
    listing.add_argument("--offset", type=int, default=0)
    listing.add_argument("--state", action="append", choices=sorted(STATES), help="only keys in this state")
    listing.add_argument("--extractable", action=argparse.BooleanOptionalAction, default=None)
    listing.add_argument("--key-ring")
    listing.set_defaults(func=command(list_keys))

    create = verbs.add_parser(
        "create", parents=[common], help="create a root (or --extractable standard) key"
    )
    create.add_argument("name")
    create.add_argument("--description")
    create.add_argument("--alias", action="append", help="an alias (repeatable)")
    create.add_argument("--extractable", action="store_true", help="a standard key whose payload can be read")
    create.add_argument("--key-ring")
    create.add_argument("--expires", help="expiry time, ISO 8601 with a zone (2027-01-31T00:00:00Z)")
    create.add_argument("--dual-auth-delete", action="store_true", help="deletion needs a second person")
    create.add_argument("--material-file", help="import this key material (raw bytes; - reads stdin)")
    create.set_defaults(func=command(create_key))

    for name, handler, text in (
        ("get", get_key, "show one key"),
        ("enable", set_state(keys_pb2.KEY_STATE_ACTIVE), "enable a disabled key"),
        ("disable", set_state(keys_pb2.KEY_STATE_SUSPENDED), "disable a key (wrap and unwrap refuse it)"),
        ("delete", delete_key, "delete a key (restorable for 30 days)"),
        ("versions", list_versions, "list a key's versions"),
    ):
        verb = verbs.add_parser(name, parents=[common], help=text)
        verb.add_argument("key", help="key id or alias")
        verb.set_defaults(func=command(handler))

    rotate = verbs.add_parser("rotate", parents=[common], help="give a key a new version")
    rotate.add_argument("key", help="key id or alias")
    rotate.add_argument("--material-file", help="new material for an imported key (raw bytes; - reads stdin)")
    rotate.set_defaults(func=command(rotate_key))
