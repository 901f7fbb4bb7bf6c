"""`hsmbridge push ...`: connections, cloud keys and import-material from a shell, over the
daemon's gRPC `PushService` (so it works against any running daemon and never touches the HSM or
the store itself).

    hsmbridge push connection create --cloud aws --name prod \\
        --set region=eu-west-1 --set access_key_id=AKIA... --secret-env secret_access_key=AWS_SECRET
    hsmbridge push connection list | get NAME | test NAME | delete NAME
    hsmbridge push key create --cloud aws --connection prod --name orders
    hsmbridge push key list --cloud aws | get --cloud aws ID [--sync]
    hsmbridge push import-material --cloud aws ID --source orders-root [--valid-to 2027-01-01T00:00:00Z]

Where the daemon is: ``--address`` / $HSMBRIDGE_GRPC_ADDRESS (default 127.0.0.1:50051), the tenant
``--tenant`` / $HSMBRIDGE_TENANT or $KP_INSTANCE, a bearer token only from $HSMBRIDGE_TOKEN, TLS
with ``--ca-file``. Secrets never come from the command line (it shows in `ps` and in shell
history): ``--secret-env FIELD=VARIABLE`` reads an environment variable, ``--secret-stdin FIELD``
one line of standard input. Output is the answer as JSON; a refusal prints the gRPC code, the
reason and the message, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from hsmbridge.v1 import push_pb2, push_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:50051"


def _stub(args: argparse.Namespace) -> tuple[push_pb2_grpc.PushServiceStub, tuple[tuple[str, str], ...]]:
    address = args.address or os.environ.get("HSMBRIDGE_GRPC_ADDRESS") or DEFAULT_ADDRESS
    tenant = args.tenant or os.environ.get("HSMBRIDGE_TENANT") or os.environ.get("KP_INSTANCE")
    if not tenant:
        raise SystemExit("hsmbridge push: give --tenant or set HSMBRIDGE_TENANT")
    if args.ca_file:
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(Path(args.ca_file).read_bytes()))
    else:
        channel = grpc.insecure_channel(address)
    metadata: tuple[tuple[str, str], ...] = (("x-hsmbridge-tenant", tenant),)
    token = os.environ.get("HSMBRIDGE_TOKEN")
    if token:
        metadata += (("authorization", f"Bearer {token}"),)
    return push_pb2_grpc.PushServiceStub(channel), metadata


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"hsmbridge push: {what} must be NAME=VALUE")
        out[name] = value
    return out


def _secrets(args: argparse.Namespace) -> dict[str, str]:
    secrets = {}
    for field, variable in _pairs(args.secret_env, "--secret-env").items():
        value = os.environ.get(variable)
        if not value:
            raise SystemExit(f"hsmbridge push: the environment variable {variable} is empty or unset")
        secrets[field] = value
    for field in args.secret_stdin or []:
        secrets[field] = sys.stdin.readline().rstrip("\n")
    return secrets


def _source(args: argparse.Namespace) -> push_pb2.MaterialSource:
    return push_pb2.MaterialSource(
        source_key_tier=args.tier or "",
        source_key_identifier=args.source or "",
        key_expiration=bool(args.valid_to),
        valid_to=args.valid_to or "",
    )


def _run(
    call: Callable[[push_pb2_grpc.PushServiceStub, Any], Message],
) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        stub, metadata = _stub(args)
        try:
            answer = call(stub, (args, metadata))
        except grpc.RpcError as err:
            print(f"hsmbridge push: {err.code().name}: {err.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
        print(json.dumps(MessageToDict(answer, preserving_proto_field_name=True), indent=2, sort_keys=True))
        return 0

    return command


def _create_connection(stub: Any, ctx: Any) -> Message:
    args, md = ctx
    request = push_pb2.CreateConnectionRequest(
        name=args.name, cloud=args.cloud, settings=_pairs(args.set, "--set"), secrets=_secrets(args)
    )
    return stub.CreateConnection(request, metadata=md, timeout=args.timeout)  # type: ignore[no-any-return]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Called by hsmbridge/cli.py."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", help="daemon gRPC address ($HSMBRIDGE_GRPC_ADDRESS)")
    common.add_argument("--tenant", help="tenant / instance id ($HSMBRIDGE_TENANT or $KP_INSTANCE)")
    common.add_argument("--ca-file", help="CA certificate to verify the daemon (TLS)")
    common.add_argument("--timeout", type=float, default=120.0, help="seconds per call (default 120)")
    push = sub.add_parser("push", help="push HSM keys into cloud KMSs (Key Protect, AWS, Huawei)")
    groups = push.add_subparsers(dest="push_command", required=True)

    conn = groups.add_parser("connection", help="target cloud accounts").add_subparsers(required=True)
    create = conn.add_parser("create", parents=[common], help="store a connection (secrets sealed)")
    create.add_argument("--cloud", required=True, choices=("ibm", "aws", "huawei"))
    create.add_argument("--name", required=True)
    create.add_argument("--set", action="append", metavar="FIELD=VALUE", help="a non-secret setting")
    create.add_argument(
        "--secret-env", action="append", metavar="FIELD=VARIABLE", help="a secret from the environment"
    )
    create.add_argument(
        "--secret-stdin", action="append", metavar="FIELD", help="a secret from one stdin line"
    )
    create.set_defaults(func=_run(_create_connection))
    listing = conn.add_parser("list", parents=[common])
    listing.set_defaults(
        func=_run(
            lambda s, c: s.ListConnections(
                push_pb2.ListConnectionsRequest(), metadata=c[1], timeout=c[0].timeout
            )
        )
    )
    for verb, rpc, request in (
        ("get", "GetConnection", push_pb2.GetConnectionRequest),
        ("test", "TestConnection", push_pb2.TestConnectionRequest),
        ("delete", "DeleteConnection", push_pb2.DeleteConnectionRequest),
    ):
        one = conn.add_parser(verb, parents=[common])
        one.add_argument("connection", help="id or name")
        one.set_defaults(
            func=_run(
                lambda s, c, rpc=rpc, request=request: getattr(s, rpc)(
                    request(connection=c[0].connection), metadata=c[1], timeout=c[0].timeout
                )
            )
        )

    keys = groups.add_parser("key", help="keys in a cloud fed by this hsmbridge").add_subparsers(
        required=True
    )
    kcreate = keys.add_parser("create", parents=[common], help="create (or --kms-id: link) a cloud key")
    kcreate.add_argument("--cloud", required=True)
    kcreate.add_argument("--connection", required=True)
    kcreate.add_argument("--name", default="")
    kcreate.add_argument("--description", default="")
    kcreate.add_argument("--kms-id", default="")
    kcreate.add_argument("--source", help="Key Protect: the local key the cloud key is born with")
    kcreate.add_argument("--tier", default="local")
    kcreate.add_argument("--valid-to", help="Key Protect: expirationDate (RFC 3339)")
    kcreate.set_defaults(
        func=_run(
            lambda s, c: s.CreateCloudKey(
                push_pb2.CreateCloudKeyRequest(
                    cloud=c[0].cloud,
                    connection=c[0].connection,
                    name=c[0].name,
                    description=c[0].description,
                    kms_id=c[0].kms_id,
                    source=_source(c[0]),
                ),
                metadata=c[1],
                timeout=c[0].timeout,
            )
        )
    )
    klist = keys.add_parser("list", parents=[common])
    klist.add_argument("--cloud", required=True)
    klist.set_defaults(
        func=_run(
            lambda s, c: s.ListCloudKeys(
                push_pb2.ListCloudKeysRequest(cloud=c[0].cloud), metadata=c[1], timeout=c[0].timeout
            )
        )
    )
    kget = keys.add_parser("get", parents=[common])
    kget.add_argument("--cloud", required=True)
    kget.add_argument("id")
    kget.add_argument("--sync", action="store_true", help="ask the cloud for its current view")
    kget.set_defaults(
        func=_run(
            lambda s, c: s.GetCloudKey(
                push_pb2.GetCloudKeyRequest(cloud=c[0].cloud, id=c[0].id, sync=c[0].sync),
                metadata=c[1],
                timeout=c[0].timeout,
            )
        )
    )

    material = groups.add_parser("import-material", parents=[common], help="seed 001's import-material")
    material.add_argument("--cloud", required=True)
    material.add_argument("id", help="the cloud key's id in hsmbridge")
    material.add_argument("--source", help="local key id, alias or name (default: generate one)")
    material.add_argument("--tier", default="local")
    material.add_argument("--valid-to", help="material expiry, RFC 3339 (sets key_expiration)")
    material.set_defaults(
        func=_run(
            lambda s, c: s.ImportMaterial(
                push_pb2.ImportMaterialRequest(cloud=c[0].cloud, id=c[0].id, source=_source(c[0])),
                metadata=c[1],
                timeout=c[0].timeout,
            )
        )
    )
