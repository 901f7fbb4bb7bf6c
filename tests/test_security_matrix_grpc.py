"""The role × action matrix over every RPC, through the real gRPC server (`build_server`) on
127.0.0.1, the production authenticator and gate, over SoftHSM2.

Cases are driven by `security.authz.RPC_ACTIONS` (SetKeyState once per target state, CryptoStream
once per message kind), so an RPC added without a case here fails the suite. For each case and
each role of instance A: denied ⇒ PERMISSION_DENIED (ErrorInfo reason PERMISSION_DENIED, one
audit event, the key untouched); allowed ⇒ the RPC's own outcome, never PERMISSION_DENIED,
UNAUTHENTICATED, INTERNAL or UNKNOWN. Missing or bad credentials ⇒ UNAUTHENTICATED on every RPC;
health checking and reflection need none. Each CryptoStream message is authorised on its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from security_support import (
    CALLERS,
    INSTANCE_A,
    ROLE_CALLERS,
    Caller,
    GrpcServer,
    Stack,
    Stubs,
    error_info,
    make_stack,
    snapshot,
)
from services import close_services

from hsmbridge.security.authz import ACTIONS, RPC_ACTIONS, Action, AuthzConfig, rpc_action
from hsmbridge.v1 import crypto_pb2, hsm_pb2, import_tokens_pb2, keys_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

SERVICE = "/hsmbridge.v1."


@dataclass(frozen=True)
class Case:
    method: str  # full gRPC method name
    variant: str
    #: (stubs, key id, ciphertext of that key) → invoke the RPC with the given metadata
    build: Callable[[str, bytes], Any]

    @property
    def id(self) -> str:
        return self.method.removeprefix(SERVICE) + (f"[{self.variant}]" if self.variant else "")

    @property
    def name(self) -> str:
        return self.method.rsplit("/", 1)[1]

    @property
    def stub_attr(self) -> str:
        return {
            "KeyService": "keys",
            "CryptoService": "crypto",
            "ImportTokenService": "tokens",
            "HsmService": "hsm",
        }[self.method.removeprefix(SERVICE).split("/")[0]]

    @property
    def streaming(self) -> bool:
        return self.name == "CryptoStream"

    @property
    def action(self) -> Action:
        request = self.build("k", b"c")
        if self.streaming:
            request = next(iter(request))
        return rpc_action(self.method, request)

    def call(self, stubs: Stubs, key_id: str, ciphertext: bytes, metadata: Any) -> Any:
        rpc = getattr(getattr(stubs, self.stub_attr), self.name)
        request = self.build(key_id, ciphertext)
        if self.streaming:
            return list(rpc(request, metadata=metadata, timeout=30))
        return rpc(request, metadata=metadata, timeout=30)


def _stream(**batch: Any) -> Callable[[str, bytes], Iterator[crypto_pb2.CryptoStreamRequest]]:
    def build(key_id: str, ciphertext: bytes) -> Iterator[crypto_pb2.CryptoStreamRequest]:
        kind, make = next(iter(batch.items()))
        return iter([crypto_pb2.CryptoStreamRequest(sequence=1, **{kind: make(key_id, ciphertext)})])

    return build


K = keys_pb2
C = crypto_pb2
#: Per RPC: the variants and their requests. Rotation and import use plain material; the import
#: token RPC asks for a key size the server refuses (400 before an RSA keygen: the matrix proves
#: authorisation, the audit-flow test creates real tokens).
REQUESTS: dict[str, dict[str, Callable[[str, bytes], Any]]] = {
    "KeyService/CreateKey": {"": lambda k, c: K.CreateKeyRequest(name="grpc-matrix")},
    "KeyService/ImportKey": {
        "": lambda k, c: K.ImportKeyRequest(
            key=K.CreateKeyRequest(name="grpc-imported"), material=K.KeyMaterial(plaintext=os.urandom(32))
        )
    },
    "KeyService/GetKey": {"": lambda k, c: K.GetKeyRequest(key_id=k)},
    "KeyService/GetKeyPayload": {"": lambda k, c: K.GetKeyPayloadRequest(key_id=k)},
    "KeyService/ListKeys": {"": lambda k, c: K.ListKeysRequest()},
    "KeyService/RotateKey": {"": lambda k, c: K.RotateKeyRequest(key_id=k)},
    "KeyService/SetKeyState": {
        "disable": lambda k, c: K.SetKeyStateRequest(key_id=k, state=K.KEY_STATE_SUSPENDED),
        "enable": lambda k, c: K.SetKeyStateRequest(key_id=k, state=K.KEY_STATE_ACTIVE),
    },
    "KeyService/DeleteKey": {"": lambda k, c: K.DeleteKeyRequest(key_id=k)},
    "KeyService/ListKeyVersions": {"": lambda k, c: K.ListKeyVersionsRequest(key_id=k)},
    "CryptoService/Wrap": {"": lambda k, c: C.WrapRequest(key_id=k)},
    "CryptoService/Unwrap": {"": lambda k, c: C.UnwrapRequest(key_id=k, ciphertext=c)},
    "CryptoService/Rewrap": {"": lambda k, c: C.RewrapRequest(key_id=k, ciphertext=c)},
    "CryptoService/WrapBatch": {"": lambda k, c: C.WrapBatchRequest(key_id=k, items=[C.WrapRequest()])},
    "CryptoService/UnwrapBatch": {
        "": lambda k, c: C.UnwrapBatchRequest(key_id=k, items=[C.UnwrapRequest(ciphertext=c)])
    },
    "CryptoService/RewrapBatch": {
        "": lambda k, c: C.RewrapBatchRequest(key_id=k, items=[C.RewrapRequest(ciphertext=c)])
    },
    "CryptoService/CryptoStream": {
        "wrap": _stream(wrap=lambda k, c: C.WrapBatchRequest(key_id=k, items=[C.WrapRequest()])),
        "unwrap": _stream(
            unwrap=lambda k, c: C.UnwrapBatchRequest(key_id=k, items=[C.UnwrapRequest(ciphertext=c)])
        ),
        "rewrap": _stream(
            rewrap=lambda k, c: C.RewrapBatchRequest(key_id=k, items=[C.RewrapRequest(ciphertext=c)])
        ),
    },
    "ImportTokenService/CreateImportToken": {
        "": lambda k, c: import_tokens_pb2.CreateImportTokenRequest(key_bits=1000)
    },
    "ImportTokenService/GetImportToken": {"": lambda k, c: import_tokens_pb2.GetImportTokenRequest()},
    "HsmService/GetHsmInfo": {"": lambda k, c: hsm_pb2.GetHsmInfoRequest()},
}


def _cases() -> list[Case]:
    cases = []
    for method in RPC_ACTIONS:
        variants = REQUESTS[method.removeprefix(SERVICE)]  # a KeyError here: a new RPC needs a case
        cases.extend(Case(method, variant, build) for variant, build in variants.items())
    return cases


CASES = _cases()
NEVER_FROM_ALLOWED = {
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
}


def allowed(caller: Caller, action: Action) -> bool:
    """The expected decision, from the action's documented minimum role (not from `Authorizer`)."""
    if action.key_purge:
        return caller.key_purge
    return action.min_role is not None and caller.top_role >= action.min_role


def prepare(stack: Stack, case: Case | None = None) -> tuple[str, bytes]:
    """A fresh key of instance A and a ciphertext of it. GetKeyPayload gets a standard key: a
    root key's payload is refused by the core (with PERMISSION_DENIED, see the report) whatever
    the caller's role, which would hide the authorisation decision under test."""
    if case is not None and case.name == "GetKeyPayload":
        return stack.new_key(name="grpc-matrix-standard", extractable=True).id, b""
    key = stack.new_key(name="grpc-matrix-key")
    return key.id, stack.services.envelopes.wrap(stack.ctx(), key.id, None).ciphertext


def test_the_matrix_covers_every_rpc_with_its_action() -> None:
    assert {c.method for c in CASES} == set(RPC_ACTIONS)
    assert {c.id: c.action.name for c in CASES if c.variant} == {
        "KeyService/SetKeyState[disable]": "kms.secrets.disable",
        "KeyService/SetKeyState[enable]": "kms.secrets.enable",
        "CryptoService/CryptoStream[wrap]": "kms.secrets.wrap",
        "CryptoService/CryptoStream[unwrap]": "kms.secrets.unwrap",
        "CryptoService/CryptoStream[rewrap]": "kms.secrets.rewrap",
    }


@pytest.mark.parametrize("role", ROLE_CALLERS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_role_action_matrix(stubs: Stubs, stack: Stack, case: Case, role: str) -> None:
    caller = CALLERS[role]
    key_id, ciphertext = prepare(stack, case)
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


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_missing_or_bad_credentials_are_unauthenticated(stubs: Stubs, stack: Stack, case: Case) -> None:
    key_id, ciphertext = prepare(stack, case)
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
        key_id, ciphertext = prepare(stack)
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
