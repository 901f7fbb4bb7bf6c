"""Instance policies (E24 PUT, E25 GET) and the allowed-IP port (E26) over raw HTTP, on SoftHSM2.

Strict body parsing (unknown fields are ``BAD_BODY_ERR``), the ``?policy=`` rules
(``BODY_QUERY_PARAM_MISMATCH_ERR``, ``NUM_COLLECTION_RESOURCE_ERR``), ``lastUpdated``, the
enforced effects on keys created afterwards, and instance isolation.
"""

from __future__ import annotations

import base64
import json
import os
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

POLICY = "application/vnd.ibm.kms.policy+json"
POLICIES = "/api/v2/instance/policies"
PORT = "/api/v2/instance/allowed_ip_port"
KEY = "application/vnd.ibm.kms.key+json"


def body(*resources: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"collectionType": POLICY, "collectionTotal": len(resources) if total is None else total},
        "resources": list(resources),
    }


def policy(kind: str, enabled: Any = True, **attributes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"enabled": enabled}
    if attributes:
        data["attributes"] = attributes
    return {"policy_type": kind, "policy_data": data}


def reason(response: httpx.Response) -> dict[str, Any]:
    return response.json()["resources"][0]["reasons"][0]  # type: ignore[no-any-return]


def put(api: Api, payload: Any, query: str = "", **headers: str) -> httpx.Response:
    return api.put(f"{POLICIES}{query}", json=payload, headers=api.kp(**headers))


def listed(api: Api, query: str = "", **headers: str) -> list[dict[str, Any]]:
    response = api.get(f"{POLICIES}{query}", headers=api.kp(**headers))
    assert response.status_code == 200, response.text
    return response.json()["resources"]  # type: ignore[no-any-return]


def create_key(api: Api, **resource: Any) -> httpx.Response:
    resource.setdefault("name", "a-key")
    payload = {
        "metadata": {"collectionType": KEY, "collectionTotal": 1},
        "resources": [{"type": KEY, **resource}],
    }
    path = "/api/v2/keys_with_policy_overrides" if "dualAuthDelete" in resource else "/api/v2/keys"
    return api.post(path, json=payload, headers=api.kp())


# --- PUT / GET ----------------------------------------------------------------------------------


def test_put_one_policy_is_204_and_get_shows_it_with_last_updated(api: Api) -> None:
    api.clock.advance(minutes=3)
    response = put(api, body(policy("dualAuthDelete")), "?policy=dualAuthDelete", correlation_id="c-i")
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["correlation-id"] == "c-i"
    got = api.get(POLICIES, headers=api.kp(correlation_id="c-g"))
    assert got.headers["correlation-id"] == "c-g"
    assert got.json() == {
        "metadata": {"collectionType": POLICY, "collectionTotal": 1},
        "resources": [
            {
                "policy_type": "dualAuthDelete",
                "policy_data": {"enabled": True},
                "createdBy": "IBMid-alice",
                "creationDate": "2026-01-01T00:03:00Z",
                "updatedBy": "IBMid-alice",
                "lastUpdated": "2026-01-01T00:03:00Z",
            }
        ],
    }


def test_every_type_round_trips_and_get_filters(api: Api) -> None:
    everything = [
        policy("allowedNetwork", allowed_network="private-only"),
        policy("dualAuthDelete", False),
        policy("allowedIP", allowed_ip=["10.0.0.0/8", "192.168.1.0/24"]),
        policy("keyCreateImportAccess", create_standard_key=False),
        policy("metrics"),
        policy("rotation", interval_month=4),
    ]
    assert put(api, body(*everything)).status_code == 204  # several at once, without ?policy=
    shown = listed(api)
    assert [p["policy_type"] for p in shown] == [p["policy_type"] for p in everything]
    data = {p["policy_type"]: p["policy_data"] for p in shown}
    assert data == {
        "allowedNetwork": {"enabled": True, "attributes": {"allowed_network": "private-only"}},
        "dualAuthDelete": {"enabled": False},
        "allowedIP": {"enabled": True, "attributes": {"allowed_ip": ["10.0.0.0/8", "192.168.1.0/24"]}},
        "keyCreateImportAccess": {
            "enabled": True,
            "attributes": {
                "create_root_key": True,
                "create_standard_key": False,
                "import_root_key": True,
                "import_standard_key": True,
                "enforce_token": False,
            },
        },
        "metrics": {"enabled": True},
        "rotation": {"enabled": True, "attributes": {"interval_month": 4}},
    }
    assert [p["policy_type"] for p in listed(api, "?policy=metrics")] == ["metrics"]
    put(api, body(policy("metrics", False)), "?policy=metrics")
    assert listed(api, "?policy=metrics")[0]["policy_data"] == {"enabled": False}


def test_replacing_a_policy_keeps_its_creation(api: Api) -> None:
    put(api, body(policy("metrics")), "?policy=metrics")
    api.clock.advance(hours=1)
    put(api, body(policy("metrics", False)), "?policy=metrics", token="bob-token")
    shown = listed(api, "?policy=metrics")[0]
    assert (shown["createdBy"], shown["creationDate"]) == ("IBMid-alice", "2026-01-01T00:00:00Z")
    assert (shown["updatedBy"], shown["lastUpdated"]) == ("IBMid-bob", "2026-01-01T01:00:00Z")


def test_no_content_type_string_booleans_and_a_get_result_put_back(api: Api) -> None:
    raw = json.dumps(body(policy("keyCreateImportAccess", "true", enforce_token="false"))).encode()
    response = api.put(f"{POLICIES}?policy=keyCreateImportAccess", content=raw, headers=api.kp())
    assert response.status_code == 204, response.text
    shown = listed(api)
    assert shown[0]["policy_data"]["attributes"]["enforce_token"] is False
    # What GET returned, read-only fields included, goes back unchanged.
    assert put(api, body(*shown)).status_code == 204


def test_the_go_sdk_allowed_network_form_with_empty_attributes_disables(api: Api) -> None:
    response = put(
        api,
        body({"policy_type": "allowedNetwork", "policy_data": {"enabled": False, "attributes": {}}}),
        "?policy=allowedNetwork",
    )
    assert response.status_code == 204
    assert listed(api)[0]["policy_data"] == {"enabled": False}


# --- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    [
        {**policy("metrics"), "extra_field": 1},
        {"policy_type": "metrics", "policy_data": {"enabled": True, "extra_field": 1}},
        policy("rotation", interval_month=3, extra_field=1),
        policy("dualAuthDelete", extra_field=1),
    ],
)
def test_unknown_fields_are_bad_body(api: Api, resource: dict[str, Any]) -> None:
    response = put(api, body(resource))
    assert response.status_code == 400
    assert reason(response)["code"] == "BAD_BODY_ERR"
    assert reason(response)["message"] == (
        "Invalid body data was passed. Please ensure the data passed had valid formatting with no "
        'invalid characters: json: unknown field "extra_field"'
    )
    assert listed(api) == []


def test_the_policy_query_must_match_the_one_resource(api: Api) -> None:
    mismatch = put(api, body(policy("metrics")), "?policy=dualAuthDelete")
    assert (mismatch.status_code, reason(mismatch)["code"]) == (400, "BODY_QUERY_PARAM_MISMATCH_ERR")
    two = put(api, body(policy("metrics"), policy("metrics", False)), "?policy=metrics")
    assert (two.status_code, reason(two)["code"]) == (400, "NUM_COLLECTION_RESOURCE_ERR")
    assert reason(two)["message"] == (
        "Only a single instance policy may be created per query parameter. Please pass single resource object"
    )
    for method in (api.put, api.get):
        bad = method(f"{POLICIES}?policy=ipWhitelist", headers=api.kp())
        assert (bad.status_code, reason(bad)["code"]) == (400, "INVALID_PARAM_ERR")
        assert reason(bad)["target"] == {"type": "param", "name": "policy"}
    assert listed(api) == []


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (None, "NO_BODY_ERR"),
        ({"metadata": {}, "resources": [policy("metrics")]}, "BAD_BODY_ERR"),
        (body(policy("metrics"), total=2), "COLLECTION_TOTAL_MISMATCH_ERR"),
        (body(policy("metrics"), policy("metrics", False)), "BAD_BODY_ERR"),
        (body({"policy_data": {"enabled": True}}), "MISSING_FIELD_ERR"),
        (body({"policy_type": "metrics"}), "MISSING_FIELD_ERR"),
        (body({"policy_type": "metrics", "policy_data": {}}), "MISSING_FIELD_ERR"),
        (body({"policy_type": "metrics", "policy_data": True}), "INVALID_FIELD_ERR"),
        (body(policy("ipWhitelist")), "INVALID_FIELD_ERR"),
        (body(policy("metrics", "sometimes")), "INVALID_FIELD_ERR"),
        (body(policy("allowedNetwork", allowed_network="public")), "INVALID_FIELD_ERR"),
        (body(policy("allowedNetwork")), "MISSING_FIELD_ERR"),
        (body(policy("allowedIP", allowed_ip=["not-an-ip/8"])), "INVALID_FIELD_ERR"),
        (body(policy("allowedIP", allowed_ip="10.0.0.0/8")), "INVALID_FIELD_ERR"),
        (body(policy("allowedIP")), "MISSING_FIELD_ERR"),
        (body(policy("allowedIP", False, allowed_ip=["10.0.0.0/8"])), "INVALID_FIELD_ERR"),
        (body(policy("keyCreateImportAccess", create_root_key="nope")), "INVALID_FIELD_ERR"),
        (body(policy("keyCreateImportAccess", False, create_root_key=False)), "INVALID_FIELD_ERR"),
        (body(policy("rotation")), "MISSING_FIELD_ERR"),
        (body(policy("rotation", interval_month=13)), "INVALID_FIELD_ERR"),
        (
            body({**policy("metrics"), "policy_data": {"enabled": True, "attributes": []}}),
            "INVALID_FIELD_ERR",
        ),
    ],
)
def test_malformed_policies_are_400_and_store_nothing(api: Api, payload: Any, code: str) -> None:
    if payload is None:
        response = api.put(POLICIES, headers=api.kp())
    else:
        # A valid policy rides along: nothing of the request may be stored.
        if payload["metadata"] and payload["metadata"]["collectionTotal"] == len(payload["resources"]) == 1:
            payload = body(policy("dualAuthDelete"), *payload["resources"])
        response = put(api, payload)
    assert response.status_code == 400, response.text
    assert reason(response)["code"] == code
    assert response.json()["resources"][0]["errorMsg"].startswith(
        "Bad Request: Instance policy could not be created."
    )
    assert listed(api) == []


# --- E26 ------------------------------------------------------------------------------------------


def test_the_allowed_ip_port_follows_the_allowed_ip_policy(api: Api) -> None:
    empty = api.get(PORT, headers=api.kp(correlation_id="c-p"))
    assert empty.status_code == 200
    assert empty.headers["correlation-id"] == "c-p"
    assert empty.json() == {
        "metadata": {
            "collectionType": "application/vnd.ibm.kms.allowed_ip_metadata+json",
            "collectionTotal": 0,
        },
        "resources": [],
    }
    put(api, body(policy("allowedIP", allowed_ip=["10.0.0.0/8"])), "?policy=allowedIP")
    assert api.get(PORT, headers=api.kp()).json()["resources"] == [{"private_endpoint_port": 8888}]
    assert api.get(PORT, headers=api.kp(instance="another-instance")).json()["resources"] == []
    put(api, body(policy("allowedIP", False)), "?policy=allowedIP")
    assert api.get(PORT, headers=api.kp()).json()["resources"] == []
    assert api.get(PORT, headers={"bluemix-instance": api.instance}).status_code == 401


# --- enforced effects on new keys ---------------------------------------------------------------


def test_key_create_import_access_is_enforced_on_create(api: Api) -> None:
    put(api, body(policy("keyCreateImportAccess", create_root_key=False)), "?policy=keyCreateImportAccess")
    refused = create_key(api)
    assert refused.status_code == 409
    assert reason(refused)["code"] == "KEY_CREATE_IMPORT_ACCESS_ERR"
    assert refused.json()["resources"][0]["errorMsg"] == (
        "Conflict: Key could not be created. See 'reasons' for more details."
    )
    assert create_key(api, extractable=True).status_code == 201
    material = base64.b64encode(os.urandom(32)).decode()
    assert create_key(api, payload=material).status_code == 201  # importing a root key is allowed

    put(api, body(policy("keyCreateImportAccess", enforce_token=True)), "?policy=keyCreateImportAccess")
    plain = create_key(api, payload=material)
    assert (plain.status_code, reason(plain)["code"]) == (409, "KEY_CREATE_IMPORT_ACCESS_ERR")
    assert create_key(api).status_code == 201
    # other instances are not affected
    other = api.post(
        "/api/v2/keys",
        json={"metadata": {"collectionType": KEY, "collectionTotal": 1}, "resources": [{"name": "free"}]},
        headers=api.kp(instance="another-instance"),
    )
    assert other.status_code == 201


def test_dual_auth_and_rotation_instance_policies_apply_to_keys_created_afterwards(api: Api) -> None:
    before = api.create_key("before")
    put(api, body(policy("dualAuthDelete"), policy("rotation", interval_month=2)))
    after = create_key(api).json()["resources"][0]
    assert after["dualAuthDelete"]["enabled"] is True
    assert after["rotation"] == {"enabled": True, "interval_month": 2}
    overridden = create_key(api, dualAuthDelete={"enabled": False}).json()["resources"][0]
    assert overridden["dualAuthDelete"]["enabled"] is False
    old = api.get(f"/api/v2/keys/{before['id']}", headers=api.kp()).json()["resources"][0]
    assert old["dualAuthDelete"]["enabled"] is False
    assert "rotation" not in old
    # the key-level view of the inherited policies
    got = api.get(f"/api/v2/keys/{after['id']}/policies", headers=api.kp()).json()["resources"]
    assert [list(p)[2] for p in got] == ["rotation", "dualAuthDelete"]
    # and the dual-auth policy is real: one principal cannot delete
    refused = api.delete(f"/api/v2/keys/{after['id']}", headers=api.kp())
    assert (refused.status_code, reason(refused)["code"]) == (409, "AUTHORIZATIONS_NOT_MET")


def test_instance_policies_are_invisible_to_other_instances(api: Api) -> None:
    put(api, body(policy("dualAuthDelete"), policy("metrics")))
    assert listed(api, instance="another-instance") == []
    assert len(listed(api)) == 2
