"""Tenant isolation on the wire, as a matrix over every key-addressing REST endpoint and RPC.

Setup: instance A holds a key (imported material M, name ``shared-name``, aliases
``shared-alias`` and ``a-only``, one registration); instance B holds a key with the *same*
material M, the same name and the alias ``shared-alias``. Then:

- B's Manager (with KeyPurge for purge) addressing A's key id (or A's alias) from instance B
  ⇒ 404 / NOT_FOUND (batch and stream items: NOT_FOUND), an audit event in B's name, and
  instance A exactly as before;
- A's principals sending instance B's header ⇒ 401 / PERMISSION_DENIED on every endpoint and RPC;
- A's ciphertext unwrapped or rewrapped through B's look-alike key (same material, name, alias)
  ⇒ 422 ``UNPROCESSABLE_CIPHERTEXT_ERR`` / INVALID_ARGUMENT ``INTEGRITY_CHECK_FAILED``: the
  ciphertext is bound to its tenant, key and version, not just to the key bytes.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from security_cases import REST_CASES, RPC_CASES, UNAUTHORIZED_BODY, RestCase, RpcCase, send
from security_support import (
    CALLERS,
    INSTANCE_A,
    INSTANCE_B,
    ROLE_CALLERS,
    Stack,
    Stubs,
    b64,
    error_info,
    snapshot,
)

from hsmbridge.v1 import crypto_pb2, keys_pb2, push_pb2

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

CRN = "crn:v1:bluemix:public:cloud-object-storage:global:a/00000000000000000000000000000000:feddecaf::bucket"
#: RPCs that name no key: they cannot address another tenant's key.
KEYLESS_RPCS = {
    "KeyService/CreateKey",
    "KeyService/ImportKey",
    "KeyService/CreateExternalKey",
    "KeyService/ListKeys",
    "ImportTokenService/CreateImportToken",
    "ImportTokenService/GetImportToken",
    "HsmService/GetHsmInfo",
    # the cloud push names connections and cloud keys, not keys; their records are tenant-scoped
    # by the store (tests/test_push_store.py) and the push tests use one instance per module
    *(f"PushService/{m}" for m in push_pb2.DESCRIPTOR.services_by_name["PushService"].methods_by_name),
}
KEY_REST_CASES = [c for c in REST_CASES if c.needs_key]
KEY_RPC_CASES = [c for c in RPC_CASES if c.method.removeprefix("/hsmbridge.v1.") not in KEYLESS_RPCS]


@dataclass(frozen=True)
class Tenants:
    a_key: str
    b_key: str
    a_ciphertext: bytes
    a_ciphertext_aad: bytes


@pytest.fixture(scope="module")
def tenants(stack: Stack, rest: TestClient) -> Tenants:
    material = os.urandom(32)
    a = stack.new_key(
        INSTANCE_A, "shared-name", payload=bytearray(material), aliases=["shared-alias", "a-only"]
    )
    b = stack.new_key(INSTANCE_B, "shared-name", payload=bytearray(material), aliases=["shared-alias"])
    assert a.id != b.id
    stack.services.registrations.create(stack.ctx(), a, CRN)
    wrap = rest.post(
        "/api/v2/keys/shared-alias/actions/wrap",
        json={"plaintext": b64(os.urandom(32))},
        headers=CALLERS["writer"].rest(),
    )
    assert wrap.status_code == 200, wrap.text
    with_aad = rest.post(
        "/api/v2/keys/shared-alias/actions/wrap",
        json={"aad": ["tenant-bound"]},
        headers=CALLERS["writer"].rest(),
    )
    assert with_aad.status_code == 200, with_aad.text
    return Tenants(
        a.id,
        b.id,
        base64.b64decode(wrap.json()["ciphertext"]),
        base64.b64decode(with_aad.json()["ciphertext"]),
    )


def not_found_code(response: Any) -> str:
    return response.json()["resources"][0]["reasons"][0]["code"]  # type: ignore[no-any-return]


# --- B addresses A's key ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", KEY_REST_CASES, ids=[c.id for c in KEY_REST_CASES])
def test_another_instances_key_is_not_found_on_every_rest_endpoint(
    rest: TestClient, stack: Stack, tenants: Tenants, case: RestCase
) -> None:
    intruder = CALLERS["purger_b" if case.action.key_purge else "manager_b"]
    body = case.body
    if body == "CIPHERTEXT":
        body = {"ciphertext": b64(tenants.a_ciphertext)}
    before = snapshot(stack, INSTANCE_A)
    for ref in (tenants.a_key, "a-only"):
        stack.take_events()
        response = send(rest, case, case.path(ref), body, intruder.rest())
        assert response.status_code == 404, (case.id, ref, response.text)
        if case.endpoint.method != "HEAD":
            assert not_found_code(response) in ("KEY_NOT_FOUND_ERR", "KEY_NOT_FOUND"), response.text
        (event,) = stack.take_events()
        assert (event["principal"], event["instance"], event["outcome"], event["reason"]) == (
            intruder.principal,
            INSTANCE_B,
            "failure",
            "KEY_NOT_FOUND",
        )
        assert event["key_id"] is None  # nothing of A's leaks into B's audit trail either
    assert snapshot(stack, INSTANCE_A) == before, f"{case.id} from B changed instance A"


def _grpc_items(response: Any) -> list[Any]:
    """The per-item results of a batch response or of the stream responses."""
    if isinstance(response, list):  # CryptoStream
        return [r for msg in response for r in getattr(msg, msg.WhichOneof("batch")).results]
    return list(response.results)


@pytest.mark.parametrize("case", KEY_RPC_CASES, ids=[c.id for c in KEY_RPC_CASES])
def test_another_instances_key_is_not_found_on_every_rpc(
    stubs: Stubs, stack: Stack, tenants: Tenants, case: RpcCase
) -> None:
    intruder = CALLERS["manager_b"]
    before = snapshot(stack, INSTANCE_A)
    for ref in (tenants.a_key, "a-only"):
        if case.streaming or case.name.endswith("Batch"):
            items = _grpc_items(case.call(stubs, ref, tenants.a_ciphertext, intruder.grpc()))
            assert [i.status.code for i in items] == [grpc.StatusCode.NOT_FOUND.value[0]], case.id
            assert not any(i.HasField("response") for i in items)
        else:
            with pytest.raises(grpc.RpcError) as missing:
                case.call(stubs, ref, tenants.a_ciphertext, intruder.grpc())
            assert missing.value.code() is grpc.StatusCode.NOT_FOUND, (case.id, ref)
            assert error_info(missing.value).reason == "KEY_NOT_FOUND"
    assert snapshot(stack, INSTANCE_A) == before, f"{case.id} from B changed instance A"


def test_listings_of_b_show_only_bs_key_and_no_registration_of_a(
    rest: TestClient, stubs: Stubs, tenants: Tenants
) -> None:
    listed = rest.get("/api/v2/keys", headers=CALLERS["manager_b"].rest()).json()["resources"]
    assert [k["id"] for k in listed] == [tenants.b_key]
    reply = stubs.keys.ListKeys(keys_pb2.ListKeysRequest(), metadata=CALLERS["manager_b"].grpc())
    assert [k.id for k in reply.keys] == [tenants.b_key]
    # E35 lists registrations across the instance's keys: A's registration is not among B's
    assert rest.get("/api/v2/keys/registrations", headers=CALLERS["manager"].rest()).json()["resources"]
    theirs = rest.get("/api/v2/keys/registrations", headers=CALLERS["manager_b"].rest()).json()
    assert theirs["metadata"]["collectionTotal"] == 0 and not theirs.get("resources")


# --- A's principals in B ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", REST_CASES, ids=[c.id for c in REST_CASES])
def test_a_principal_of_a_using_bs_header_is_401_everywhere(
    rest: TestClient, stack: Stack, tenants: Tenants, case: RestCase
) -> None:
    body = case.body
    if body == "CIPHERTEXT":
        body = {"ciphertext": b64(tenants.a_ciphertext)}
    before = snapshot(stack, INSTANCE_A), snapshot(stack, INSTANCE_B)
    for role in ROLE_CALLERS:
        caller = CALLERS[role]
        for ref in (tenants.b_key, tenants.a_key):
            stack.take_events()
            response = send(rest, case, case.path(ref), body, caller.rest(instance=INSTANCE_B))
            assert response.status_code == 401, (case.id, role, response.text)
            assert case.endpoint.method == "HEAD" or response.json() == UNAUTHORIZED_BODY
            (event,) = stack.take_events()
            assert (event["principal"], event["instance"], event["reason"]) == (
                caller.principal,
                INSTANCE_B,
                "PERMISSION_DENIED",
            )
    assert (snapshot(stack, INSTANCE_A), snapshot(stack, INSTANCE_B)) == before


@pytest.mark.parametrize("case", RPC_CASES, ids=[c.id for c in RPC_CASES])
def test_a_principal_of_a_using_bs_metadata_is_permission_denied_everywhere(
    stubs: Stubs, stack: Stack, tenants: Tenants, case: RpcCase
) -> None:
    before = snapshot(stack, INSTANCE_A), snapshot(stack, INSTANCE_B)
    for role in ROLE_CALLERS:
        caller = CALLERS[role]
        with pytest.raises(grpc.RpcError) as denied:
            case.call(stubs, tenants.b_key, tenants.a_ciphertext, caller.grpc(instance=INSTANCE_B))
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED, (case.id, role)
        # the x-hsmbridge-tenant spelling is the same tenant
        metadata = (("authorization", f"Bearer {caller.token}"), ("x-hsmbridge-tenant", INSTANCE_B))
        with pytest.raises(grpc.RpcError) as also:
            case.call(stubs, tenants.b_key, tenants.a_ciphertext, metadata)
        assert also.value.code() is grpc.StatusCode.PERMISSION_DENIED, (case.id, role)
    assert (snapshot(stack, INSTANCE_A), snapshot(stack, INSTANCE_B)) == before


# --- ciphertexts do not move -----------------------------------------------------------------------


@pytest.mark.parametrize("action", ["unwrap", "rewrap"])
def test_as_ciphertext_is_422_through_bs_look_alike_key_over_rest(
    rest: TestClient, tenants: Tenants, action: str
) -> None:
    owner, intruder = CALLERS["writer"], CALLERS["manager_b"]
    for ciphertext, aad in ((tenants.a_ciphertext, None), (tenants.a_ciphertext_aad, ["tenant-bound"])):
        body: dict[str, Any] = {"ciphertext": b64(ciphertext)}
        if aad:
            body["aad"] = aad
        # the owner can (positive control) ...
        assert (
            rest.post(
                f"/api/v2/keys/shared-alias/actions/{action}", json=body, headers=owner.rest()
            ).status_code
            == 200
        )
        # ... B cannot, through its alias, its key id, its deprecated route — same material or not
        for path in (
            f"/api/v2/keys/shared-alias/actions/{action}",
            f"/api/v2/keys/{tenants.b_key}/actions/{action}",
            f"/api/v2/keys/shared-alias?action={action}",
        ):
            response = rest.post(path, json=body, headers=intruder.rest())
            assert response.status_code == 422, (path, response.text)
            assert not_found_code(response) == "UNPROCESSABLE_CIPHERTEXT_ERR"
            assert "plaintext" not in response.json()


def test_as_ciphertext_is_invalid_argument_through_bs_look_alike_key_over_grpc(
    stubs: Stubs, tenants: Tenants
) -> None:
    owner, intruder = CALLERS["writer"].grpc(), CALLERS["manager_b"].grpc()
    C = crypto_pb2
    ciphertext = tenants.a_ciphertext
    assert stubs.crypto.Unwrap(
        C.UnwrapRequest(key_id="shared-alias", ciphertext=ciphertext), metadata=owner
    ).plaintext
    for ref in ("shared-alias", tenants.b_key):
        for rpc, request in (
            (stubs.crypto.Unwrap, C.UnwrapRequest(key_id=ref, ciphertext=ciphertext)),
            (stubs.crypto.Rewrap, C.RewrapRequest(key_id=ref, ciphertext=ciphertext)),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                rpc(request, metadata=intruder)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert error_info(refused.value).reason == "INTEGRITY_CHECK_FAILED"
        batch = stubs.crypto.UnwrapBatch(
            C.UnwrapBatchRequest(key_id=ref, items=[C.UnwrapRequest(ciphertext=ciphertext)]),
            metadata=intruder,
        )
        assert [r.status.code for r in batch.results] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]]
        assert batch.results[0].response.plaintext == b""
        streamed = list(
            stubs.crypto.CryptoStream(
                iter(
                    [
                        C.CryptoStreamRequest(
                            sequence=1,
                            rewrap=C.RewrapBatchRequest(
                                key_id=ref, items=[C.RewrapRequest(ciphertext=ciphertext)]
                            ),
                        )
                    ]
                ),
                metadata=intruder,
            )
        )
        assert [r.status.code for r in streamed[0].rewrap.results] == [
            grpc.StatusCode.INVALID_ARGUMENT.value[0]
        ]
