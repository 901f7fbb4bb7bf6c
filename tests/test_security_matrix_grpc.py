"""The role × action matrix over every RPC, through the real gRPC server (`build_server`) on
127.0.0.1, the production authenticator and gate, over SoftHSM2.

Cases are driven by `security.authz.RPC_ACTIONS` (SetKeyState once per target state,
CryptoStream once per message kind; the requests are in `security_cases`), so an RPC added
without a case fails the suite. For each case and each role of instance A: denied ⇒
PERMISSION_DENIED (ErrorInfo reason PERMISSION_DENIED, one audit event, the instance untouched);
allowed ⇒ the RPC's own outcome, never PERMISSION_DENIED, UNAUTHENTICATED, INTERNAL or UNKNOWN.
Missing or bad credentials ⇒ UNAUTHENTICATED on every RPC; health checking and reflection need
none. Each CryptoStream message is authorised on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from security_cases import NEVER_FROM_ALLOWED, RPC_CASES, RpcCase, allowed, prepare_rpc
from security_support import (
    CALLERS,
    INSTANCE_A,
    ROLE_CALLERS,
    GrpcServer,
    Stack,
    Stubs,
    error_info,
    make_stack,
    snapshot,
)
from services import close_services

from hsmbridge.security.authz import ACTIONS, RPC_ACTIONS, AuthzConfig
from hsmbridge.v1 import crypto_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

C = crypto_pb2


def test_the_matrix_covers_every_rpc_with_its_action() -> None:
    assert {c.method for c in RPC_CASES} == set(RPC_ACTIONS)
    assert {c.id: c.action.name for c in RPC_CASES if c.variant} == {
        "KeyService/SetKeyState[disable]": "kms.secrets.disable",
        "KeyService/SetKeyState[enable]": "kms.secrets.enable",
        "CryptoService/CryptoStream[wrap]": "kms.secrets.wrap",
        "CryptoService/CryptoStream[unwrap]": "kms.secrets.unwrap",
        "CryptoService/CryptoStream[rewrap]": "kms.secrets.rewrap",
    }


@pytest.mark.parametrize("role", ROLE_CALLERS)
@pytest.mark.parametrize("case", RPC_CASES, ids=[c.id for c in RPC_CASES])
def test_role_action_matrix(stubs: Stubs, stack: Stack, case: RpcCase, role: str) -> None:
    caller = CALLERS[role]
    key_id, ciphertext = prepare_rpc(stack, case)
    before = snapshot(stack)
    stack.take_events()
    metadata = caller.grpc(correlation_id=f"grpc-{case.id}-{role}")
    if allowed(caller, case.action):
        try:
            case.call(stubs, key_id, ciphertext, metadata)
        except grpc.RpcError as err:
            assert err.code() not in NEVER_FROM_ALLOWED, (case.id, role, err.code(), err.details())
        events = stack.take_events()
        assert all(e["reason"] != "PERMISSION_DENIED" and e["principal"] == caller.principal for e in events)
        # one event per call; a stream adds one per message (the message's own action first)
        names = [e["event"] for e in events]
        assert names == ([case.action.event, "kms.secrets.unwrap"] if case.streaming else [case.action.event])
    else:
        with pytest.raises(grpc.RpcError) as denied:
            case.call(stubs, key_id, ciphertext, metadata)
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED, (case.id, role)
        assert error_info(denied.value).reason == "PERMISSION_DENIED"
        (event,) = stack.take_events()
        assert (event["outcome"], event["reason"], event["principal"]) == (
            "failure",
            "PERMISSION_DENIED",
            caller.principal,
        )
        assert snapshot(stack) == before, f"{case.id} was denied to {role} but changed the instance"


BAD_METADATA: dict[str, tuple[tuple[str, str], ...]] = {
    "missing": (("bluemix-instance", INSTANCE_A),),
    "garbage": (("authorization", "Bearer not-a-token"), ("bluemix-instance", INSTANCE_A)),
    "jwt-shaped": (
        ("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"),
        ("bluemix-instance", INSTANCE_A),
    ),
    "basic": (("authorization", "Basic dXNlcjpwYXNz"), ("bluemix-instance", INSTANCE_A)),
    "no-instance-either": (),
}


@pytest.mark.parametrize("case", RPC_CASES, ids=[c.id for c in RPC_CASES])
def test_missing_or_bad_credentials_are_unauthenticated(stubs: Stubs, stack: Stack, case: RpcCase) -> None:
    key_id, ciphertext = prepare_rpc(stack, case)
    before = snapshot(stack)
    stack.take_events()
    bad = {
        **BAD_METADATA,
        "scheme-less": (("authorization", CALLERS["manager"].token), ("bluemix-instance", INSTANCE_A)),
    }
    for name, metadata in bad.items():
        with pytest.raises(grpc.RpcError) as rejected:
            case.call(stubs, key_id, ciphertext, metadata)
        assert rejected.value.code() is grpc.StatusCode.UNAUTHENTICATED, (case.id, name)
        assert error_info(rejected.value).reason == "UNAUTHENTICATED"
        assert (
            rejected.value.details()
            == "Unauthorized: The user does not have access to the specified resource."
        )
        (event,) = stack.take_events()
        assert (event["outcome"], event["reason"], event["principal"]) == ("failure", "UNAUTHENTICATED", None)
    assert snapshot(stack) == before


def test_health_and_reflection_need_no_credentials(stubs: Stubs, grpc_server: GrpcServer) -> None:
    reply = stubs.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(stubs.channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"hsmbridge.v1.KeyService", "hsmbridge.v1.CryptoService", "grpc.health.v1.Health"} <= names


def test_each_stream_message_is_authorised_on_its_own(hsm_backend: Any) -> None:
    """With wrap raised to Writer, a Reader may open the stream (unwrap) and unwrap in it, but its
    wrap message is refused with PERMISSION_DENIED — and audited as the wrap it was."""
    stack = make_stack(hsm_backend, authz=AuthzConfig(overrides={"kms.secrets.wrap": "Writer"}))
    server = GrpcServer(stack)
    channel = server.channel()
    try:
        stubs = Stubs(channel)
        key_id, ciphertext = prepare_rpc(stack)
        reader = CALLERS["reader"].grpc()

        def messages() -> Iterator[crypto_pb2.CryptoStreamRequest]:
            yield C.CryptoStreamRequest(
                sequence=1,
                unwrap=C.UnwrapBatchRequest(key_id=key_id, items=[C.UnwrapRequest(ciphertext=ciphertext)]),
            )
            yield C.CryptoStreamRequest(
                sequence=2, wrap=C.WrapBatchRequest(key_id=key_id, items=[C.WrapRequest()])
            )

        received = []
        with pytest.raises(grpc.RpcError) as denied:
            for response in stubs.crypto.CryptoStream(messages(), metadata=reader, timeout=30):
                received.append(response)
        assert [r.sequence for r in received] == [1]
        assert received[0].unwrap.results[0].status.code == 0
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        events = [(e["event"], e["outcome"], e["reason"]) for e in stack.events()]
        assert events == [
            ("kms.secrets.unwrap", "success", None),  # the first message
            ("kms.secrets.wrap", "failure", "PERMISSION_DENIED"),  # the second
            ("kms.secrets.unwrap", "failure", "PERMISSION_DENIED"),  # the stream as a whole
        ]
        # a Writer may do both
        assert (
            len(list(stubs.crypto.CryptoStream(messages(), metadata=CALLERS["writer"].grpc(), timeout=30)))
            == 2
        )
        # and the unary Wrap follows the same override
        with pytest.raises(grpc.RpcError) as unary:
            stubs.crypto.Wrap(C.WrapRequest(key_id=key_id), metadata=reader, timeout=30)
        assert unary.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert ACTIONS["kms.secrets.wrap"].min_role is not None  # the default table is untouched
    finally:
        channel.close()
        server.close()
        close_services(stack.services)
