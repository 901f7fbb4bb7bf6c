"""Key rings over raw HTTP (E39 list, E40 create, E41 delete) against the real app over SoftHSM2.

The Go SDK passes a nil target for create and delete, so their 201/204 must have no body; the
rest is the documented statuses and reason codes, quota, ``default``, and tenant isolation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from hsmbridge.core.key_rings import MAX_KEY_RINGS

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

RINGS = "/api/v2/key_rings"


def reason(response: httpx.Response) -> dict[str, Any]:
    return response.json()["resources"][0]["reasons"][0]  # type: ignore[no-any-return]


def ring_ids(api: Api, **headers: str) -> list[str]:
    response = api.get(RINGS, headers=api.kp(**headers))
    assert response.status_code == 200, response.text
    return [ring["id"] for ring in response.json()["resources"]]


def create_key_in(api: Api, ring: str, **headers: str) -> str:
    response = api.post(
        "/api/v2/keys",
        json={
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "in-ring"}],
        },
        headers=api.kp(x_kms_key_ring=ring, **headers),
    )
    assert response.status_code == 201, response.text
    assert response.json()["resources"][0]["keyRingID"] == ring
    return response.json()["resources"][0]["id"]  # type: ignore[no-any-return]


def test_create_answers_201_then_204_with_no_body_and_echoes_the_correlation_id(api: Api) -> None:
    created = api.post(f"{RINGS}/payments", headers=api.kp(correlation_id="corr-1"))
    assert created.status_code == 201
    assert created.content == b""
    assert created.headers["correlation-id"] == "corr-1"
    again = api.post(f"{RINGS}/payments", headers=api.kp())
    assert again.status_code == 204
    assert again.content == b""


def test_list_shows_default_first_without_dates_and_the_others_with_them(api: Api) -> None:
    fresh = api.get(RINGS, headers=api.kp(correlation_id="c-2"))
    assert fresh.status_code == 200
    assert fresh.headers["correlation-id"] == "c-2"
    assert fresh.json() == {
        "metadata": {"collectionType": "application/vnd.ibm.kms.key_ring+json", "collectionTotal": 1},
        "resources": [{"id": "default"}],
    }
    api.post(f"{RINGS}/zeta", headers=api.kp())
    api.clock.advance(minutes=1)
    api.post(f"{RINGS}/alpha", headers=api.kp(token="bob-token"))
    body = api.get(RINGS, headers=api.kp()).json()
    assert [r["id"] for r in body["resources"]] == ["default", "alpha", "zeta"]
    assert body["resources"][1] == {
        "id": "alpha",
        "creationDate": "2026-01-01T00:01:00Z",
        "createdBy": "IBMid-bob",
    }
    assert "totalCount" not in body["metadata"]


def test_list_pages_and_counts(api: Api) -> None:
    for name in ("r-1", "r-2", "r-3"):
        api.post(f"{RINGS}/{name}", headers=api.kp())
    body = api.get(f"{RINGS}?limit=2&offset=1&totalCount=true", headers=api.kp()).json()
    assert body["metadata"] == {
        "collectionType": "application/vnd.ibm.kms.key_ring+json",
        "collectionTotal": 2,
        "totalCount": 4,
    }
    assert [r["id"] for r in body["resources"]] == ["r-1", "r-2"]
    # limit=0 means the default (100), as the API reference's "value >= 0" allows it
    assert len(api.get(f"{RINGS}?limit=0", headers=api.kp()).json()["resources"]) == 4


@pytest.mark.parametrize("query", ["limit=-1", "limit=5001", "limit=x", "offset=-1", "totalCount=maybe"])
def test_list_refuses_bad_paging(api: Api, query: str) -> None:
    response = api.get(f"{RINGS}?{query}", headers=api.kp())
    assert response.status_code == 400
    assert reason(response)["code"] == "INVALID_PARAM_ERR"
    assert reason(response)["target"]["type"] == "param"


@pytest.mark.parametrize("ring_id", ["a", "x" * 101, "under_score", "dot.ted", "default", "Default"])
def test_bad_or_reserved_ring_ids_are_invalid_path_params(api: Api, ring_id: str) -> None:
    for method in (api.post, api.delete):
        response = method(f"{RINGS}/{ring_id}", headers=api.kp())
        assert response.status_code == 400, response.text
        assert reason(response)["code"] == "INVALID_PATH_PARAM_ERR"
        assert reason(response)["target"] == {"type": "path_param", "name": "id"}
        assert response.json()["resources"][0]["errorMsg"].startswith("Bad Request: ")


def test_the_quota_is_50_rings_default_included(api: Api) -> None:
    for n in range(MAX_KEY_RINGS - 1):
        assert api.post(f"{RINGS}/ring-{n:02d}", headers=api.kp()).status_code == 201
    response = api.post(f"{RINGS}/one-too-many", headers=api.kp())
    assert response.status_code == 409
    assert reason(response)["code"] == "KEY_RING_RESOURCE_QUOTA_ERR"
    assert api.post(f"{RINGS}/ring-00", headers=api.kp()).status_code == 204
    assert len(ring_ids(api)) == MAX_KEY_RINGS


def test_delete_an_empty_ring_is_204_with_no_body(api: Api) -> None:
    api.post(f"{RINGS}/temp", headers=api.kp())
    response = api.delete(f"{RINGS}/temp", headers=api.kp(correlation_id="c-3"))
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["correlation-id"] == "c-3"
    assert ring_ids(api) == ["default"]
    missing = api.delete(f"{RINGS}/temp", headers=api.kp())
    assert missing.status_code == 404
    assert reason(missing)["code"] == "KEY_RING_NOT_FOUND_ERR"


def test_delete_rules_for_rings_holding_keys(api: Api) -> None:
    api.post(f"{RINGS}/busy", headers=api.kp())
    key_id = create_key_in(api, "busy")

    not_empty = api.delete(f"{RINGS}/busy", headers=api.kp())
    assert (not_empty.status_code, reason(not_empty)["code"]) == (409, "KEY_RING_NOT_EMPTY_ERR")
    not_deleted = api.delete(f"{RINGS}/busy?force=true", headers=api.kp())
    assert (not_deleted.status_code, reason(not_deleted)["code"]) == (409, "KEY_RING_KEYS_NOT_DELETED_ERR")

    assert api.delete(f"/api/v2/keys/{key_id}", headers=api.kp()).status_code == 204
    still = api.delete(f"{RINGS}/busy", headers=api.kp())
    assert (still.status_code, reason(still)["code"]) == (409, "KEY_RING_NOT_EMPTY_ERR")
    forced = api.delete(f"{RINGS}/busy?force=true", headers=api.kp())
    assert forced.status_code == 204
    assert forced.content == b""
    assert ring_ids(api) == ["default"]
    moved = api.get(f"/api/v2/keys/{key_id}", headers=api.kp()).json()["resources"][0]
    assert (moved["keyRingID"], moved["state"]) == ("default", 5)


def test_force_may_come_in_the_body_as_older_go_sdks_sent_it(api: Api) -> None:
    api.post(f"{RINGS}/old-sdk", headers=api.kp())
    key = create_key_in(api, "old-sdk")
    assert api.delete(f"/api/v2/keys/{key}", headers=api.kp()).status_code == 204
    plain = api.request("DELETE", f"{RINGS}/old-sdk", headers=api.kp(), json={"Force": False})
    assert (plain.status_code, reason(plain)["code"]) == (409, "KEY_RING_NOT_EMPTY_ERR")
    forced = api.request("DELETE", f"{RINGS}/old-sdk", headers=api.kp(), json={"Force": True})
    assert forced.status_code == 204
    bad = api.delete(f"{RINGS}/whatever?force=maybe", headers=api.kp())
    assert (bad.status_code, reason(bad)["code"]) == (400, "INVALID_PARAM_ERR")


def test_rings_are_scoped_to_the_instance(api: Api) -> None:
    other = "another-instance"
    api.post(f"{RINGS}/mine", headers=api.kp())
    assert ring_ids(api, instance=other) == ["default"]
    gone = api.delete(f"{RINGS}/mine", headers=api.kp(instance=other))
    assert (gone.status_code, reason(gone)["code"]) == (404, "KEY_RING_NOT_FOUND_ERR")
    create = api.post(
        "/api/v2/keys",
        json={
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "key"}],
        },
        headers=api.kp(instance=other, x_kms_key_ring="mine"),
    )
    assert (create.status_code, reason(create)["code"]) == (404, "KEY_RING_NOT_FOUND_ERR")
    assert api.post(f"{RINGS}/mine", headers=api.kp(instance=other)).status_code == 201
    assert ring_ids(api) == ["default", "mine"]


def test_authentication_and_instance_come_first(api: Api) -> None:
    unauthenticated = api.post(f"{RINGS}/x1", headers={"bluemix-instance": api.instance})
    assert unauthenticated.status_code == 401
    no_instance = api.get(RINGS, headers={"authorization": "Bearer alice-token"})
    assert no_instance.status_code == 400
    assert reason(no_instance)["target"] == {"type": "param", "name": "bluemix-instance"}
