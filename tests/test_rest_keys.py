"""The key resource over raw HTTP (E1–E5, E7–E12), against the real app over SoftHSM2.

Every documented status and reason code of these endpoints, the `prefer` variants, and the
lifecycle timings (30 s restore, 4 h purge, 30 d restore window) driven by the FixedClock.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from hsmbridge.core.store.base import KeyRing
from hsmbridge.rest.representation import format_timestamp

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

KEY_TYPE = "application/vnd.ibm.kms.key+json"


def key_body(*resources: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "collectionType": KEY_TYPE,
            "collectionTotal": len(resources) if total is None else total,
        },
        "resources": [{"type": KEY_TYPE, **r} for r in resources],
    }


def reason(response: httpx.Response) -> str:
    return response.json()["resources"][0]["reasons"][0]["code"]  # type: ignore[no-any-return]


def error_msg(response: httpx.Response) -> str:
    return response.json()["resources"][0]["errorMsg"]  # type: ignore[no-any-return]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def create(api: Api, headers: dict[str, str] | None = None, **resource: Any) -> httpx.Response:
    resource.setdefault("name", "a-key")
    return api.post("/api/v2/keys", json=key_body(resource), headers=headers or api.kp())


# --- E1 create ---------------------------------------------------------------------------------


def test_create_root_key_returns_201_with_the_full_representation(api: Api) -> None:
    response = create(api, name="Root-key", description="A Key Protect key", extractable=False)
    assert response.status_code == 201
    assert response.headers["content-type"] == KEY_TYPE
    body = response.json()
    assert body["metadata"] == {"collectionType": KEY_TYPE, "collectionTotal": 1}
    key = body["resources"][0]
    assert key["type"] == KEY_TYPE
    assert key["name"] == "Root-key"
    assert key["description"] == "A Key Protect key"
    assert key["state"] == 1
    assert key["extractable"] is False
    assert key["imported"] is False
    assert key["keyRingID"] == "default"
    assert key["createdBy"] == "IBMid-alice"
    assert key["keyVersion"]["id"] == key["id"]
    assert key["crn"].endswith(f":{api.instance}:key:{key['id']}")
    assert key["deleted"] is False
    assert "payload" not in key
    assert key["algorithmBitSize"] == 256


def test_create_prefer_minimal_returns_only_the_id(api: Api) -> None:
    response = create(api, headers=api.kp(prefer="return=minimal"))
    assert response.status_code == 201
    assert response.json()["resources"] == [{"id": response.json()["resources"][0]["id"]}]


def test_create_standard_key_payload_only_with_return_representation(api: Api) -> None:
    default = create(api, extractable=True).json()["resources"][0]
    assert "payload" not in default
    rep = create(api, headers=api.kp(prefer="return=representation"), extractable=True)
    key = rep.json()["resources"][0]
    assert len(base64.b64decode(key["payload"])) == 32
    # and GET returns the same material
    got = api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).json()["resources"][0]
    assert got["payload"] == key["payload"]


def test_create_root_key_never_returns_payload_even_with_representation(api: Api) -> None:
    response = create(api, headers=api.kp(prefer="return=representation"), payload=b64(os.urandom(32)))
    key = response.json()["resources"][0]
    assert key["imported"] is True
    assert "payload" not in key


@pytest.mark.parametrize("size", [16, 24, 32])
def test_plain_import_of_root_material(api: Api, size: int) -> None:
    key = create(api, payload=b64(os.urandom(size))).json()["resources"][0]
    assert key["imported"] is True
    assert key["algorithmBitSize"] == size * 8


def test_plain_import_of_a_standard_key_round_trips(api: Api) -> None:
    secret = os.urandom(100)
    key = create(api, extractable=True, payload=b64(secret)).json()["resources"][0]
    got = api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).json()["resources"][0]
    assert base64.b64decode(got["payload"]) == secret


def test_create_with_aliases_and_expiration_date(api: Api) -> None:
    expires = api.clock.now() + timedelta(days=10)
    key = create(api, aliases=["alias-one", "alias_two"], expirationDate=format_timestamp(expires)).json()[
        "resources"
    ][0]
    assert key["aliases"] == ["alias-one", "alias_two"]
    assert key["expirationDate"] == format_timestamp(expires)


def test_create_into_a_key_ring_named_by_the_header(api: Api) -> None:
    response = create(api, headers=api.kp(x_kms_key_ring="no-such-ring"))
    assert response.status_code == 404
    assert reason(response) == "KEY_RING_NOT_FOUND_ERR"


def test_create_missing_extractable_defaults_to_root(api: Api) -> None:
    body = {"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": [{"name": "k1"}]}
    key = api.post("/api/v2/keys", json=body, headers=api.kp()).json()["resources"][0]
    assert key["extractable"] is False


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (None, "NO_BODY_ERR"),
        ([], "BAD_BODY_ERR"),
        ({"resources": [{"name": "abc"}]}, "BAD_BODY_ERR"),
        ({"metadata": {}, "resources": [{"name": "abc"}]}, "BAD_BODY_ERR"),
        (
            {"metadata": {"collectionType": "application/json", "collectionTotal": 1}, "resources": [{}]},
            "BAD_BODY_ERR",
        ),
        (key_body({"name": "a1"}, {"name": "a2"}, total=1), "BAD_BODY_ERR"),
        (key_body({"name": "a1"}, total=2), "COLLECTION_TOTAL_MISMATCH_ERR"),
        (key_body({}), "MISSING_FIELD_ERR"),
        (key_body({"name": "x"}), "INVALID_FIELD_ERR"),
        (key_body({"name": "good", "extractable": "maybe"}), "INVALID_FIELD_ERR"),
        (key_body({"name": "good", "payload": "not base64!"}), "INVALID_FIELD_ERR"),
        (key_body({"name": "good", "payload": b64(os.urandom(20))}), "INVALID_FIELD_ERR"),
        (key_body({"name": "good", "aliases": "one"}), "INVALID_FIELD_ERR"),
        (key_body({"name": "good", "aliases": ["bad alias"]}), "INVALID_FIELD_ERR"),
        (key_body({"name": "good", "expirationDate": "tomorrow"}), "INVALID_FIELD_ERR"),
        (key_body({"name": "good", "expirationDate": "2000-01-01T00:00:00Z"}), "INVALID_FIELD_ERR"),
        (key_body({"name": "good", "encryptedNonce": "AAAA", "iv": "AAAA"}), "MISSING_FIELD_ERR"),
        (
            key_body(
                {
                    "name": "good",
                    "payload": "AAAA",
                    "encryptedNonce": "AAAA",
                    "iv": "AAAA",
                    "encryptionAlgorithm": "RSA",
                }
            ),
            "INVALID_FIELD_ERR",
        ),
    ],
)
def test_create_rejects_malformed_bodies(api: Api, body: Any, code: str) -> None:
    content = b"" if body is None else __import__("json").dumps(body).encode()
    response = api.post("/api/v2/keys", content=content, headers=api.kp())
    assert response.status_code == 400, response.text
    assert reason(response) == code
    assert error_msg(response).startswith("Bad Request: ")


def test_create_invalid_json_is_bad_body(api: Api) -> None:
    response = api.post("/api/v2/keys", content=b"{not json", headers=api.kp())
    assert response.status_code == 400
    assert reason(response) == "BAD_BODY_ERR"


def test_alias_uniqueness_and_quota_on_create(api: Api) -> None:
    create(api, aliases=["taken"])
    duplicate = create(api, aliases=["taken"])
    assert duplicate.status_code == 409
    assert reason(duplicate) == "KEY_ALIAS_NOT_UNIQUE_ERR"
    too_many = create(api, aliases=[f"alias-{n}" for n in range(6)])
    assert too_many.status_code == 409
    assert reason(too_many) == "KEY_ALIAS_QUOTA_ERR"


# --- E4 create with policy overrides ------------------------------------------------------------------


def test_create_with_policy_overrides(api: Api) -> None:
    body = key_body(
        {
            "name": "pol-key",
            "extractable": False,
            "dualAuthDelete": {"enabled": True},
            "rotation": {"enabled": True, "interval_month": 3},
        }
    )
    response = api.post("/api/v2/keys_with_policy_overrides", json=body, headers=api.kp())
    assert response.status_code == 201
    key = response.json()["resources"][0]
    assert key["dualAuthDelete"] == {"enabled": True, "keySetForDeletion": False}
    assert key["rotation"] == {"enabled": True, "interval_month": 3}


@pytest.mark.parametrize(
    "override",
    [
        {"rotation": {"enabled": True, "interval_month": 13}},
        {"rotation": {"enabled": True, "interval_month": -1}},
        {"rotation": {"enabled": True}},
        {"rotation": "monthly"},
        {"dualAuthDelete": {"enabled": "perhaps"}},
        {"dualAuthDelete": True},
    ],
)
def test_policy_overrides_are_validated(api: Api, override: dict[str, Any]) -> None:
    body = key_body({"name": "pol-key", **override})
    response = api.post("/api/v2/keys_with_policy_overrides", json=body, headers=api.kp())
    assert response.status_code == 400
    assert reason(response) in ("INVALID_FIELD_ERR", "MISSING_FIELD_ERR")


def test_plain_create_ignores_policy_overrides(api: Api) -> None:
    key = create(api, dualAuthDelete={"enabled": True}).json()["resources"][0]
    assert key["dualAuthDelete"]["enabled"] is False


# --- E2 list / E3 head ------------------------------------------------------------------------------


def test_list_keys_default_sort_paging_and_no_material(api: Api) -> None:
    ids = sorted(
        create(api, name=f"key-{n}", extractable=n % 2 == 0).json()["resources"][0]["id"] for n in range(5)
    )
    body = api.get("/api/v2/keys", headers=api.kp()).json()
    assert body["metadata"] == {"collectionType": KEY_TYPE, "collectionTotal": 5}
    assert [k["id"] for k in body["resources"]] == ids
    assert all("payload" not in k for k in body["resources"])
    page = api.get("/api/v2/keys?limit=2&offset=1", headers=api.kp()).json()
    assert [k["id"] for k in page["resources"]] == ids[1:3]
    roots = api.get("/api/v2/keys?extractable=false", headers=api.kp()).json()
    assert roots["metadata"]["collectionTotal"] == 2


def test_list_keys_state_search_sort_filter(api: Api) -> None:
    a = create(api, name="alpha-key", aliases=["first"]).json()["resources"][0]
    b = create(api, name="beta-key").json()["resources"][0]
    assert api.delete(f"/api/v2/keys/{b['id']}", headers=api.kp()).status_code == 204
    assert [k["id"] for k in api.get("/api/v2/keys", headers=api.kp()).json()["resources"]] == [a["id"]]
    both = api.get("/api/v2/keys?state=1,5&sort=-state", headers=api.kp()).json()["resources"]
    assert [k["id"] for k in both] == [b["id"], a["id"]]
    found = api.get("/api/v2/keys?search=ALPHA", headers=api.kp()).json()["resources"]
    assert [k["id"] for k in found] == [a["id"]]
    by_alias = api.get("/api/v2/keys?search=alias:exact:first", headers=api.kp()).json()["resources"]
    assert [k["id"] for k in by_alias] == [a["id"]]
    filtered = api.get("/api/v2/keys", params={"filter": "state=5"}, headers=api.kp()).json()["resources"]
    assert [k["id"] for k in filtered] == [b["id"]]
    never_rotated = api.get("/api/v2/keys", params={"filter": "lastRotateDate=none"}, headers=api.kp()).json()
    assert never_rotated["metadata"]["collectionTotal"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=5001",
        "offset=-1",
        "state=4",
        "state=1,",
        "extractable=maybe",
        "sort=name",
        "filter=color=red",
        "state=1&filter=state=1",
    ],
)
def test_list_keys_bad_parameters_are_invalid_param(api: Api, query: str) -> None:
    response = api.get(f"/api/v2/keys?{query}", headers=api.kp())
    assert response.status_code == 400
    assert reason(response) == "INVALID_PARAM_ERR"
    assert response.json()["resources"][0]["reasons"][0]["target"]["type"] == "param"


def test_list_keys_filters_by_key_ring_header(api: Api) -> None:
    create(api)
    assert (
        api.get("/api/v2/keys", headers=api.kp(x_kms_key_ring="default")).json()["metadata"][
            "collectionTotal"
        ]
        == 1
    )
    assert (
        api.get("/api/v2/keys", headers=api.kp(x_kms_key_ring="other")).json()["metadata"]["collectionTotal"]
        == 0
    )


def test_head_keys_returns_key_total_and_no_body(api: Api) -> None:
    for n in range(3):
        create(api, name=f"key-{n}", extractable=n == 0)
    response = api.head("/api/v2/keys", headers=api.kp())
    assert response.status_code == 200
    assert response.headers["key-total"] == "3"
    assert response.content == b""
    assert api.head("/api/v2/keys?extractable=true", headers=api.kp()).headers["key-total"] == "1"
    assert api.head("/api/v2/keys?state=5", headers=api.kp()).headers["key-total"] == "0"
    assert api.head("/api/v2/keys?state=9", headers=api.kp()).status_code == 400


def test_expired_keys_are_listed_as_deactivated(api: Api) -> None:
    expires = api.clock.now() + timedelta(hours=1)
    key = create(api, expirationDate=format_timestamp(expires)).json()["resources"][0]
    api.clock.advance(hours=2)
    listed = api.get("/api/v2/keys?state=3", headers=api.kp()).json()["resources"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).json()["resources"][0]["state"] == 3


# --- E5 get / E9 metadata -------------------------------------------------------------------------------


def test_get_key_by_id_and_by_alias(api: Api) -> None:
    key = create(api, aliases=["by-alias"]).json()["resources"][0]
    by_id = api.get(f"/api/v2/keys/{key['id']}", headers=api.kp())
    by_alias = api.get("/api/v2/keys/by-alias", headers=api.kp())
    assert by_id.status_code == by_alias.status_code == 200
    assert by_id.headers["content-type"] == "application/json"
    assert by_id.json()["resources"][0]["id"] == by_alias.json()["resources"][0]["id"] == key["id"]
    assert "payload" not in by_id.json()["resources"][0]


def test_get_unknown_key_is_404(api: Api) -> None:
    response = api.get("/api/v2/keys/6f1e4a4c-2f0e-4c43-9f35-6a2c8f7f8d11", headers=api.kp())
    assert response.status_code == 404
    assert reason(response) == "KEY_NOT_FOUND_ERR"
    assert error_msg(response) == (
        "Not Found: The key could not be found. Verify that the key ID specified is valid."
    )
    assert api.get("/api/v2/keys/no-such-alias", headers=api.kp()).status_code == 404


def test_get_deleted_key_is_200_without_version_date_or_payload(api: Api) -> None:
    key = create(api, extractable=True).json()["resources"][0]
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    got = api.get(f"/api/v2/keys/{key['id']}", headers=api.kp())
    assert got.status_code == 200
    resource = got.json()["resources"][0]
    assert resource["state"] == 5
    assert resource["deleted"] is True
    assert "creationDate" not in resource["keyVersion"]
    assert "payload" not in resource


def test_metadata_never_has_payload_and_says_key_not_found(api: Api) -> None:
    key = create(api, extractable=True).json()["resources"][0]
    meta = api.get(f"/api/v2/keys/{key['id']}/metadata", headers=api.kp())
    assert meta.status_code == 200
    assert "payload" not in meta.json()["resources"][0]
    missing = api.get("/api/v2/keys/unknown-alias/metadata", headers=api.kp())
    assert missing.status_code == 404
    assert reason(missing) == "KEY_NOT_FOUND"
    assert "Key metadata could not be retrieved" in error_msg(missing)


def test_key_ring_header_on_single_key_calls_must_name_the_keys_ring(api: Api) -> None:
    key = create(api).json()["resources"][0]
    assert api.get(f"/api/v2/keys/{key['id']}", headers=api.kp(x_kms_key_ring="default")).status_code == 200
    other = api.get(f"/api/v2/keys/{key['id']}", headers=api.kp(x_kms_key_ring="elsewhere"))
    assert other.status_code == 404
    assert reason(other) == "KEY_NOT_FOUND_ERR"


# --- E7 patch ---------------------------------------------------------------------------------------------


def _make_ring(api: Api, ring: str) -> None:
    """The ring as the key-ring service would create it (E40 is another module's)."""
    with api.services.store.transaction() as tx:
        tx.ensure_tenant(api.instance, api.clock.now())
        tx.create_key_ring(KeyRing(ring, api.instance, api.clock.now(), "IBMid-alice"))


def test_patch_moves_a_key_between_rings(api: Api) -> None:
    key = create(api).json()["resources"][0]
    _make_ring(api, "ring-two")
    # The Go SDK spells the field KeyRingID and sends no Content-Type.
    moved = api.patch(f"/api/v2/keys/{key['id']}", content=b'{"KeyRingID": "ring-two"}', headers=api.kp())
    assert moved.status_code == 200
    assert moved.json()["resources"][0]["keyRingID"] == "ring-two"
    # now the header must name the new ring
    stale = api.patch(
        f"/api/v2/keys/{key['id']}", json={"keyRingID": "default"}, headers=api.kp(x_kms_key_ring="default")
    )
    assert stale.status_code == 404
    back = api.patch(
        f"/api/v2/keys/{key['id']}", json={"keyRingID": "default"}, headers=api.kp(x_kms_key_ring="ring-two")
    )
    assert back.status_code == 200
    assert back.json()["resources"][0]["keyRingID"] == "default"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"", 400, "NO_BODY_ERR"),
        (b"{}", 400, "MISSING_FIELD_ERR"),
        (b'{"keyRingID": 7}', 400, "INVALID_FIELD_ERR"),
        (b'{"keyRingID": "bad ring!"}', 400, "INVALID_FIELD_ERR"),
        (b'{"keyRingID": "missing-ring"}', 404, "KEY_RING_NOT_FOUND_ERR"),
    ],
)
def test_patch_errors(api: Api, body: bytes, status: int, code: str) -> None:
    key = create(api).json()["resources"][0]
    response = api.patch(f"/api/v2/keys/{key['id']}", content=body, headers=api.kp())
    assert response.status_code == status
    assert reason(response) == code


def test_patch_of_a_deleted_key_is_410(api: Api) -> None:
    key = create(api).json()["resources"][0]
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    response = api.patch(f"/api/v2/keys/{key['id']}", json={"keyRingID": "default"}, headers=api.kp())
    assert response.status_code == 410
    assert reason(response) == "KEY_DELETED_ERR"


# --- E8 delete --------------------------------------------------------------------------------------------


def test_delete_defaults_to_204_with_an_empty_body(api: Api) -> None:
    key = create(api).json()["resources"][0]
    response = api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp(correlation_id="c-1"))
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["correlation-id"] == "c-1"
    again = api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    assert again.status_code == 410
    assert reason(again) == "KEY_DELETED_ERR"


def test_delete_with_representation_returns_the_deletion_fields(api: Api) -> None:
    key = create(api).json()["resources"][0]
    response = api.delete(
        f"/api/v2/keys/{key['id']}?force=true", headers=api.kp(prefer="return=representation")
    )
    assert response.status_code == 200
    deleted = response.json()["resources"][0]
    now = api.clock.now()
    assert deleted["state"] == 5
    assert deleted["deletedBy"] == "IBMid-alice"
    assert deleted["deletionDate"] == format_timestamp(now)
    assert deleted["restoreAllowed"] is False  # not before 30 s
    assert deleted["restoreExpirationDate"] == format_timestamp(now + timedelta(days=30))
    assert deleted["purgeAllowed"] is False
    assert deleted["purgeAllowedFrom"] == format_timestamp(now + timedelta(hours=4))
    assert deleted["purgeScheduledOn"] == format_timestamp(now + timedelta(days=90))


def test_delete_minimal_and_bad_force(api: Api) -> None:
    key = create(api).json()["resources"][0]
    bad = api.delete(f"/api/v2/keys/{key['id']}?force=sure", headers=api.kp())
    assert bad.status_code == 400
    assert reason(bad) == "INVALID_PARAM_ERR"
    assert api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp(prefer="return=minimal")).status_code == 204


def test_dual_authorization_delete_needs_a_second_principal(api: Api) -> None:
    body = key_body({"name": "dual", "dualAuthDelete": {"enabled": True}})
    key = api.post("/api/v2/keys_with_policy_overrides", json=body, headers=api.kp()).json()["resources"][0]
    refused = api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    assert refused.status_code == 409
    assert reason(refused) == "AUTHORIZATIONS_NOT_MET"
    assert error_msg(refused).startswith("Conflict: 1 prior authorization(s) are required for deletion")
    assert (
        api.post(f"/api/v2/keys/{key['id']}/actions/setKeyForDeletion", headers=api.kp()).status_code == 204
    )
    same_user = api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    assert same_user.status_code == 409
    assert api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp("bob-token")).status_code == 204


# --- E10 purge ------------------------------------------------------------------------------------------


def test_purge_timing_and_afterwards_404(api: Api) -> None:
    key = create(api).json()["resources"][0]
    active = api.delete(f"/api/v2/keys/{key['id']}/purge", headers=api.kp())
    assert active.status_code == 409
    assert reason(active) == "KEY_ACTION_INVALID_STATE_ERR"
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(hours=4, seconds=-1)
    early = api.delete(f"/api/v2/keys/{key['id']}/purge", headers=api.kp())
    assert early.status_code == 409
    assert reason(early) == "REQ_TOO_EARLY_ERR"
    api.clock.advance(seconds=1)
    purged = api.delete(f"/api/v2/keys/{key['id']}/purge", headers=api.kp(prefer="return=representation"))
    assert purged.status_code == 200
    resource = purged.json()["resources"][0]
    assert resource["purgeAllowed"] is True
    assert "restoreAllowed" not in resource
    assert api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).status_code == 404


def test_purge_default_is_204(api: Api) -> None:
    key = create(api).json()["resources"][0]
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(hours=5)
    response = api.delete(f"/api/v2/keys/{key['id']}/purge", headers=api.kp())
    assert response.status_code == 204
    assert response.content == b""


# --- E11 restore -----------------------------------------------------------------------------------------


def test_restore_timing_and_result(api: Api) -> None:
    key = create(api).json()["resources"][0]
    not_deleted = api.post(f"/api/v2/keys/{key['id']}/restore", headers=api.kp())
    assert not_deleted.status_code == 409
    assert reason(not_deleted) == "KEY_ACTION_INVALID_STATE_ERR"
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(seconds=29)
    early = api.post(f"/api/v2/keys/{key['id']}/restore", headers=api.kp())
    assert early.status_code == 409
    assert reason(early) == "REQ_TOO_EARLY_ERR"
    api.clock.advance(seconds=1)
    restored = api.post(f"/api/v2/keys/{key['id']}/restore", headers=api.kp())
    assert restored.status_code == 201
    assert restored.headers["content-type"] == KEY_TYPE
    resource = restored.json()["resources"][0]
    assert resource["state"] == 1
    assert resource["deleted"] is False
    # and it works again
    wrap = api.post(f"/api/v2/keys/{key['id']}/actions/wrap", json={}, headers=api.kp())
    assert wrap.status_code == 200


def test_restore_window_and_expired_keys(api: Api) -> None:
    key = create(api).json()["resources"][0]
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(days=30)
    late = api.post(f"/api/v2/keys/{key['id']}/restore", headers=api.kp())
    assert late.status_code == 400
    assert reason(late) == "KEY_RESTORE_EXPIRED"
    expiring = create(api, expirationDate=format_timestamp(api.clock.now() + timedelta(minutes=5))).json()[
        "resources"
    ][0]
    api.delete(f"/api/v2/keys/{expiring['id']}", headers=api.kp())
    api.clock.advance(minutes=6)
    expired = api.post(f"/api/v2/keys/{expiring['id']}/restore", headers=api.kp())
    assert expired.status_code == 400
    assert reason(expired) == "KEY_EXPIRED_ERR"


def _restore_body(**resource: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "collectionType": "application/vnd.ibm.kms.key_action_restore+json",
            "collectionTotal": 1,
        },
        "resources": [resource],
    }


def test_restore_with_the_same_plain_material(api: Api) -> None:
    material = os.urandom(32)
    key = create(api, payload=b64(material)).json()["resources"][0]
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(minutes=1)
    other = api.post(
        f"/api/v2/keys/{key['id']}/restore", json=_restore_body(payload=b64(os.urandom(32))), headers=api.kp()
    )
    assert other.status_code == 400
    assert reason(other) == "INVALID_FIELD_ERR"
    assert other.json()["resources"][0]["reasons"][0]["target"]["name"] == "payload"
    assert api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).json()["resources"][0]["state"] == 5
    same = api.post(
        f"/api/v2/keys/{key['id']}/restore", json=_restore_body(payload=b64(material)), headers=api.kp()
    )
    assert same.status_code == 201, same.text


def test_restore_with_material_of_a_standard_key(api: Api) -> None:
    secret = os.urandom(48)
    key = create(api, extractable=True, payload=b64(secret)).json()["resources"][0]
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(minutes=1)
    wrong = api.post(
        f"/api/v2/keys/{key['id']}/restore", json={"payload": b64(os.urandom(48))}, headers=api.kp()
    )
    assert wrong.status_code == 400
    same = api.post(f"/api/v2/keys/{key['id']}/restore", json={"payload": b64(secret)}, headers=api.kp())
    assert same.status_code == 201


def test_restore_with_material_of_a_generated_key_is_refused(api: Api) -> None:
    key = create(api).json()["resources"][0]
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(minutes=1)
    response = api.post(
        f"/api/v2/keys/{key['id']}/restore", json=_restore_body(payload=b64(os.urandom(32))), headers=api.kp()
    )
    assert response.status_code == 400
    assert reason(response) == "INVALID_FIELD_ERR"
    assert api.post(f"/api/v2/keys/{key['id']}/restore", json={}, headers=api.kp()).status_code == 201


def test_a_deleted_expired_key_cannot_be_restored(api: Api) -> None:
    key = create(api, expirationDate=format_timestamp(api.clock.now() + timedelta(days=40))).json()[
        "resources"
    ][0]
    api.clock.advance(days=41)
    assert api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).json()["resources"][0]["state"] == 3
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(minutes=1)
    assert api.post(f"/api/v2/keys/{key['id']}/restore", headers=api.kp()).status_code == 400


def test_restore_prefer_minimal(api: Api) -> None:
    key = create(api).json()["resources"][0]
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    api.clock.advance(minutes=1)
    response = api.post(f"/api/v2/keys/{key['id']}/restore", headers=api.kp(prefer="return=minimal"))
    assert response.status_code == 201
    assert response.json()["resources"] == [{"id": key["id"]}]


# --- E12 versions ---------------------------------------------------------------------------------------


def test_versions_newest_first_with_paging_and_total(api: Api) -> None:
    key = create(api).json()["resources"][0]
    for _ in range(2):
        api.clock.advance(hours=1)
        assert api.post(f"/api/v2/keys/{key['id']}/actions/rotate", headers=api.kp()).status_code == 204
    body = api.get(f"/api/v2/keys/{key['id']}/versions?totalCount=true", headers=api.kp()).json()
    assert body["metadata"]["collectionTotal"] == 3
    assert body["metadata"]["totalCount"] == 3
    versions = body["resources"]
    assert versions[-1]["id"] == key["id"]
    current = api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).json()["resources"][0]["keyVersion"]
    assert versions[0] == current
    page = api.get(f"/api/v2/keys/{key['id']}/versions?limit=1&offset=1", headers=api.kp()).json()
    assert page["metadata"] == {
        "collectionType": "application/vnd.ibm.kms.key.version+json",
        "collectionTotal": 1,
    }
    assert page["resources"][0]["id"] == versions[1]["id"]


def test_versions_state_rules(api: Api) -> None:
    key = create(api).json()["resources"][0]
    api.post(f"/api/v2/keys/{key['id']}/actions/disable", headers=api.kp())
    suspended = api.get(f"/api/v2/keys/{key['id']}/versions", headers=api.kp())
    assert suspended.status_code == 409
    assert reason(suspended) == "KEY_ACTION_INVALID_STATE_ERR"
    assert (
        api.get(f"/api/v2/keys/{key['id']}/versions?allKeyStates=true", headers=api.kp()).status_code == 200
    )
    api.delete(f"/api/v2/keys/{key['id']}", headers=api.kp())
    gone = api.get(f"/api/v2/keys/{key['id']}/versions", headers=api.kp())
    assert gone.status_code == 410
    assert (
        api.get(f"/api/v2/keys/{key['id']}/versions?allKeyStates=true", headers=api.kp()).status_code == 200
    )
    bad = api.get(f"/api/v2/keys/{key['id']}/versions?limit=0", headers=api.kp())
    assert bad.status_code == 400
    assert reason(bad) == "INVALID_PARAM_ERR"
