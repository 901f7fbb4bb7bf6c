"""`hsmbridge push ...`: connections, cloud keys and import-material from a shell, over the
daemon's gRPC `PushService` (so it works against any running daemon and never touches the HSM or
the store itself).

    hsmbridge push connection create --cloud aws --name prod \\
        --set region=eu-west-1 --set access_key_id=AKIA... --secret-env secret_access_key=AWS_SECRET
    hsmbridge push connection list | get NAME | test NAME | delete NAME
    hsmbridge push key create --cloud aws --connection prod --name orders
    hsmbridge push key list --cloud aws | get --cloud aws ID [--sync]
    hsmbridge push import-material --cloud aws ID --source orders-root [--valid-to 2027-01-01T00:00:00Z]

Where the daemon is, the tenant, the bearer token and TLS: the operator CLI's common options
(hsmbridge/ops/connection.py: ``--address`` / $HSMBRIDGE_GRPC_ADDRESS, ``--tenant`` /
$HSMBRIDGE_TENANT, $HSMBRIDGE_TOKEN or ``--token-file``, ``--ca-file``...). Secrets never come
from the command line (it shows in `ps` and in shell
history): ``--secret-env FIELD=VARIABLE`` reads an environment variable, ``--secret-stdin FIELD``
one line of standard input. Output is the answer as JSON; a refusal prints the gRPC code, the
reason and the message, exit status 1 (as every operator command).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from hsmbridge.client import Client
from hsmbridge.ops import output
from hsmbridge.ops.connection import UsageError, call_options, command, common_options
from hsmbridge.v1 import push_pb2, push_pb2_grpc

Call = Callable[[push_pb2_grpc.PushServiceStub, argparse.Namespace, dict[str, Any]], Message]


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{what} must be NAME=VALUE")
        out[name] = value
    return out


def _secrets(args: argparse.Namespace) -> dict[str, str]:
    secrets = {}
    for field, variable in _pairs(args.secret_env, "--secret-env").items():
        value = os.environ.get(variable)
        if not value:
            raise UsageError(f"the environment variable {variable} is empty or unset")
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


def _run(call: Call) -> Callable[[argparse.Namespace], int]:
    """An operator command calling PushService and printing its answer as JSON."""

    def handler(args: argparse.Namespace, client: Client) -> int:
        answer = call(push_pb2_grpc.PushServiceStub(client.channel), args, call_options(args, client))
        output.print_json(output.as_dict(answer))
        return 0

    return command(handler)


def _create_connection(stub: Any, args: argparse.Namespace, options: dict[str, Any]) -> Message:
    request = push_pb2.CreateConnectionRequest(
        name=args.name, cloud=args.cloud, settings=_pairs(args.set, "--set"), secrets=_secrets(args)
    )
    return stub.CreateConnection(request, **options)  # type: ignore[no-any-return]


def _create_key(stub: Any, args: argparse.Namespace, options: dict[str, Any]) -> Message:
    request = push_pb2.CreateCloudKeyRequest(
        cloud=args.cloud,
        connection=args.connection,
        name=args.name,
        description=args.description,
        kms_id=args.kms_id,
        source=_source(args),
    )
    return stub.CreateCloudKey(request, **options)  # type: ignore[no-any-return]


def _import_material(stub: Any, args: argparse.Namespace, options: dict[str, Any]) -> Message:
    request = push_pb2.ImportMaterialRequest(cloud=args.cloud, id=args.id, source=_source(args))
    return stub.ImportMaterial(request, **options)  # type: ignore[no-any-return]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Called by hsmbridge/cli.py."""
    common = common_options()
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
    conn.add_parser("list", parents=[common]).set_defaults(
        func=_run(
            lambda stub, args, options: stub.ListConnections(push_pb2.ListConnectionsRequest(), **options)
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
                lambda stub, args, options, rpc=rpc, request=request: getattr(stub, rpc)(
                    request(connection=args.connection), **options
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
    kcreate.set_defaults(func=_run(_create_key))
    klist = keys.add_parser("list", parents=[common])
    klist.add_argument("--cloud", required=True)
    klist.set_defaults(
        func=_run(
            lambda stub, args, options: stub.ListCloudKeys(
                push_pb2.ListCloudKeysRequest(cloud=args.cloud), **options
            )
        )
    )
    kget = keys.add_parser("get", parents=[common])
    kget.add_argument("--cloud", required=True)
    kget.add_argument("id")
    kget.add_argument("--sync", action="store_true", help="ask the cloud for its current view")
    kget.set_defaults(
        func=_run(
            lambda stub, args, options: stub.GetCloudKey(
                push_pb2.GetCloudKeyRequest(cloud=args.cloud, id=args.id, sync=args.sync), **options
            )
        )
    )

    material = groups.add_parser("import-material", parents=[common], help="seed 001's import-material")
    material.add_argument("--cloud", required=True)
    material.add_argument("id", help="the cloud key's id in hsmbridge")
    material.add_argument("--source", help="local key id, alias or name (default: generate one)")
    material.add_argument("--tier", default="local")
    material.add_argument("--valid-to", help="material expiry, RFC 3339 (sets key_expiration)")
    material.set_defaults(func=_run(_import_material))
