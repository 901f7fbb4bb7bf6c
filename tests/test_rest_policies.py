"""Key policies over raw HTTP (E22 PUT, E23 GET ``/api/v2/keys/{id}/policies``) on SoftHSM2.

The documented statuses (200 body by default, 204 for ``return=minimal``, 410 deleted, 422 not an
active root key), every body error, the Go SDK's request shapes, the policies' effect on the key
(dual authorization gates DELETE), and that another instance never sees or changes them.
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


def policies(*resources: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"collectionType": POLICY, "collectionTotal": len(resources) if total is None else total},
        "resources": [{"type": POLICY, **r} for r in resources],
    }


ROTATION_3 = {"rotation": {"enabled": True, "interval_month": 3}}
DUAL_ON = {"dualAuthDelete": {"enabled": True}}


def reason(response: httpx.Response) -> dict[str, Any]:
    return response.json()["resources"][0]["reasons"][0]  # type: ignore[no-any-return]


def put(api: Api, key_id: str, body: Any, query: str = "", **headers: str) -> httpx.Response:
    return api.put(f"/api/v2/keys/{key_id}/policies{query}", json=body, headers=api.kp(**headers))


def test_put_answers_200_with_the_policies_it_set_in_request_order(api: Api) -> None:
    key = api.create_key()
    api.clock.advance(minutes=2)
    response = put(api, key["id"], policies(DUAL_ON, ROTATION_3), correlation_id="corr-p")
    assert response.status_code == 200, response.text
    assert response.headers["correlation-id"] == "corr-p"
    body = response.json()
    assert body["metadata"] == {"collectionType": POLICY, "collectionTotal": 2}
    dual, rotation = body["resources"]
    assert dual["dualAuthDelete"] == {"enabled": True}
    assert rotation["rotation"] == {"enabled": True, "interval_month": 3}
    for policy, kind in ((dual, "dualAuthDelete"), (rotation, "rotation")):
        assert list(policy) == ["id", "crn", kind, "createdBy", "creationDate", "updatedBy", "lastUpdateDate"]
        assert policy["crn"] == (
            f"crn:v1:bluemix:public:kms:us-south:a/0123456789abcdef0123456789abcdef:{api.instance}:"
            f"policy:{policy['id']}"
        )
        assert (policy["createdBy"], policy["updatedBy"]) == ("IBMid-alice", "IBMid-alice")
        assert policy["creationDate"] == policy["lastUpdateDate"] == "2026-01-01T00:02:00Z"
    assert dual["id"] != rotation["id"]

    listed = api.get(f"/api/v2/keys/{key['id']}/policies", headers=api.kp()).json()
    assert [p.get("rotation", p.get("dualAuthDelete")) for p in listed["resources"]] == [
        {"enabled": True, "interval_month": 3},
        {"enabled": True},
    ]
    assert listed["resources"] == [rotation, dual]  # GET lists rotation first


def test_the_go_sdk_forms_work_without_content_type_and_with_string_booleans(api: Api) -> None:
    key = api.create_key()
    # Deprecated SetPolicy: no query, only interval_month, no Content-Type header at all.
    raw = json.dumps(policies({"rotation": {"interval_month": 6}})).encode()
    response = api.put(f"/api/v2/keys/{key['id']}/policies", content=raw, headers=api.kp())
    assert response.status_code == 200, response.text
    assert response.json()["resources"][0]["rotation"] == {"enabled": True, "interval_month": 6}
    # SetDualAuthDeletePolicy: ?policy=dualAuthDelete; a quoted boolean is tolerated.
    response = put(
        api, key["id"], policies({"dualAuthDelete": {"enabled": "true"}}), "?policy=dualAuthDelete"
    )
    assert response.status_code == 200
    assert response.json()["resources"][0]["dualAuthDelete"] == {"enabled": True}
    response = put(api, key["id"], policies({"rotation": {"enabled": "false"}}), "?policy=rotation")
    assert response.json()["resources"][0]["rotation"] == {"enabled": False, "interval_month": 6}


def test_prefer_minimal_answers_204_without_a_body(api: Api) -> None:
    key = api.create_key()
    response = put(api, key["id"], policies(ROTATION_3), prefer="return=minimal")
    assert response.status_code == 204
    assert response.content == b""
    got = api.get(f"/api/v2/keys/{key['id']}/policies?policy=rotation", headers=api.kp()).json()
    assert got["resources"][0]["rotation"]["interval_month"] == 3


def test_a_second_put_keeps_id_and_creation_and_records_the_updater(api: Api) -> None:
    key = api.create_key()
    first = put(api, key["id"], policies(ROTATION_3)).json()["resources"][0]
    api.clock.advance(hours=1)
    second = put(api, key["id"], policies({"rotation": {"interval_month": 9}}), token="bob-token").json()
    updated = second["resources"][0]
    assert (updated["id"], updated["creationDate"], updated["createdBy"]) == (
        first["id"],
        first["creationDate"],
        "IBMid-alice",
    )
    assert (updated["updatedBy"], updated["lastUpdateDate"]) == ("IBMid-bob", "2026-01-01T01:00:00Z")


def test_get_filters_by_policy_and_lists_nothing_for_a_key_without_policies(api: Api) -> None:
    key = api.create_key()
    empty = api.get(f"/api/v2/keys/{key['id']}/policies", headers=api.kp(correlation_id="g-1"))
    assert empty.status_code == 200
    assert empty.headers["correlation-id"] == "g-1"
    assert empty.json() == {"metadata": {"collectionType": POLICY, "collectionTotal": 0}, "resources": []}
    put(api, key["id"], policies(ROTATION_3, DUAL_ON))
    only = api.get(f"/api/v2/keys/{key['id']}/policies?policy=dualAuthDelete", headers=api.kp()).json()
    assert [list(p)[2] for p in only["resources"]] == ["dualAuthDelete"]
    bad = api.get(f"/api/v2/keys/{key['id']}/policies?policy=allowedIP", headers=api.kp())
    assert (bad.status_code, reason(bad)["code"]) == (400, "INVALID_PARAM_ERR")
    assert reason(bad)["target"] == {"type": "param", "name": "policy"}


def test_policies_appear_on_the_key_and_reach_it_by_alias(api: Api) -> None:
    key = api.create_key(aliases=["policy-alias"])
    assert put(api, "policy-alias", policies(ROTATION_3, DUAL_ON)).status_code == 200
    shown = api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).json()["resources"][0]
    assert shown["rotation"] == {"enabled": True, "interval_month": 3}
    assert shown["dualAuthDelete"]["enabled"] is True


def test_a_dual_auth_policy_gates_delete_over_http(api: Api) -> None:
    key = api.create_key()
    put(api, key["id"], policies(DUAL_ON))
    refused = api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    assert (refused.status_code, reason(refused)["code"]) == (409, "AUTHORIZATIONS_NOT_MET")
    assert (
        api.post(f"/api/v2/keys/{key['id']}/actions/setKeyForDeletion", headers=api.kp()).status_code == 204
    )
    assert api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp(token="bob-token")).status_code == 204


@pytest.mark.parametrize("interval", [-1, 0, 13, "abc", 1.5, True])
def test_interval_month_out_of_range_is_invalid_field(api: Api, interval: Any) -> None:
    key = api.create_key()
    response = put(api, key["id"], policies({"rotation": {"interval_month": interval}}))
    assert response.status_code == 400
    assert reason(response)["code"] == "INVALID_FIELD_ERR"
    assert reason(response)["target"] == {"type": "field", "name": "interval_month"}


def test_enabling_rotation_without_an_interval_is_a_missing_field(api: Api) -> None:
    key = api.create_key()
    response = put(api, key["id"], policies({"rotation": {"enabled": True}}))
    assert (response.status_code, reason(response)["code"]) == (400, "MISSING_FIELD_ERR")


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("?policy=rotation", policies(DUAL_ON)),
        ("?policy=dualAuthDelete", policies(ROTATION_3)),
        ("?policy=rotation", policies(ROTATION_3, DUAL_ON)),
        ("?policy=rotation", policies({**ROTATION_3, **DUAL_ON})),
    ],
)
def test_the_policy_query_must_match_the_body(api: Api, query: str, body: dict[str, Any]) -> None:
    key = api.create_key()
    response = put(api, key["id"], body, query)
    assert response.status_code == 400
    assert reason(response)["code"] == "BODY_QUERY_PARAM_MISMATCH_ERR"


def test_an_unknown_policy_query_is_invalid_param(api: Api) -> None:
    key = api.create_key()
    response = put(api, key["id"], policies(ROTATION_3), "?policy=metrics")
    assert (response.status_code, reason(response)["code"]) == (400, "INVALID_PARAM_ERR")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (None, "NO_BODY_ERR"),
        ({"metadata": {}, "resources": [ROTATION_3]}, "BAD_BODY_ERR"),
        (policies(ROTATION_3, total=2), "COLLECTION_TOTAL_MISMATCH_ERR"),
        (policies({"something": True}), "BAD_BODY_ERR"),
        (policies(ROTATION_3, DUAL_ON, {"rotation": {"interval_month": 1}}), "BAD_BODY_ERR"),
        (policies(ROTATION_3, {"rotation": {"interval_month": 1}}), "BAD_BODY_ERR"),
        (policies({**ROTATION_3, "type": "application/vnd.ibm.kms.key+json"}), "BAD_BODY_ERR"),
        (policies({"dualAuthDelete": {}}), "MISSING_FIELD_ERR"),
        (policies({"dualAuthDelete": {"enabled": "yes"}}), "INVALID_FIELD_ERR"),
        (policies({"dualAuthDelete": True}), "INVALID_FIELD_ERR"),
        (policies({"rotation": 3}), "INVALID_FIELD_ERR"),
        ([ROTATION_3], "BAD_BODY_ERR"),
    ],
)
def test_malformed_bodies_are_400(api: Api, body: Any, code: str) -> None:
    key = api.create_key()
    if body is None:
        response = api.put(f"/api/v2/keys/{key['id']}/policies", headers=api.kp())
    else:
        response = put(api, key["id"], body)
    assert response.status_code == 400, response.text
    assert reason(response)["code"] == code
    assert response.json()["resources"][0]["errorMsg"].startswith(
        "Bad Request: Key policy could not be created."
    )


def test_invalid_json_is_bad_body(api: Api) -> None:
    key = api.create_key()
    response = api.put(f"/api/v2/keys/{key['id']}/policies", content=b"{nope", headers=api.kp())
    assert (response.status_code, reason(response)["code"]) == (400, "BAD_BODY_ERR")


def test_a_standard_or_inactive_key_is_422(api: Api) -> None:
    standard = api.create_key("standard", extractable=True)
    response = put(api, standard["id"], policies(DUAL_ON))
    assert response.status_code == 422
    assert reason(response)["code"] == "KEY_INVALID_STATE_ERR"
    assert (
        reason(response)["message"]
        == "A key must be a root key (non-extractable) in the Activated (1) state."
    )
    assert response.json()["resources"][0]["errorMsg"] == (
        "Unprocessable Entity: Key policy could not be created. See 'reasons' for more details."
    )
    root = api.create_key()
    assert api.post(f"/api/v2/keys/{root['id']}/actions/disable", headers=api.kp()).status_code == 204
    response = put(api, root["id"], policies(ROTATION_3))
    assert (response.status_code, reason(response)["code"]) == (422, "KEY_INVALID_STATE_ERR")


def test_a_deleted_key_is_410_on_put_and_still_readable(api: Api) -> None:
    key = api.create_key()
    put(api, key["id"], policies(ROTATION_3))
    assert api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp()).status_code == 204
    response = put(api, key["id"], policies(DUAL_ON))
    assert (response.status_code, reason(response)["code"]) == (410, "KEY_DELETED_ERR")
    got = api.get(f"/api/v2/keys/{key['id']}/policies", headers=api.kp())
    assert got.status_code == 200
    assert got.json()["resources"][0]["rotation"]["interval_month"] == 3


def test_an_imported_key_takes_no_rotation_policy(api: Api) -> None:
    material = base64.b64encode(os.urandom(32)).decode()
    key = api.create_key("imported", payload=material)
    response = put(api, key["id"], policies(ROTATION_3))
    assert response.status_code == 400
    assert reason(response)["code"] == "INVALID_FIELD_ERR"
    assert reason(response)["target"]["name"] == "rotation"
    assert put(api, key["id"], policies(DUAL_ON)).status_code == 200


def test_unknown_keys_other_instances_and_other_rings_are_404(api: Api) -> None:
    key = api.create_key()
    put(api, key["id"], policies(ROTATION_3))
    for response in (
        put(api, "0b0b0b0b-0000-4000-8000-000000000000", policies(ROTATION_3)),
        put(api, key["id"], policies(DUAL_ON), instance="another-instance"),
        api.get(f"/api/v2/keys/{key['id']}/policies", headers=api.kp(instance="another-instance")),
        put(api, key["id"], policies(DUAL_ON), x_kms_key_ring="some-other-ring"),
        api.get(f"/api/v2/keys/{key['id']}/policies", headers=api.kp(x_kms_key_ring="some-other-ring")),
    ):
        assert response.status_code == 404, response.text
        assert reason(response)["code"] == "KEY_NOT_FOUND_ERR"
    # nothing changed through the foreign calls
    listed = api.get(f"/api/v2/keys/{key['id']}/policies", headers=api.kp(x_kms_key_ring="default")).json()
    assert [list(p)[2] for p in listed["resources"]] == ["rotation"]


def test_credentials_are_checked_first(api: Api) -> None:
    key = api.create_key()
    response = api.put(
        f"/api/v2/keys/{key['id']}/policies",
        json=policies(ROTATION_3),
        headers={"authorization": "Bearer wrong", "bluemix-instance": api.instance},
    )
    assert response.status_code == 401
    assert response.json()["resources"][0]["errorMsg"].startswith("Unauthorized")
