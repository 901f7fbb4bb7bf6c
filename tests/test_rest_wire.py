"""Wire behaviour shared by every endpoint this facade serves for keys: the collection and error
envelopes, `correlation-id`, bodies without (or with a wrong) Content-Type, empty bodies, 204s
that are really empty and 200s that never are, alias-as-`{id}`, 401s, and tenant isolation —
a key ID of another instance is 404 on every endpoint and never usable."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

KEY_TYPE = "application/vnd.ibm.kms.key+json"
ERROR_TYPE = "application/vnd.ibm.kms.error+json"
UNAUTHORIZED = "Unauthorized: The user does not have access to the specified resource."


def reason(response: httpx.Response) -> str:
    return response.json()["resources"][0]["reasons"][0]["code"]  # type: ignore[no-any-return]


def create_body(name: str = "wire-key", **fields: Any) -> bytes:
    import json

    return json.dumps(
        {
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [{"type": KEY_TYPE, "name": name, **fields}],
        }
    ).encode()


#: (method, path template, body) for every key-scoped endpoint; {id} is filled per test.
KEY_ENDPOINTS: list[tuple[str, str, bytes | None]] = [
    ("GET", "/api/v2/keys/{id}", None),
    ("GET", "/api/v2/keys/{id}/metadata", None),
    ("PATCH", "/api/v2/keys/{id}", b'{"keyRingID": "default"}'),
    ("DELETE", "/api/v2/keys/{id}", None),
    ("DELETE", "/api/v2/keys/{id}/purge", None),
    ("POST", "/api/v2/keys/{id}/restore", None),
    ("GET", "/api/v2/keys/{id}/versions", None),
    ("POST", "/api/v2/keys/{id}/actions/wrap", b"{}"),
    ("POST", "/api/v2/keys/{id}/actions/unwrap", b'{"ciphertext": "AAAA"}'),
    ("POST", "/api/v2/keys/{id}/actions/rewrap", b'{"ciphertext": "AAAA"}'),
    ("POST", "/api/v2/keys/{id}/actions/rotate", None),
    ("POST", "/api/v2/keys/{id}/actions/setKeyForDeletion", None),
    ("POST", "/api/v2/keys/{id}/actions/unsetKeyForDeletion", None),
    ("POST", "/api/v2/keys/{id}/actions/enable", None),
    ("POST", "/api/v2/keys/{id}/actions/disable", None),
    ("POST", "/api/v2/keys/{id}/actions/sync", None),
    ("POST", "/api/v2/keys/{id}?action=wrap", b"{}"),
    ("POST", "/api/v2/keys/{id}?action=rotate", None),
    ("POST", "/api/v2/keys/{id}/aliases/some-alias", None),
    ("DELETE", "/api/v2/keys/{id}/aliases/some-alias", None),
]


# --- envelopes ------------------------------------------------------------------------------------


def test_error_envelope_shape(api: Api) -> None:
    response = api.get("/api/v2/keys/nope-nope", headers=api.kp())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["metadata"] == {"collectionType": ERROR_TYPE, "collectionTotal": 1}
    resource = body["resources"][0]
    assert resource["errorMsg"] == (
        "Not Found: The key could not be found. Verify that the key ID specified is valid."
    )
    assert resource["reasons"] == [
        {
            "code": "KEY_NOT_FOUND_ERR",
            "message": "Key does not exist",
            "status": 404,
            "moreInfo": "https://cloud.ibm.com/apidocs/key-protect",
        }
    ]


def test_unknown_route_and_method_use_the_error_envelope(api: Api) -> None:
    missing = api.get("/api/v2/nothing-here", headers=api.kp())
    assert missing.status_code == 404
    assert missing.json()["metadata"]["collectionType"] == ERROR_TYPE
    wrong_method = api.put("/api/v2/keys", headers=api.kp())
    assert wrong_method.status_code in (404, 405, 501)
    assert wrong_method.json()["metadata"]["collectionType"] == ERROR_TYPE


# --- authentication and the instance header ---------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token", "Basic YWxpY2U6cHc=", "alice-token", "Bearer  "],
)
def test_bad_credentials_are_401_with_the_fixed_message(api: Api, authorization: str | None) -> None:
    headers = {"bluemix-instance": api.instance, "correlation-id": "corr-401"}
    if authorization is not None:
        headers["authorization"] = authorization
    for method, path, body in [
        ("GET", "/api/v2/keys", None),
        ("POST", "/api/v2/keys", create_body()),
        ("HEAD", "/api/v2/keys", None),
        ("POST", "/api/v2/import_token", b"{}"),
        ("GET", "/api/v2/import_token", None),
        *((m, p.format(id="x-key"), b) for m, p, b in KEY_ENDPOINTS),
    ]:
        response = api.request(method, path, content=body, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["correlation-id"] == "corr-401"
        if method != "HEAD":
            assert response.json()["resources"] == [{"errorMsg": UNAUTHORIZED}]


def test_401_beats_a_missing_instance_and_missing_instance_is_400(api: Api) -> None:
    assert api.get("/api/v2/keys").status_code == 401
    response = api.get("/api/v2/keys", headers={"authorization": "Bearer alice-token"})
    assert response.status_code == 400
    assert reason(response) == "MISSING_FIELD_ERR"
    assert response.json()["resources"][0]["reasons"][0]["target"] == {
        "type": "param",
        "name": "bluemix-instance",
    }
    bad = api.get(
        "/api/v2/keys", headers={"authorization": "Bearer alice-token", "bluemix-instance": "a:b/c"}
    )
    assert bad.status_code == 400
    assert reason(bad) == "INVALID_PARAM_ERR"


# --- correlation-id ---------------------------------------------------------------------------------


def test_correlation_id_is_echoed_on_success_and_error(api: Api) -> None:
    ok = api.post("/api/v2/keys", content=create_body(), headers=api.kp(correlation_id="req-1"))
    assert ok.headers["correlation-id"] == "req-1"
    key = ok.json()["resources"][0]["id"]
    wrapped = api.post(f"/api/v2/keys/{key}/actions/wrap", headers=api.kp(correlation_id="req-2"))
    assert wrapped.headers["correlation-id"] == "req-2"
    error = api.post(f"/api/v2/keys/{key}/actions/unwrap", headers=api.kp(correlation_id="req-3"))
    assert error.status_code == 400
    assert error.headers["correlation-id"] == "req-3"
    head = api.head("/api/v2/keys", headers=api.kp(correlation_id="req-4"))
    assert head.headers["correlation-id"] == "req-4"
    unsafe = api.get("/api/v2/keys", headers=api.kp(correlation_id="x" * 200))
    assert "correlation-id" not in unsafe.headers


# --- bodies whatever the Content-Type ----------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/json",
        "application/vnd.ibm.kms.key+json",
        "text/plain",
        "application/x-www-form-urlencoded",
    ],
)
def test_bodies_are_json_whatever_the_content_type(api: Api, content_type: str | None) -> None:
    headers = api.kp() if content_type is None else {**api.kp(), "content-type": content_type}
    created = api.post("/api/v2/keys", content=create_body(), headers=headers)
    assert created.status_code == 201, created.text
    key = created.json()["resources"][0]["id"]
    dek = base64.b64encode(os.urandom(32)).decode()
    wrapped = api.post(
        f"/api/v2/keys/{key}/actions/wrap", content=f'{{"plaintext": "{dek}"}}'.encode(), headers=headers
    )
    assert wrapped.status_code == 200
    ciphertext = wrapped.json()["ciphertext"]
    unwrapped = api.post(
        f"/api/v2/keys/{key}/actions/unwrap",
        content=f'{{"ciphertext": "{ciphertext}"}}'.encode(),
        headers=headers,
    )
    assert unwrapped.json()["plaintext"] == dek


def test_requests_without_content_type_header_at_all(api: Api) -> None:
    request = api.build_request("POST", "/api/v2/keys", content=create_body(), headers=api.kp())
    assert "content-type" not in request.headers
    assert api.send(request).status_code == 201


def test_empty_bodies_where_none_is_needed(api: Api) -> None:
    key = api.create_key()["id"]
    for path in ("actions/wrap", "actions/rotate", "actions/disable"):
        response = api.post(f"/api/v2/keys/{key}/{path}", content=b"", headers=api.kp())
        assert response.status_code in (200, 204), path
    api.clock.advance(minutes=1)
    # whitespace-only is empty too
    assert (
        api.post(f"/api/v2/keys/{key}/actions/enable", content=b"  \n", headers=api.kp()).status_code == 204
    )
    assert api.post("/api/v2/import_token", content=b"", headers=api.kp()).status_code == 200


# --- 200 never empty, 204 always empty ----------------------------------------------------------------


def test_statuses_and_bodies(api: Api) -> None:
    key = api.create_key(aliases=["status-alias"])["id"]
    calls: list[tuple[Callable[[], httpx.Response], int]] = [
        (lambda: api.get("/api/v2/keys", headers=api.kp()), 200),
        (lambda: api.get(f"/api/v2/keys/{key}", headers=api.kp()), 200),
        (lambda: api.get(f"/api/v2/keys/{key}/metadata", headers=api.kp()), 200),
        (lambda: api.get(f"/api/v2/keys/{key}/versions", headers=api.kp()), 200),
        (lambda: api.patch(f"/api/v2/keys/{key}", json={"keyRingID": "default"}, headers=api.kp()), 200),
        (lambda: api.post(f"/api/v2/keys/{key}/actions/wrap", headers=api.kp()), 200),
        (lambda: api.post(f"/api/v2/keys/{key}/actions/rotate", headers=api.kp()), 204),
        (lambda: api.post(f"/api/v2/keys/{key}/actions/sync", headers=api.kp()), 409),
        (lambda: api.post(f"/api/v2/keys/{key}/aliases/status-alias", headers=api.kp()), 200),
        (lambda: api.delete(f"/api/v2/keys/{key}/aliases/status-alias", headers=api.kp()), 204),
        (lambda: api.post(f"/api/v2/keys/{key}/actions/disable", headers=api.kp()), 204),
        (lambda: api.delete(f"/api/v2/keys/{key}", headers=api.kp()), 204),
    ]
    for call, status in calls:
        response = call()
        assert response.status_code == status, response.request.url
        if status == 204:
            assert response.content == b""
            assert "content-type" not in response.headers
        else:
            assert response.content
            response.json()


# --- alias as {id} ---------------------------------------------------------------------------------------


def test_alias_is_accepted_as_id_on_every_key_endpoint(api: Api) -> None:
    key = api.create_key(aliases=["everywhere"])["id"]
    wrapped = api.post("/api/v2/keys/everywhere/actions/wrap", headers=api.kp()).json()["ciphertext"]
    api.clock.advance(hours=2)
    steps: list[tuple[str, str, Any, int]] = [
        ("GET", "/api/v2/keys/everywhere", None, 200),
        ("GET", "/api/v2/keys/everywhere/metadata", None, 200),
        ("GET", "/api/v2/keys/everywhere/versions", None, 200),
        ("PATCH", "/api/v2/keys/everywhere", {"keyRingID": "default"}, 200),
        ("POST", "/api/v2/keys/everywhere/actions/unwrap", {"ciphertext": wrapped}, 200),
        ("POST", "/api/v2/keys/everywhere/actions/rewrap", {"ciphertext": wrapped}, 200),
        ("POST", "/api/v2/keys/everywhere/actions/rotate", None, 204),
        ("POST", "/api/v2/keys/everywhere/actions/sync", None, 409),
        ("POST", "/api/v2/keys/everywhere?action=wrap", {}, 200),
        ("POST", "/api/v2/keys/everywhere/aliases/second", None, 201),
        ("POST", "/api/v2/keys/everywhere/actions/disable", None, 204),
        ("DELETE", "/api/v2/keys/everywhere", None, 204),
    ]
    for method, path, body, status in steps:
        response = api.request(method, path, json=body, headers=api.kp())
        assert response.status_code == status, (path, response.text)
    api.clock.advance(minutes=1)
    assert api.post("/api/v2/keys/everywhere/restore", headers=api.kp()).status_code == 201
    api.delete("/api/v2/keys/second", headers=api.kp())
    api.clock.advance(hours=5)
    assert api.delete("/api/v2/keys/everywhere/purge", headers=api.kp()).status_code == 204
    assert api.get(f"/api/v2/keys/{key}", headers=api.kp()).status_code == 404


# --- tenant isolation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), KEY_ENDPOINTS)
def test_a_key_of_another_instance_is_not_found_everywhere(
    api: Api, method: str, path: str, body: bytes | None
) -> None:
    key = api.create_key(aliases=["mine-only"])["id"]
    intruder = api.kp(instance="another-instance")
    for ref in (key, "mine-only"):
        response = api.request(method, path.format(id=ref), content=body, headers=intruder)
        assert response.status_code == 404, (method, path, response.text)
        assert reason(response) in ("KEY_NOT_FOUND_ERR", "KEY_NOT_FOUND")
    # and nothing happened to the owner's key
    owner = api.get(f"/api/v2/keys/{key}", headers=api.kp()).json()["resources"][0]
    assert owner["state"] == 1
    assert owner["aliases"] == ["mine-only"]


def test_other_instances_see_no_keys_tokens_or_ciphertexts(api: Api) -> None:
    key = api.create_key()["id"]
    wrapped = api.post(f"/api/v2/keys/{key}/actions/wrap", headers=api.kp()).json()["ciphertext"]
    other = api.kp(instance="other-instance")
    assert api.get("/api/v2/keys", headers=other).json()["metadata"]["collectionTotal"] == 0
    assert api.head("/api/v2/keys", headers=other).headers["key-total"] == "0"
    their_key = api.post("/api/v2/keys", content=create_body(), headers=other).json()["resources"][0]["id"]
    stolen = api.post(f"/api/v2/keys/{their_key}/actions/unwrap", json={"ciphertext": wrapped}, headers=other)
    assert stolen.status_code == 422
    assert api.post("/api/v2/import_token", headers=api.kp()).status_code == 200
    assert api.get("/api/v2/import_token", headers=other).status_code == 404
    # bob in alice's instance is a different principal, not a different tenant
    assert api.get(f"/api/v2/keys/{key}", headers=api.kp("bob-token")).status_code == 200


# --- OpenAPI ------------------------------------------------------------------------------------------


def test_openapi_describes_every_key_endpoint_with_a_summary(api: Api) -> None:
    spec = api.get("/openapi.json").json()
    expected = {
        ("post", "/api/v2/keys"),
        ("get", "/api/v2/keys"),
        ("head", "/api/v2/keys"),
        ("post", "/api/v2/keys_with_policy_overrides"),
        ("get", "/api/v2/keys/{id}"),
        ("post", "/api/v2/keys/{id}"),
        ("patch", "/api/v2/keys/{id}"),
        ("delete", "/api/v2/keys/{id}"),
        ("get", "/api/v2/keys/{id}/metadata"),
        ("delete", "/api/v2/keys/{id}/purge"),
        ("post", "/api/v2/keys/{id}/restore"),
        ("get", "/api/v2/keys/{id}/versions"),
        *(
            ("post", f"/api/v2/keys/{{id}}/actions/{name}")
            for name in (
                "wrap",
                "unwrap",
                "rewrap",
                "rotate",
                "setKeyForDeletion",
                "unsetKeyForDeletion",
                "enable",
                "disable",
                "sync",
            )
        ),
        ("post", "/api/v2/import_token"),
        ("get", "/api/v2/import_token"),
        ("post", "/api/v2/keys/{id}/aliases/{alias}"),
        ("delete", "/api/v2/keys/{id}/aliases/{alias}"),
    }
    for method, path in expected:
        operation = spec["paths"][path][method]
        assert operation.get("summary"), (method, path)
    assert spec["paths"]["/api/v2/keys/{id}"]["post"]["deprecated"] is True
    docs = api.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
