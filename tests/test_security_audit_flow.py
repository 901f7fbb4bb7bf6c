"""Audit events for a full flow over REST and over gRPC: exactly one event per call, named as in
the spec table (Key Protect's event names), each complete — principal, instance, key id, key
version where the call used one, outcome, reason code for failures, the caller's correlation id
(also echoed on REST responses), the client address, latency, transport and auth method.

Flow: import token create and retrieve, secure import, create, wrap (with and without a DEK),
unwrap, unwrap of a tampered ciphertext (422 / INVALID_ARGUMENT, audited INTEGRITY_CHECK_FAILED),
rotate, rewrap of the pre-rotation ciphertext, disable, enable, delete; plus a denial, an
unauthenticated call and a not-found key.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from security_support import CALLERS, INSTANCE_A, Caller, Stack, Stubs, b64, key_body, seal_for_import

from hsmbridge.security.audit import FIELD_NAMES
from hsmbridge.v1 import crypto_pb2, import_tokens_pb2, keys_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

C, K = crypto_pb2, keys_pb2
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
REST_CLIENT = "testclient:50000"  # Starlette's TestClient peer
GRPC_CLIENT = re.compile(r"ipv4:127\.0\.0\.1:\d+")
#: For create events: the new key is not reported today (see `test_create_events_name_the_new_key`).
UNCHECKED: Any = object()


@dataclass
class Expect:
    event: str
    principal: str | None
    key_id: str | None = None
    key_version: str | None = None
    reason: str | None = None
    cause: str | None = None

    def check(
        self, event: dict[str, Any], *, correlation: str, transport: str, auth: str | None = "token"
    ) -> None:
        assert set(event) == FIELD_NAMES, "every schema field is present (null when not applicable)"
        expected = {
            "event": self.event,
            "outcome": "failure" if self.reason else "success",
            "principal": self.principal,
            # an unauthenticated call is refused before its instance header is read
            "instance": INSTANCE_A if self.principal else None,
            "key_id": self.key_id,
            "key_version": self.key_version,
            "reason": self.reason,
            "cause": self.cause,
            "correlation_id": correlation,
            "transport": transport,
            "auth_method": auth if self.principal else None,
        }
        expected = {k: v for k, v in expected.items() if v is not UNCHECKED}
        assert {k: event[k] for k in expected} == expected
        assert isinstance(event["latency_ms"], float) and event["latency_ms"] >= 0
        assert TIMESTAMP.fullmatch(event["timestamp"]), event["timestamp"]
        if transport == "rest":
            assert event["client"] == REST_CLIENT
        else:
            assert GRPC_CLIENT.fullmatch(event["client"]), event["client"]


class RestFlow:
    def __init__(self, rest: TestClient, stack: Stack) -> None:
        self.rest, self.stack, self.n = rest, stack, 0

    def __call__(
        self, method: str, path: str, caller: Caller | None, expect: Expect, status: int, **kwargs: Any
    ) -> Any:
        self.n += 1
        correlation = f"rest-flow-{self.n}"
        headers = caller.rest(correlation_id=correlation) if caller else {}
        if caller is None:
            headers = {"authorization": "Bearer hsmb_not-a-configured-token", "bluemix-instance": INSTANCE_A}
            headers["correlation-id"] = correlation
        self.stack.take_events()
        response = self.rest.request(method, path, headers=headers, **kwargs)
        assert response.status_code == status, (path, response.text)
        assert response.headers["correlation-id"] == correlation
        events = self.stack.take_events()
        assert len(events) == 1, events
        expect.check(events[0], correlation=correlation, transport="rest")
        return response


def test_a_full_rest_flow_is_audited_call_by_call(rest: TestClient, stack: Stack) -> None:
    call = RestFlow(rest, stack)
    writer, manager, reader = CALLERS["writer"], CALLERS["manager"], CALLERS["reader"]
    w, m = writer.principal, manager.principal

    call("POST", "/api/v2/import_token", writer, Expect("kms.import-token.create", w), 200, json={})
    token = call("GET", "/api/v2/import_token", writer, Expect("kms.import-token.read", w), 200).json()
    sealed = seal_for_import(
        base64.b64decode(token["payload"]), base64.b64decode(token["nonce"]), os.urandom(32)
    )
    imported = call(
        "POST",
        "/api/v2/keys",
        writer,
        Expect("kms.secrets.create", w, UNCHECKED, UNCHECKED),
        201,
        json=key_body("imported", **sealed["rest"]),
    ).json()["resources"][0]
    assert imported["imported"] is True
    key = call(
        "POST",
        "/api/v2/keys",
        writer,
        Expect("kms.secrets.create", w, UNCHECKED, UNCHECKED),
        201,
        json=key_body("flow"),
    ).json()["resources"][0]
    kid, v1 = key["id"], key["keyVersion"]["id"]
    actions = f"/api/v2/keys/{kid}/actions"

    wrapped = call(
        "POST",
        f"{actions}/wrap",
        writer,
        Expect("kms.secrets.wrap", w, kid, v1),
        200,
        json={"plaintext": b64(b"d" * 32)},
    ).json()
    call(
        "POST", f"{actions}/wrap", reader, Expect("kms.secrets.wrap", reader.principal, kid, v1), 200, json={}
    )
    call("POST", f"{actions}/unwrap", writer, Expect("kms.secrets.unwrap", w, kid, v1), 200, json=wrapped)
    tampered = bytearray(base64.b64decode(wrapped["ciphertext"]))
    tampered[-1] ^= 1
    call(
        "POST",
        f"{actions}/unwrap",
        writer,
        Expect("kms.secrets.unwrap", w, kid, v1, reason="INTEGRITY_CHECK_FAILED"),
        422,
        json={"ciphertext": b64(bytes(tampered))},
    )
    # the new version's id is not in the 204; test_create_events_name_the_new_key pins it
    call("POST", f"{actions}/rotate", writer, Expect("kms.secrets.rotate", w, kid, UNCHECKED), 204)
    v2 = rest.get(f"/api/v2/keys/{kid}/metadata", headers=writer.rest()).json()["resources"][0]["keyVersion"][
        "id"
    ]
    assert v2 != v1
    rewrapped = call(
        "POST", f"{actions}/rewrap", writer, Expect("kms.secrets.rewrap", w, kid, v2), 200, json=wrapped
    ).json()
    assert rewrapped["rewrappedKeyVersion"]["id"] == v2
    # the old ciphertext still unwraps; the event names the version the call last used
    call("POST", f"{actions}/unwrap", writer, Expect("kms.secrets.unwrap", w, kid, v2), 200, json=wrapped)
    call(
        "GET",
        f"/api/v2/keys/{kid}/metadata",
        reader,
        Expect("kms.secrets-metadata.read", reader.principal, kid),
        200,
    )
    call(
        "GET",
        f"/api/v2/keys/{kid}/versions",
        reader,
        Expect("kms.secrets-key-versions.list", reader.principal, kid),
        200,
    )
    # failures: denied (role), unauthenticated, not found
    call(
        "POST",
        f"{actions}/disable",
        writer,
        Expect("kms.secrets.disable", w, reason="PERMISSION_DENIED"),
        401,
    )
    call(
        "POST",
        f"{actions}/disable",
        None,
        Expect("kms.secrets.disable", None, reason="UNAUTHENTICATED", cause="unknown_token"),
        401,
    )
    call(
        "POST",
        "/api/v2/keys/0c8a1b7e-0000-4000-8000-00000000dead/actions/disable",
        manager,
        Expect("kms.secrets.disable", m, reason="KEY_NOT_FOUND"),
        404,
    )
    call("POST", f"{actions}/disable", manager, Expect("kms.secrets.disable", m, kid), 204)
    stack.clock.advance(minutes=1)  # enabling waits for the disable to propagate (30 s)
    call("POST", f"{actions}/enable", manager, Expect("kms.secrets.enable", m, kid), 204)
    call("DELETE", f"/api/v2/keys/{kid}", manager, Expect("kms.secrets.delete", m, kid), 204)


class GrpcFlow:
    def __init__(self, stubs: Stubs, stack: Stack) -> None:
        self.stubs, self.stack, self.n = stubs, stack, 0

    def __call__(
        self,
        rpc: Any,
        request: Any,
        caller: Caller | None,
        expect: Expect,
        code: grpc.StatusCode | None = None,
    ) -> Any:
        self.n += 1
        correlation = f"grpc-flow-{self.n}"
        if caller is None:
            metadata: Any = (
                ("authorization", "Bearer hsmb_not-a-configured-token"),
                ("bluemix-instance", INSTANCE_A),
                ("correlation-id", correlation),
            )
        else:
            metadata = caller.grpc(correlation_id=correlation)
        self.stack.take_events()
        result = None
        if code is None:
            result = rpc(request, metadata=metadata, timeout=30)
        else:
            with pytest.raises(grpc.RpcError) as failed:
                rpc(request, metadata=metadata, timeout=30)
            assert failed.value.code() is code
        events = self.stack.take_events()
        assert len(events) == 1, events
        expect.check(events[0], correlation=correlation, transport="grpc")
        return result


def test_a_full_grpc_flow_is_audited_call_by_call(stubs: Stubs, stack: Stack) -> None:
    call = GrpcFlow(stubs, stack)
    writer, manager, reader = CALLERS["writer"], CALLERS["manager"], CALLERS["reader"]
    w, m = writer.principal, manager.principal
    keys, crypto, tokens = stubs.keys, stubs.crypto, stubs.tokens

    call(
        tokens.CreateImportToken,
        import_tokens_pb2.CreateImportTokenRequest(key_bits=2048, max_retrievals=2),
        writer,
        Expect("kms.import-token.create", w),
    )
    token = call(
        tokens.GetImportToken,
        import_tokens_pb2.GetImportTokenRequest(),
        writer,
        Expect("kms.import-token.read", w),
    )
    sealed = seal_for_import(token.public_key_pem.encode(), token.nonce, os.urandom(32), sha1=True)
    secure = K.SecureMaterial(
        encrypted_key=sealed["encrypted_key"],
        iv=sealed["iv"],
        encrypted_nonce=sealed["encrypted_nonce"],
        oaep_hash=K.OAEP_HASH_SHA1,
    )
    imported = call(
        keys.ImportKey,
        K.ImportKeyRequest(key=K.CreateKeyRequest(name="imported"), material=K.KeyMaterial(secure=secure)),
        writer,
        Expect("kms.secrets.create", w, UNCHECKED, UNCHECKED),
    )
    assert imported.imported
    key = call(
        keys.CreateKey,
        K.CreateKeyRequest(name="flow"),
        writer,
        Expect("kms.secrets.create", w, UNCHECKED, UNCHECKED),
    )
    kid, v1 = key.id, key.current_version.id

    wrapped = call(
        crypto.Wrap,
        C.WrapRequest(key_id=kid, plaintext=b"d" * 32),
        writer,
        Expect("kms.secrets.wrap", w, kid, v1),
    )
    call(
        crypto.Wrap, C.WrapRequest(key_id=kid), reader, Expect("kms.secrets.wrap", reader.principal, kid, v1)
    )
    call(
        crypto.Unwrap,
        C.UnwrapRequest(key_id=kid, ciphertext=wrapped.ciphertext),
        writer,
        Expect("kms.secrets.unwrap", w, kid, v1),
    )
    tampered = bytearray(wrapped.ciphertext)
    tampered[-1] ^= 1
    call(
        crypto.Unwrap,
        C.UnwrapRequest(key_id=kid, ciphertext=bytes(tampered)),
        writer,
        Expect("kms.secrets.unwrap", w, kid, v1, reason="INTEGRITY_CHECK_FAILED"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    rotated = call(
        keys.RotateKey,
        K.RotateKeyRequest(key_id=kid),
        writer,
        Expect("kms.secrets.rotate", w, kid, UNCHECKED),
    )
    v2 = rotated.current_version.id
    assert v2 != v1
    rewrapped = call(
        crypto.Rewrap,
        C.RewrapRequest(key_id=kid, ciphertext=wrapped.ciphertext),
        writer,
        Expect("kms.secrets.rewrap", w, kid, v2),
    )
    assert rewrapped.rewrapped_key_version_id == v2
    call(
        keys.GetKey,
        K.GetKeyRequest(key_id=kid),
        reader,
        Expect("kms.secrets-metadata.read", reader.principal, kid),
    )
    call(
        keys.SetKeyState,
        K.SetKeyStateRequest(key_id=kid, state=K.KEY_STATE_SUSPENDED),
        writer,
        Expect("kms.secrets.disable", w, reason="PERMISSION_DENIED"),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    call(
        keys.SetKeyState,
        K.SetKeyStateRequest(key_id=kid, state=K.KEY_STATE_SUSPENDED),
        None,
        Expect("kms.secrets.disable", None, reason="UNAUTHENTICATED", cause="unknown_token"),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    call(
        keys.SetKeyState,
        K.SetKeyStateRequest(key_id="0c8a1b7e-0000-4000-8000-00000000dead", state=K.KEY_STATE_SUSPENDED),
        manager,
        Expect("kms.secrets.disable", m, reason="KEY_NOT_FOUND"),
        grpc.StatusCode.NOT_FOUND,
    )
    call(
        keys.SetKeyState,
        K.SetKeyStateRequest(key_id=kid, state=K.KEY_STATE_SUSPENDED),
        manager,
        Expect("kms.secrets.disable", m, kid),
    )
    stack.clock.advance(minutes=1)  # enabling waits for the disable to propagate (30 s)
    call(
        keys.SetKeyState,
        K.SetKeyStateRequest(key_id=kid, state=K.KEY_STATE_ACTIVE),
        manager,
        Expect("kms.secrets.enable", m, kid),
    )
    call(keys.DeleteKey, K.DeleteKeyRequest(key_id=kid), manager, Expect("kms.secrets.delete", m, kid))


def test_batch_and_stream_calls_are_audited_once_per_call_and_per_message(stubs: Stubs, stack: Stack) -> None:
    writer = CALLERS["writer"]
    key = stack.new_key(name="batched")
    stack.take_events()
    batch = stubs.crypto.WrapBatch(
        C.WrapBatchRequest(key_id=key.id, items=[C.WrapRequest(), C.WrapRequest()]),
        metadata=writer.grpc(correlation_id="batch-1"),
    )
    assert len(batch.results) == 2
    (event,) = stack.take_events()
    assert (event["event"], event["outcome"], event["correlation_id"]) == (
        "kms.secrets.wrap",
        "success",
        "batch-1",
    )
    messages = [
        C.CryptoStreamRequest(sequence=1, wrap=C.WrapBatchRequest(key_id=key.id, items=[C.WrapRequest()])),
        C.CryptoStreamRequest(
            sequence=2,
            unwrap=C.UnwrapBatchRequest(
                key_id=key.id, items=[C.UnwrapRequest(ciphertext=batch.results[0].response.ciphertext)]
            ),
        ),
    ]
    assert (
        len(list(stubs.crypto.CryptoStream(iter(messages), metadata=writer.grpc(correlation_id="stream-1"))))
        == 2
    )
    events = stack.take_events()
    assert [(e["event"], e["outcome"], e["correlation_id"], e["principal"]) for e in events] == [
        ("kms.secrets.wrap", "success", "stream-1", writer.principal),
        ("kms.secrets.unwrap", "success", "stream-1", writer.principal),
        ("kms.secrets.unwrap", "success", "stream-1", writer.principal),  # the stream itself
    ]


def test_create_events_name_the_new_key(rest: TestClient, stubs: Stubs, stack: Stack) -> None:
    writer = CALLERS["writer"]
    stack.take_events()
    created = rest.post("/api/v2/keys", json=key_body("named"), headers=writer.rest()).json()["resources"][0]
    (event,) = stack.take_events()
    assert (event["key_id"], event["key_version"]) == (created["id"], created["keyVersion"]["id"])
    key = stubs.keys.CreateKey(K.CreateKeyRequest(name="named"), metadata=writer.grpc())
    (event,) = stack.take_events()
    assert (event["key_id"], event["key_version"]) == (key.id, key.current_version.id)
    rotated = stubs.keys.RotateKey(K.RotateKeyRequest(key_id=key.id), metadata=writer.grpc())
    (event,) = stack.take_events()
    assert event["event"] == "kms.secrets.rotate"
    assert (event["key_id"], event["key_version"]) == (key.id, rotated.current_version.id)
