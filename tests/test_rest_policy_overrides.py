"""E4 ``keys_with_policy_overrides``: a create-time rotation policy obeys the rules of
``PUT /keys/{id}/policies`` (E22) — the same request answered the same way in both places.

A standard key cannot take a rotation policy (422 ``KEY_INVALID_STATE_ERR``); a key with imported
material cannot either (400 ``INVALID_FIELD_ERR`` naming ``rotation``). Either way nothing is
created. A generated root key takes it, and an instance rotation policy still creates standard
keys (it simply does not reach them).
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

KEY_TYPE = "application/vnd.ibm.kms.key+json"
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"


def _overrides(api: Api, **resource: Any) -> Any:
    body = {
        "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
        "resources": [{"type": KEY_TYPE, "name": "with-policy", **resource}],
    }
    return api.post("/api/v2/keys_with_policy_overrides", json=body, headers=api.kp())


def _put_rotation(api: Api, key_id: str) -> Any:
    body = {
        "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
        "resources": [{"type": POLICY_TYPE, "rotation": {"enabled": True, "interval_month": 3}}],
    }
    return api.put(f"/api/v2/keys/{key_id}/policies", json=body, headers=api.kp())


def _reason(response: Any) -> dict[str, Any]:
    return response.json()["resources"][0]["reasons"][0]  # type: ignore[no-any-return]


def _key_count(api: Api) -> int:
    return int(api.head("/api/v2/keys", headers=api.kp()).headers["key-total"])


@pytest.mark.parametrize("rotation", [{"enabled": True, "interval_month": 3}, {"enabled": False}])
def test_a_rotation_policy_on_a_standard_key_is_422_as_on_put(api: Api, rotation: dict[str, Any]) -> None:
    standard = api.create_key("standard", extractable=True)["id"]
    put = _put_rotation(api, standard)
    before = _key_count(api)
    created = _overrides(api, extractable=True, rotation=rotation)
    assert put.status_code == created.status_code == 422
    assert _reason(put)["code"] == _reason(created)["code"] == "KEY_INVALID_STATE_ERR"
    assert _reason(created)["message"] == _reason(put)["message"]
    assert created.json()["resources"][0]["errorMsg"] == (
        "Unprocessable Entity: Key could not be created. See 'reasons' for more details."
    )
    assert _key_count(api) == before


def test_a_rotation_policy_on_imported_material_is_400_as_on_put(api: Api) -> None:
    material = base64.b64encode(bytes(range(32))).decode()
    imported = api.create_key("imported", payload=material)["id"]
    put = _put_rotation(api, imported)
    created = _overrides(api, payload=material, rotation={"enabled": True, "interval_month": 3})
    assert put.status_code == created.status_code == 400
    assert _reason(put)["code"] == _reason(created)["code"] == "INVALID_FIELD_ERR"
    assert _reason(created)["target"] == {"type": "field", "name": "rotation"}


def test_a_generated_root_key_takes_the_rotation_policy(api: Api) -> None:
    created = _overrides(
        api, rotation={"enabled": True, "interval_month": 3}, dualAuthDelete={"enabled": True}
    )
    assert created.status_code == 201, created.text
    key = created.json()["resources"][0]
    assert key["rotation"] == {"enabled": True, "interval_month": 3}


def test_a_standard_key_without_overrides_is_created_under_an_instance_rotation_policy(api: Api) -> None:
    body = {
        "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": 1},
        "resources": [
            {"policy_type": "rotation", "policy_data": {"enabled": True, "attributes": {"interval_month": 1}}}
        ],
    }
    assert api.put("/api/v2/instance/policies", json=body, headers=api.kp()).status_code == 204
    created = _overrides(api, extractable=True)
    assert created.status_code == 201, created.text
    assert "rotation" not in created.json()["resources"][0]
