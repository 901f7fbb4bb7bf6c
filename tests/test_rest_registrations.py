"""Registrations over raw HTTP (E29–E35) against the real app over SoftHSM2.

Create/merge/replace/delete with URL-encoded CRNs, both body shapes and string booleans, every
documented error code, both list endpoints with their CRN query, the effect on key deletion
(``PROTECTED_RESOURCE_ERR``, ``PREV_KEY_DEL_ERR``, ``force``), the deprecated deactivate, and
that another instance never sees or touches a registration.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

REGISTRATION = "application/vnd.ibm.kms.registration+json"
INPUT = "application/vnd.ibm.kms.registration_input+json"
BASE = "crn:v1:bluemix:public:cloud-object-storage:global:a/00000000000000000000000000000000"
INSTANCE = "feddecaf-0000-0000-0000-1234567890ab"
CRN = f"{BASE}:{INSTANCE}::bucket"
OTHER_INSTANCE = "another-instance"


def crn_of(name: str, instance: str = INSTANCE) -> str:
    return f"{BASE}:{instance}:bucket:{name}"


def url(key_id: str, crn: str = CRN) -> str:
    return f"/api/v2/keys/{key_id}/registrations/{quote(crn, safe='')}"


def inputs(**fields: Any) -> dict[str, Any]:
    return {"metadata": {"collectionType": INPUT, "collectionTotal": 1}, "resources": [fields]}


def reason(response: httpx.Response) -> dict[str, Any]:
    return response.json()["resources"][0]["reasons"][0]  # type: ignore[no-any-return]


def register(api: Api, key_id: str, crn: str = CRN, **fields: Any) -> httpx.Response:
    return api.post(url(key_id, crn), json=inputs(**fields), headers=api.kp())


def crns(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["resourceCrn"].rsplit(":", 1)[1] for r in response.json()["resources"]]


# --- E29 create ---------------------------------------------------------------------------------


def test_create_answers_201_with_the_registration(api: Api) -> None:
    key = api.create_key()
    api.clock.advance(minutes=1)
    response = api.post(
        url(key["id"]),
        json=inputs(preventKeyDeletion="false", description="A resource registration on a Key Protect key"),
        headers=api.kp(correlation_id="c-r"),
    )
    assert response.status_code == 201, response.text
    assert response.headers["correlation-id"] == "c-r"
    assert response.json() == {
        "metadata": {"collectionType": REGISTRATION, "collectionTotal": 1},
        "resources": [
            {
                "keyId": key["id"],
                "resourceCrn": CRN,
                "createdBy": "IBMid-alice",
                "creationDate": "2026-01-01T00:01:00Z",
                "updatedBy": "IBMid-alice",
                "lastUpdated": "2026-01-01T00:01:00Z",
                "description": "A resource registration on a Key Protect key",
                "preventKeyDeletion": False,
                "keyVersion": {"id": key["keyVersion"]["id"], "creationDate": "2026-01-01T00:00:00Z"},
            }
        ],
    }


def test_create_is_idempotent_for_identical_properties_and_409_for_different_ones(api: Api) -> None:
    key = api.create_key()
    first = register(api, key["id"], description="d", registrationMetadata="meta")
    assert first.status_code == 201
    assert first.json()["resources"][0]["registrationMetadata"] == "meta"
    api.clock.advance(minutes=5)
    again = register(api, key["id"], description="d", registrationMetadata="meta")
    assert again.status_code == 200
    assert again.json() == first.json()
    different = register(
        api, key["id"], description="d", registrationMetadata="meta", preventKeyDeletion=True
    )
    assert (different.status_code, reason(different)["code"]) == (409, "REGISTRATION_DUP_ERR")
    assert reason(different)["message"] == "Registration already exists"


def test_create_accepts_a_bare_body_no_body_and_no_content_type(api: Api) -> None:
    key = api.create_key()
    raw = json.dumps({"preventKeyDeletion": True}).encode()
    bare = api.post(url(key["id"], crn_of("bare")), content=raw, headers=api.kp())
    assert bare.status_code == 201, bare.text
    assert bare.json()["resources"][0]["preventKeyDeletion"] is True
    none = api.post(url(key["id"], crn_of("none")), headers=api.kp())
    assert none.status_code == 201
    assert none.json()["resources"][0]["preventKeyDeletion"] is False
    assert "description" not in none.json()["resources"][0]


def test_a_twice_encoded_crn_is_decoded_once_more(api: Api) -> None:
    key = api.create_key()
    twice = quote(quote(crn_of("double"), safe=""), safe="")
    response = api.post(f"/api/v2/keys/{key['id']}/registrations/{twice}", headers=api.kp())
    assert response.status_code == 201, response.text
    assert response.json()["resources"][0]["resourceCrn"] == crn_of("double")


@pytest.mark.parametrize(
    ("crn", "message"),
    [
        (f"{CRN}:extra", "The param 'urlEncodedResourceCRN' must be: specified to no more than 10 segments"),
        (BASE, "The param 'urlEncodedResourceCRN' must be: specified to at least the service instance."),
        (
            f"{BASE}::bucket:b",
            "The param 'urlEncodedResourceCRN' must be: specified to at least the service instance.",
        ),
        (crn_of("b*"), "The param 'urlEncodedResourceCRN' must be: a CRN without wildcards"),
    ],
)
def test_bad_crns_are_invalid_param(api: Api, crn: str, message: str) -> None:
    key = api.create_key()
    for method in ("POST", "PATCH", "PUT", "DELETE"):
        response = api.request(method, url(key["id"], crn), headers=api.kp())
        assert response.status_code == 400, (method, response.text)
        assert reason(response)["code"] == "INVALID_PARAM_ERR"
        assert reason(response)["message"] == message
        assert reason(response)["target"] == {"type": "param", "name": "urlEncodedResourceCRN"}


def test_create_needs_an_existing_active_root_key(api: Api) -> None:
    missing = register(api, "0b0b0b0b-0000-4000-8000-000000000000")
    assert (missing.status_code, reason(missing)["code"]) == (404, "KEY_NOT_FOUND")
    assert missing.json()["resources"][0]["errorMsg"] == (
        "Not Found: Registration could not be created. See 'reasons' for more details."
    )
    standard = api.create_key("standard", extractable=True)
    response = register(api, standard["id"])
    assert (response.status_code, reason(response)["code"]) == (422, "KEY_ROOT_REQ_REG_ERR")
    disabled = api.create_key()
    api.post(f"/api/v2/keys/{disabled['id']}/actions/disable", headers=api.kp())
    response = register(api, disabled["id"])
    assert (response.status_code, reason(response)["code"]) == (422, "KEY_INVALID_STATE_ERR")
    deleted = api.create_key()
    api.delete(f"/api/v2/keys/{deleted['id']}", headers=api.kp())
    response = register(api, deleted["id"])
    assert (response.status_code, reason(response)["code"]) == (422, "KEY_INVALID_STATE_ERR")


@pytest.mark.parametrize(
    ("fields", "code", "target"),
    [
        ({"preventKeyDeletion": "maybe"}, "INVALID_FIELD_ERR", "preventKeyDeletion"),
        ({"description": 5}, "INVALID_FIELD_ERR", "description"),
        ({"registrationMetadata": {"an": "object"}}, "INVALID_FIELD_ERR", "registrationMetadata"),
        ({"description": "x" * 1025}, "INVALID_FIELD_ERR", "description"),
    ],
)
def test_bad_fields_are_400(api: Api, fields: dict[str, Any], code: str, target: str) -> None:
    key = api.create_key()
    response = register(api, key["id"], **fields)
    assert (response.status_code, reason(response)["code"]) == (400, code)
    assert reason(response)["target"]["name"] == target


def test_bad_envelopes_are_400(api: Api) -> None:
    key = api.create_key()
    mismatch = api.post(
        url(key["id"]),
        json={"metadata": {"collectionType": INPUT, "collectionTotal": 2}, "resources": [{}]},
        headers=api.kp(),
    )
    assert (mismatch.status_code, reason(mismatch)["code"]) == (400, "COLLECTION_TOTAL_MISMATCH_ERR")
    broken = api.post(url(key["id"]), content=b"[1, 2]", headers=api.kp())
    assert (broken.status_code, reason(broken)["code"]) == (400, "BAD_BODY_ERR")


# --- E30 / E31 / E32 ------------------------------------------------------------------------------


def test_patch_merges_only_the_given_properties(api: Api) -> None:
    key = api.create_key()
    register(api, key["id"], description="kept", registrationMetadata="m")
    api.clock.advance(minutes=2)
    response = api.patch(
        url(key["id"]), json={"preventKeyDeletion": "true"}, headers=api.kp(token="bob-token")
    )
    assert response.status_code == 200, response.text
    merged = response.json()["resources"][0]
    assert (merged["description"], merged["registrationMetadata"], merged["preventKeyDeletion"]) == (
        "kept",
        "m",
        True,
    )
    assert (merged["createdBy"], merged["updatedBy"], merged["lastUpdated"]) == (
        "IBMid-alice",
        "IBMid-bob",
        "2026-01-01T00:02:00Z",
    )
    collection = api.patch(url(key["id"]), json=inputs(description="via collection"), headers=api.kp())
    assert collection.json()["resources"][0]["description"] == "via collection"
    missing = api.patch(url(key["id"], crn_of("nope")), json={}, headers=api.kp())
    assert (missing.status_code, reason(missing)["code"]) == (404, "REGISTRATION_NOT_FOUND_ERR")


def test_put_replaces_and_moves_the_key_version_forward_only(api: Api) -> None:
    key = api.create_key()
    register(api, key["id"], description="old", preventKeyDeletion=True)
    api.clock.advance(hours=2)
    assert api.post(f"/api/v2/keys/{key['id']}/actions/rotate", headers=api.kp()).status_code == 204
    new_version = api.get(f"/api/v2/keys/{key['id']}", headers=api.kp()).json()["resources"][0]["keyVersion"]
    new_version.pop("keyCheckValue")  # GET key's extra field; a registration names the version only
    replaced = api.put(url(key["id"]), json=inputs(keyVersionId=new_version["id"]), headers=api.kp())
    assert replaced.status_code == 200, replaced.text
    shown = replaced.json()["resources"][0]
    assert "description" not in shown
    assert shown["preventKeyDeletion"] is False
    assert shown["keyVersion"] == new_version
    back = api.put(url(key["id"]), json=inputs(keyVersionId=key["keyVersion"]["id"]), headers=api.kp())
    assert (back.status_code, reason(back)["code"]) == (422, "KEY_VERSION_INVALID")
    foreign = api.put(url(key["id"]), json=inputs(keyVersionId=api.create_key()["id"]), headers=api.kp())
    assert (foreign.status_code, reason(foreign)["code"]) == (422, "KEY_VERSION_INVALID")
    missing = api.put(url(key["id"], crn_of("nope")), json=inputs(), headers=api.kp())
    assert (missing.status_code, reason(missing)["code"]) == (404, "REGISTRATION_NOT_FOUND_ERR")


def test_delete_answers_204_or_the_registration_with_prefer(api: Api) -> None:
    key = api.create_key()
    register(api, key["id"])
    register(api, key["id"], crn_of("second"))
    gone = api.delete(url(key["id"]), headers=api.kp(correlation_id="c-d"))
    assert (gone.status_code, gone.content, gone.headers["correlation-id"]) == (204, b"", "c-d")
    shown = api.delete(url(key["id"], crn_of("second")), headers=api.kp(prefer="return=representation"))
    assert shown.status_code == 200
    assert shown.json()["resources"][0]["resourceCrn"] == crn_of("second")
    again = api.delete(url(key["id"]), headers=api.kp())
    assert (again.status_code, reason(again)["code"]) == (404, "REGISTRATION_NOT_FOUND_ERR")
    assert crns(api.get(f"/api/v2/keys/{key['id']}/registrations", headers=api.kp())) == []


# --- E34 / E35 lists ------------------------------------------------------------------------------


@pytest.fixture
def registered(api: Api) -> dict[str, str]:
    """k1 in default (a, b-1 with retention), k2 in ring-2 (b-2, and c under another instance)."""
    assert api.post("/api/v2/key_rings/ring-2", headers=api.kp()).status_code == 201
    k1 = api.create_key("key-one")["id"]
    k2 = api.post(
        "/api/v2/keys",
        json={
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "key-two"}],
        },
        headers=api.kp(x_kms_key_ring="ring-2"),
    ).json()["resources"][0]["id"]
    for key_id, crn, prevent in (
        (k1, crn_of("a"), False),
        (k1, crn_of("b-1"), True),
        (k2, crn_of("b-2"), False),
        (k2, crn_of("c", "other-instance"), False),
    ):
        assert register(api, key_id, crn, preventKeyDeletion=prevent).status_code == 201
        api.clock.advance(seconds=1)
    return {"k1": k1, "k2": k2}


def test_list_a_keys_registrations_with_filters_and_paging(api: Api, registered: dict[str, str]) -> None:
    path = f"/api/v2/keys/{registered['k1']}/registrations"
    everything = api.get(path, headers=api.kp(correlation_id="c-l"))
    assert everything.headers["correlation-id"] == "c-l"
    assert crns(everything) == ["a", "b-1"]
    assert everything.json()["metadata"] == {"collectionType": REGISTRATION, "collectionTotal": 2}
    assert crns(api.get(f"{path}?preventKeyDeletion=true", headers=api.kp())) == ["b-1"]
    page = api.get(f"{path}?limit=1&offset=1&totalCount=true", headers=api.kp())
    assert crns(page) == ["b-1"]
    assert page.json()["metadata"]["totalCount"] == 2
    query = quote(f"{BASE}:{INSTANCE}:bucket:b*", safe="")
    assert crns(api.get(f"{path}?urlEncodedResourceCRNQuery={query}", headers=api.kp())) == ["b-1"]


def test_list_any_keys_registrations_by_crn_query_and_ring(api: Api, registered: dict[str, str]) -> None:
    path = "/api/v2/keys/registrations"
    assert crns(api.get(path, headers=api.kp())) == ["a", "b-1", "b-2", "c"]
    query = quote(f"{BASE}:{INSTANCE}", safe="")
    assert crns(api.get(f"{path}?urlEncodedResourceCRNQuery={query}", headers=api.kp())) == [
        "a",
        "b-1",
        "b-2",
    ]
    query = quote(f"{BASE}:{INSTANCE}:bucket:b-*", safe="")
    assert crns(api.get(f"{path}?urlEncodedResourceCRNQuery={query}", headers=api.kp())) == ["b-1", "b-2"]
    assert crns(api.get(path, headers=api.kp(x_kms_key_ring="ring-2"))) == ["b-2", "c"]
    assert crns(api.get(f"{path}?preventKeyDeletion=false&totalCount=true", headers=api.kp())) == [
        "a",
        "b-2",
        "c",
    ]
    assert crns(api.get(path, headers=api.kp(instance=OTHER_INSTANCE))) == []


@pytest.mark.parametrize(
    ("query", "name"),
    [
        (
            "urlEncodedResourceCRNQuery=" + quote("crn:v1:bluemix:public:cos:*", safe=""),
            "urlEncodedResourceCRNQuery",
        ),
        ("urlEncodedResourceCRNQuery=" + quote("crn:v1:bluemix", safe=""), "urlEncodedResourceCRNQuery"),
        ("urlEncodedResourceCRNQuery=" + quote(f"{CRN}:x", safe=""), "urlEncodedResourceCRNQuery"),
        ("limit=0", "limit"),
        ("limit=5001", "limit"),
        ("offset=-1", "offset"),
        ("preventKeyDeletion=maybe", "preventKeyDeletion"),
        ("totalCount=2", "totalCount"),
    ],
)
def test_bad_list_queries_are_invalid_param(
    api: Api, registered: dict[str, str], query: str, name: str
) -> None:
    for path in ("/api/v2/keys/registrations", f"/api/v2/keys/{registered['k1']}/registrations"):
        response = api.get(f"{path}?{query}", headers=api.kp())
        assert response.status_code == 400, response.text
        assert reason(response)["code"] == "INVALID_PARAM_ERR"
        assert reason(response)["target"] == {"type": "param", "name": name}


def test_a_keys_registrations_need_the_key_in_this_instance_and_ring(
    api: Api, registered: dict[str, str]
) -> None:
    for headers in (api.kp(instance=OTHER_INSTANCE), api.kp(x_kms_key_ring="ring-2")):
        response = api.get(f"/api/v2/keys/{registered['k1']}/registrations", headers=headers)
        assert (response.status_code, reason(response)["code"]) == (404, "KEY_NOT_FOUND")
        for method in ("POST", "PATCH", "PUT", "DELETE"):
            response = api.request(method, url(registered["k1"], crn_of("a")), headers=headers, json={})
            assert (response.status_code, reason(response)["code"]) == (404, "KEY_NOT_FOUND"), method
    # the owner's view is unchanged
    assert crns(api.get(f"/api/v2/keys/{registered['k1']}/registrations", headers=api.kp())) == ["a", "b-1"]


# --- deletion --------------------------------------------------------------------------------------


def test_registrations_block_key_deletion_as_documented(api: Api, registered: dict[str, str]) -> None:
    k1, k2 = registered["k1"], registered["k2"]
    for query in ("", "?force=true"):
        response = api.delete(f"/api/v2/keys/{k1}{query}", headers=api.kp())
        assert (response.status_code, reason(response)["code"]) == (409, "PREV_KEY_DEL_ERR")
    response = api.delete(f"/api/v2/keys/{k2}", headers=api.kp())
    assert (response.status_code, reason(response)["code"]) == (409, "PROTECTED_RESOURCE_ERR")
    assert response.json()["resources"][0]["errorMsg"] == (
        "Conflict: Key could not be deleted. See 'reasons' for more details."
    )
    forced = api.delete(f"/api/v2/keys/{k2}?force=true", headers=api.kp())
    assert forced.status_code == 204
    assert crns(api.get(f"/api/v2/keys/{k2}/registrations", headers=api.kp())) == []
    assert crns(api.get("/api/v2/keys/registrations", headers=api.kp())) == ["a", "b-1"]

    api.patch(url(k1, crn_of("b-1")), json={"preventKeyDeletion": False}, headers=api.kp())
    assert api.delete(f"/api/v2/keys/{k1}?force=true", headers=api.kp()).status_code == 204


# --- E33 deactivate -------------------------------------------------------------------------------


def deactivate(
    api: Api, key_id: str, crn: Any, query: str = "?action=deactivate", **headers: str
) -> httpx.Response:
    payload = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.crn+json", "collectionTotal": 1},
        "resources": [{"resourceCrn": crn}],
    }
    return api.post(f"/api/v2/keys/{key_id}/registrations{query}", json=payload, headers=api.kp(**headers))


def test_deactivate_moves_a_force_deleted_keys_registration_on(api: Api) -> None:
    key = api.create_key()["id"]
    register(api, key)
    register(api, key, crn_of("second"))
    active = deactivate(api, key, CRN)
    assert (active.status_code, reason(active)["code"]) == (409, "REG_INVALID_STATE_ERR")
    assert reason(active)["message"] == (
        "For action deactivate, the registration must be in the Suspended (2) state."
    )
    assert api.delete(f"/api/v2/keys/{key}?force=true", headers=api.kp()).status_code == 204
    done = deactivate(api, key, CRN, correlation_id="c-x")
    assert (done.status_code, done.content, done.headers["correlation-id"]) == (204, b"", "c-x")
    shown = deactivate(api, key, crn_of("second"), prefer="return=representation")
    assert shown.status_code == 200
    assert shown.json() == {
        "metadata": {"collectionType": "application/vnd.ibm.kms.resource_crn+json", "collectionTotal": 1},
        "resources": [{"resourceCrn": crn_of("second")}],
    }
    twice = deactivate(api, key, CRN)
    assert (twice.status_code, reason(twice)["code"]) == (409, "REG_INVALID_STATE_ERR")
    missing = deactivate(api, key, crn_of("never"))
    assert (missing.status_code, reason(missing)["code"]) == (404, "REGISTRATION_NOT_FOUND_ERR")
    foreign = deactivate(api, key, crn_of("second"), instance=OTHER_INSTANCE)
    assert (foreign.status_code, reason(foreign)["code"]) == (404, "KEY_NOT_FOUND")


@pytest.mark.parametrize(
    ("crn", "query", "code", "target"),
    [
        (CRN, "", "INVALID_PARAM_ERR", {"type": "param", "name": "action"}),
        (CRN, "?action=activate", "INVALID_PARAM_ERR", {"type": "param", "name": "action"}),
        (
            None,
            "?action=deactivate",
            "INVALID_FIELD_ERR",
            {"type": "param", "name": "urlEncodedResourceCRNQuery"},
        ),
        (
            BASE,
            "?action=deactivate",
            "INVALID_FIELD_ERR",
            {"type": "param", "name": "urlEncodedResourceCRNQuery"},
        ),
        (
            7,
            "?action=deactivate",
            "INVALID_FIELD_ERR",
            {"type": "param", "name": "urlEncodedResourceCRNQuery"},
        ),
    ],
)
def test_deactivate_validates_the_action_and_the_crn(
    api: Api, crn: Any, query: str, code: str, target: dict[str, str]
) -> None:
    key = api.create_key()["id"]
    response = deactivate(api, key, crn, query)
    assert response.status_code == 400, response.text
    assert reason(response)["code"] == code
    assert reason(response)["target"] == target
    if code == "INVALID_FIELD_ERR":
        assert reason(response)["message"].startswith("The field 'resourceCrn' must be: ")
