"""Key aliases over raw HTTP (E37/E38) and alias resolution as `{id}`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from hsmbridge.rest.representation import format_timestamp

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm


def reason(response: httpx.Response) -> str:
    return response.json()["resources"][0]["reasons"][0]["code"]  # type: ignore[no-any-return]


def test_create_alias_201_then_200(api: Api) -> None:
    key = api.create_key()["id"]
    created = api.post(f"/api/v2/keys/{key}/aliases/my-alias", headers=api.kp(correlation_id="abc"))
    assert created.status_code == 201
    assert created.headers["correlation-id"] == "abc"
    assert created.json() == {
        "metadata": {"collectionType": "application/vnd.ibm.kms.alias+json", "collectionTotal": 1},
        "resources": [
            {
                "keyId": key,
                "alias": "my-alias",
                "createdBy": "IBMid-alice",
                "creationDate": format_timestamp(api.clock.now()),
            }
        ],
    }
    again = api.post(f"/api/v2/keys/{key}/aliases/my-alias", headers=api.kp())
    assert again.status_code == 200
    assert again.json()["resources"][0]["alias"] == "my-alias"
    got = api.get("/api/v2/keys/my-alias", headers=api.kp()).json()["resources"][0]
    assert got["id"] == key
    assert got["aliases"] == ["my-alias"]


def test_alias_of_a_key_can_name_the_key_in_the_path(api: Api) -> None:
    key = api.create_key(aliases=["first"])["id"]
    assert api.post("/api/v2/keys/first/aliases/second", headers=api.kp()).status_code == 201
    assert api.get(f"/api/v2/keys/{key}", headers=api.kp()).json()["resources"][0]["aliases"] == [
        "first",
        "second",
    ]
    assert api.delete("/api/v2/keys/second/aliases/first", headers=api.kp()).status_code == 204
    assert api.get("/api/v2/keys/first", headers=api.kp()).status_code == 404


@pytest.mark.parametrize(
    "alias",
    [
        "a",
        "x" * 91,
        "has%20space",
        "semi;colon",
        "keys",
        "versions",
        "metadata",
        "0b1f4a4c-2f0e-4c43-9f35-6a2c8f7f8d11",
    ],
)
def test_invalid_aliases_are_path_param_errors(api: Api, alias: str) -> None:
    key = api.create_key()["id"]
    for response in (
        api.post(f"/api/v2/keys/{key}/aliases/{alias}", headers=api.kp()),
        api.delete(f"/api/v2/keys/{key}/aliases/{alias}", headers=api.kp()),
    ):
        assert response.status_code == 400, alias
        assert reason(response) == "INVALID_PATH_PARAM_ERR"
        detail = response.json()["resources"][0]["reasons"][0]
        assert detail["target"] == {"type": "path_param", "name": "alias"}
        assert detail["message"].startswith("The path_param 'alias' must be: alphanumeric")


def test_alias_quota_and_uniqueness(api: Api) -> None:
    key = api.create_key(aliases=[f"a-{n}" for n in range(5)])["id"]
    quota = api.post(f"/api/v2/keys/{key}/aliases/sixth", headers=api.kp())
    assert quota.status_code == 409
    assert reason(quota) == "KEY_ALIAS_QUOTA_ERR"
    other = api.create_key("other")["id"]
    taken = api.post(f"/api/v2/keys/{other}/aliases/a-0", headers=api.kp())
    assert taken.status_code == 409
    assert reason(taken) == "KEY_ALIAS_NOT_UNIQUE_ERR"


def test_aliases_are_case_sensitive(api: Api) -> None:
    key = api.create_key(aliases=["Mixed"])["id"]
    assert api.get("/api/v2/keys/mixed", headers=api.kp()).status_code == 404
    assert api.post(f"/api/v2/keys/{key}/aliases/mixed", headers=api.kp()).status_code == 201


def test_delete_alias(api: Api) -> None:
    key = api.create_key(aliases=["gone-soon"])["id"]
    response = api.delete(f"/api/v2/keys/{key}/aliases/gone-soon", headers=api.kp())
    assert response.status_code == 204
    assert response.content == b""
    missing = api.delete(f"/api/v2/keys/{key}/aliases/gone-soon", headers=api.kp())
    assert missing.status_code == 404
    assert reason(missing) == "ALIAS_NOT_FOUND_ERR"
    assert api.get(f"/api/v2/keys/{key}", headers=api.kp()).status_code == 200  # the key stays


def test_alias_of_another_key_is_not_found_on_delete(api: Api) -> None:
    api.create_key("one", aliases=["belongs-to-one"])
    two = api.create_key("two")["id"]
    response = api.delete(f"/api/v2/keys/{two}/aliases/belongs-to-one", headers=api.kp())
    assert response.status_code == 404
    assert reason(response) == "ALIAS_NOT_FOUND_ERR"


def test_alias_calls_on_unknown_keys(api: Api) -> None:
    for method in ("post", "delete"):
        response = api.request(method, "/api/v2/keys/no-such-key/aliases/fine-alias", headers=api.kp())
        assert response.status_code == 404
        assert reason(response) == "KEY_NOT_FOUND_ERR"


def test_alias_no_content_type_and_a_body_is_ignored(api: Api) -> None:
    key = api.create_key()["id"]
    # The seed's curl sends content-type: application/json with no body; others send "{}".
    response = api.post(
        f"/api/v2/keys/{key}/aliases/with-body",
        content=b"{}",
        headers={**api.kp(), "content-type": "text/plain"},
    )
    assert response.status_code == 201


def test_an_alias_on_a_deleted_key_is_410_like_every_other_change(api: Api) -> None:
    key = api.create_key(aliases=["kept"])["id"]
    assert api.delete(f"/api/v2/keys/{key}", headers=api.kp()).status_code == 204
    for alias in ("fresh", "kept"):
        response = api.post(f"/api/v2/keys/{key}/aliases/{alias}", headers=api.kp())
        assert response.status_code == 410, response.text
        assert reason(response) == "KEY_DELETED_ERR"
    deleted = api.get(f"/api/v2/keys/{key}", headers=api.kp()).json()["resources"][0]
    assert deleted["aliases"] == ["kept"]
