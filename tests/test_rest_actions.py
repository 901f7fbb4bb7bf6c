"""Key actions over raw HTTP (E13–E21) and the deprecated ``POST /keys/{id}?action=`` (E6).

Wrap/unwrap/rewrap with and without AAD and across versions, every documented 400/409/410/422,
the rotation, enable and sync timings on the FixedClock, dual authorisation with two principals.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from hsmbridge.rest.representation import format_timestamp

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]

ACTION_TYPE = "application/vnd.ibm.kms.key_action+json"


def reason(response: httpx.Response) -> str:
    return response.json()["resources"][0]["reasons"][0]["code"]  # type: ignore[no-any-return]


def error_msg(response: httpx.Response) -> str:
    return response.json()["resources"][0]["errorMsg"]  # type: ignore[no-any-return]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def action(api: Api, key: str, name: str, body: Any = None, **headers: str) -> httpx.Response:
    content = b"" if body is None else __import__("json").dumps(body).encode()
    return api.post(f"/api/v2/keys/{key}/actions/{name}", content=content, headers=api.kp(**headers))


def legacy(api: Api, key: str, name: str, body: Any = None, **headers: str) -> httpx.Response:
    content = b"" if body is None else __import__("json").dumps(body).encode()
    return api.post(f"/api/v2/keys/{key}?action={name}", content=content, headers=api.kp(**headers))


@pytest.fixture
def root(api: Api) -> str:
    return api.create_key("root-key")["id"]  # type: ignore[no-any-return]


# --- E13–E15 wrap / unwrap / rewrap -----------------------------------------------------------------


def test_wrap_generates_a_32_byte_dek_when_no_plaintext_is_given(api: Api, root: str) -> None:
    for body in (None, {}):
        response = action(api, root, "wrap", body)
        assert response.status_code == 200
        assert response.headers["content-type"] == ACTION_TYPE
        out = response.json()
        assert list(out) == ["plaintext", "ciphertext", "keyVersion"]
        assert len(base64.b64decode(out["plaintext"])) == 32
        assert out["keyVersion"] == {"id": root}
        unwrapped = action(api, root, "unwrap", {"ciphertext": out["ciphertext"]}).json()
        assert unwrapped == {"plaintext": out["plaintext"], "keyVersion": {"id": root}}


def test_wrap_and_unwrap_with_aad(api: Api, root: str) -> None:
    dek = b64(os.urandom(32))
    aad = ["tenant=42", "purpose=disk"]
    wrapped = action(api, root, "wrap", {"plaintext": dek, "aad": aad}).json()
    assert "plaintext" not in wrapped
    ok = action(api, root, "unwrap", {"ciphertext": wrapped["ciphertext"], "aad": aad})
    assert ok.status_code == 200
    assert ok.json()["plaintext"] == dek
    for wrong in ([], ["tenant=42"], ["purpose=disk", "tenant=42"]):
        bad = action(api, root, "unwrap", {"ciphertext": wrapped["ciphertext"], "aad": wrong})
        assert bad.status_code == 422
        assert reason(bad) == "UNPROCESSABLE_CIPHERTEXT_ERR"
        assert error_msg(bad) == (
            "Unprocessable Entity: Unwrap with key could not be performed. See 'reasons' for more details."
        )


def test_unwrap_of_an_old_version_returns_the_rewrapped_ciphertext(api: Api, root: str) -> None:
    dek = b64(os.urandom(32))
    old = action(api, root, "wrap", {"plaintext": dek}).json()
    api.clock.advance(hours=1)
    assert action(api, root, "rotate").status_code == 204
    latest = api.get(f"/api/v2/keys/{root}", headers=api.kp()).json()["resources"][0]["keyVersion"]["id"]
    assert latest != root
    out = action(api, root, "unwrap", {"ciphertext": old["ciphertext"]}).json()
    assert out["plaintext"] == dek
    assert out["keyVersion"] == {"id": root}
    assert out["rewrappedKeyVersion"] == {"id": latest}
    again = action(api, root, "unwrap", {"ciphertext": out["ciphertext"]}).json()
    assert again == {"plaintext": dek, "keyVersion": {"id": latest}}
    # wrap always uses the latest version
    assert action(api, root, "wrap", {"plaintext": dek}).json()["keyVersion"] == {"id": latest}


def test_rewrap_moves_a_wdek_to_the_latest_version(api: Api, root: str) -> None:
    dek = b64(os.urandom(16))
    old = action(api, root, "wrap", {"plaintext": dek, "aad": ["a"]}).json()
    api.clock.advance(hours=1)
    action(api, root, "rotate")
    response = action(api, root, "rewrap", {"ciphertext": old["ciphertext"], "aad": ["a"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == ACTION_TYPE
    out = response.json()
    assert out["keyVersion"] == {"id": root}
    assert out["rewrappedKeyVersion"]["id"] != root
    assert (
        action(api, root, "unwrap", {"ciphertext": out["ciphertext"], "aad": ["a"]}).json()["plaintext"]
        == dek
    )


@pytest.mark.parametrize(
    ("name", "body", "status", "code"),
    [
        ("wrap", {"plaintext": "not base64"}, 400, "INVALID_FIELD_ERR"),
        ("wrap", {"plaintext": b64(os.urandom(7501))}, 400, "INVALID_FIELD_ERR"),
        ("wrap", {"aad": "one"}, 400, "INVALID_FIELD_ERR"),
        ("wrap", {"aad": ["x" * 256]}, 400, "INVALID_FIELD_ERR"),
        ("wrap", [], 400, "BAD_BODY_ERR"),
        ("unwrap", None, 400, "NO_BODY_ERR"),
        ("unwrap", {}, 400, "MISSING_FIELD_ERR"),
        ("unwrap", {"ciphertext": "%%%"}, 400, "INVALID_FIELD_ERR"),
        ("unwrap", {"ciphertext": b64(os.urandom(80))}, 422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
        ("rewrap", None, 400, "NO_BODY_ERR"),
        ("rewrap", {"aad": []}, 400, "MISSING_FIELD_ERR"),
        ("rewrap", {"ciphertext": b64(b"short")}, 422, "UNPROCESSABLE_CIPHERTEXT_ERR"),
    ],
)
def test_envelope_errors(api: Api, root: str, name: str, body: Any, status: int, code: str) -> None:
    response = action(api, root, name, body)
    assert response.status_code == status, response.text
    assert reason(response) == code


def test_missing_ciphertext_message_is_key_protects(api: Api, root: str) -> None:
    response = action(api, root, "unwrap", {})
    assert response.json()["resources"][0]["reasons"][0]["message"] == "The field 'ciphertext' is required."


def test_a_ciphertext_of_another_key_is_422(api: Api, root: str) -> None:
    other = api.create_key("other")["id"]
    wrapped = action(api, other, "wrap", {}).json()["ciphertext"]
    response = action(api, root, "unwrap", {"ciphertext": wrapped})
    assert response.status_code == 422
    assert reason(response) == "UNPROCESSABLE_CIPHERTEXT_ERR"


def test_envelope_state_rules(api: Api, root: str) -> None:
    wrapped = action(api, root, "wrap", {}).json()["ciphertext"]
    assert action(api, root, "disable").status_code == 204
    for name, body in (
        ("wrap", {}),
        ("unwrap", {"ciphertext": wrapped}),
        ("rewrap", {"ciphertext": wrapped}),
    ):
        response = action(api, root, name, body)
        assert response.status_code == 409
        assert reason(response) == "KEY_ACTION_INVALID_STATE_ERR"
    api.clock.advance(seconds=30)
    assert action(api, root, "enable").status_code == 204
    api.delete(f"/api/v2/keys/{root}", headers=api.kp())
    for name, body in (
        ("wrap", {}),
        ("unwrap", {"ciphertext": wrapped}),
        ("rewrap", {"ciphertext": wrapped}),
    ):
        response = action(api, root, name, body)
        assert response.status_code == 410
        assert reason(response) == "KEY_DELETED_ERR"


def test_deactivated_keys_unwrap_but_do_not_wrap(api: Api) -> None:
    key = api.create_key("expiring", expirationDate=format_timestamp(api.clock.now() + timedelta(hours=1)))[
        "id"
    ]
    wrapped = action(api, key, "wrap", {}).json()["ciphertext"]
    api.clock.advance(hours=2)
    assert action(api, key, "wrap", {}).status_code == 409
    assert action(api, key, "unwrap", {"ciphertext": wrapped}).status_code == 200
    assert action(api, key, "rewrap", {"ciphertext": wrapped}).status_code == 200
    assert action(api, key, "rotate").status_code == 204


def test_standard_keys_cannot_be_used_for_actions(api: Api) -> None:
    key = api.create_key("std", extractable=True)["id"]
    for name in ("wrap", "rotate", "enable", "disable", "sync"):
        response = action(api, key, name, {})
        assert response.status_code == 400, name
        assert reason(response) == "KEY_ROOT_REQ_ERR"


def test_actions_by_alias(api: Api) -> None:
    api.create_key("aliased", aliases=["my-root"])
    wrapped = action(api, "my-root", "wrap", {}).json()
    assert action(api, "my-root", "unwrap", {"ciphertext": wrapped["ciphertext"]}).status_code == 200
    assert action(api, "my-root", "disable").status_code == 204


def test_unknown_key_is_404(api: Api) -> None:
    for name in ("wrap", "unwrap", "rewrap", "rotate", "enable", "disable", "setKeyForDeletion", "sync"):
        response = action(api, "0b1f4a4c-2f0e-4c43-9f35-6a2c8f7f8d11", name, {"ciphertext": b64(b"x" * 64)})
        assert response.status_code == 404, name
        assert reason(response) == "KEY_NOT_FOUND_ERR"


# --- E16 rotate -----------------------------------------------------------------------------------


def test_rotate_once_per_hour(api: Api, root: str) -> None:
    first = action(api, root, "rotate", prefer="return=representation")
    assert first.status_code == 204
    assert first.content == b""
    too_soon = action(api, root, "rotate")
    assert too_soon.status_code == 409
    assert reason(too_soon) == "KEY_ROTATION_NOT_PERMITTED"
    api.clock.advance(hours=1)
    assert action(api, root, "rotate", {}).status_code == 204
    key = api.get(f"/api/v2/keys/{root}", headers=api.kp()).json()["resources"][0]
    assert key["lastRotateDate"] == format_timestamp(api.clock.now())


def test_rotate_of_an_imported_key_needs_new_material(api: Api) -> None:
    key = api.create_key("imported", payload=b64(os.urandom(32)))["id"]
    missing = action(api, key, "rotate")
    assert missing.status_code == 400
    assert reason(missing) == "KEY_PAYLOAD_REQ_ERR"
    bad = action(api, key, "rotate", {"payload": "???"})
    assert bad.status_code == 400
    assert reason(bad) == "INVALID_FIELD_ERR"
    assert (
        bad.json()["resources"][0]["reasons"][0]["message"]
        == "The field 'payload' must be: a base64 encoded value"
    )
    assert action(api, key, "rotate", {"payload": b64(os.urandom(32))}).status_code == 204
    generated = api.create_key("generated")["id"]
    refused = action(api, generated, "rotate", {"payload": b64(os.urandom(32))})
    assert refused.status_code == 400


def test_rotate_state_rules(api: Api, root: str) -> None:
    action(api, root, "disable")
    suspended = action(api, root, "rotate")
    assert suspended.status_code == 409
    assert reason(suspended) == "KEY_ACTION_INVALID_STATE_ERR"
    api.delete(f"/api/v2/keys/{root}", headers=api.kp())
    assert action(api, root, "rotate").status_code == 410


# --- E19 / E20 enable, disable ---------------------------------------------------------------------


def test_disable_and_enable(api: Api, root: str) -> None:
    response = action(api, root, "disable")
    assert response.status_code == 204
    assert response.content == b""
    assert api.get(f"/api/v2/keys/{root}", headers=api.kp()).json()["resources"][0]["state"] == 2
    again = action(api, root, "disable")
    assert again.status_code == 409
    assert reason(again) == "KEY_ACTION_INVALID_STATE_ERR"
    early = action(api, root, "enable")
    assert early.status_code == 409
    assert reason(early) == "REQ_TOO_EARLY_ERR"
    api.clock.advance(seconds=30)
    assert action(api, root, "enable").status_code == 204
    active = action(api, root, "enable")
    assert active.status_code == 409
    assert reason(active) == "KEY_ACTION_INVALID_STATE_ERR"
    api.delete(f"/api/v2/keys/{root}", headers=api.kp())
    for name in ("enable", "disable"):
        assert action(api, root, name).status_code == 410


# --- E17 / E18 dual authorisation ---------------------------------------------------------------------


def _dual_auth_key(api: Api) -> str:
    body = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [
            {"type": "application/vnd.ibm.kms.key+json", "name": "dual", "dualAuthDelete": {"enabled": True}}
        ],
    }
    return api.post("/api/v2/keys_with_policy_overrides", json=body, headers=api.kp()).json()["resources"][0][
        "id"
    ]  # type: ignore[no-any-return]


def test_set_and_unset_key_for_deletion(api: Api) -> None:
    key = _dual_auth_key(api)
    assert action(api, key, "setKeyForDeletion").status_code == 204
    state = api.get(f"/api/v2/keys/{key}", headers=api.kp()).json()["resources"][0]["dualAuthDelete"]
    assert state == {
        "enabled": True,
        "keySetForDeletion": True,
        "authExpiration": format_timestamp(api.clock.now() + timedelta(days=7)),
    }
    assert action(api, key, "unsetKeyForDeletion").status_code == 204
    refused = api.delete(f"/api/v2/keys/{key}", headers=api.kp("bob-token"))
    assert refused.status_code == 409
    assert reason(refused) == "AUTHORIZATIONS_NOT_MET"
    action(api, key, "setKeyForDeletion")
    api.clock.advance(days=7)
    expired = api.delete(f"/api/v2/keys/{key}", headers=api.kp("bob-token"))
    assert expired.status_code == 409
    action(api, key, "setKeyForDeletion", token="alice-token")
    assert api.delete(f"/api/v2/keys/{key}", headers=api.kp("bob-token")).status_code == 204
    assert action(api, key, "setKeyForDeletion").status_code == 410


def test_set_key_for_deletion_without_the_policy(api: Api, root: str) -> None:
    for name in ("setKeyForDeletion", "unsetKeyForDeletion"):
        response = action(api, root, name)
        assert response.status_code == 409
        assert reason(response) == "NOT_DUAL_AUTH_ERR"
    assert "Key deletion could not be scheduled" in error_msg(action(api, root, "setKeyForDeletion"))
    assert "Key deletion could not be cancelled" in error_msg(action(api, root, "unsetKeyForDeletion"))


# --- E21 sync -----------------------------------------------------------------------------------------


def test_sync_rules(api: Api, root: str) -> None:
    assert action(api, root, "sync").status_code == 204
    again = action(api, root, "sync")
    assert again.status_code == 409
    assert reason(again) == "REQ_TOO_EARLY_ERR"
    api.clock.advance(hours=1)
    assert action(api, root, "sync").status_code == 204
    api.clock.advance(hours=1)
    action(api, root, "disable")
    after_disable = action(api, root, "sync")
    assert after_disable.status_code == 409
    api.clock.advance(hours=1)
    assert action(api, root, "sync").status_code == 204
    api.clock.advance(hours=2)
    api.delete(f"/api/v2/keys/{root}", headers=api.kp())
    assert action(api, root, "sync").status_code == 409  # deletion is a lifecycle event
    api.clock.advance(hours=1)
    assert action(api, root, "sync").status_code == 204  # deleted keys can still be synced


# --- E6 the deprecated dispatcher ----------------------------------------------------------------------


def test_legacy_dispatcher_statuses(api: Api, root: str) -> None:
    wrapped = legacy(api, root, "wrap", {})
    assert wrapped.status_code == 200
    assert wrapped.headers["content-type"] == ACTION_TYPE
    ciphertext = wrapped.json()["ciphertext"]
    assert legacy(api, root, "unwrap", {"ciphertext": ciphertext}).status_code == 200
    assert legacy(api, root, "rewrap", {"ciphertext": ciphertext}).status_code == 200
    assert legacy(api, root, "rotate", {}).status_code == 204
    assert legacy(api, root, "disable").status_code == 204
    api.clock.advance(minutes=1)
    assert legacy(api, root, "enable").status_code == 204
    assert legacy(api, root, "setKeyForDeletion").status_code == 409
    api.delete(f"/api/v2/keys/{root}", headers=api.kp())
    api.clock.advance(minutes=1)
    restored = legacy(api, root, "restore")
    assert restored.status_code == 201
    assert restored.json()["resources"][0]["state"] == 1


def test_legacy_dispatcher_errors_use_the_actions_wording(api: Api, root: str) -> None:
    response = legacy(api, root, "unwrap", {})
    assert response.status_code == 400
    assert reason(response) == "MISSING_FIELD_ERR"
    assert error_msg(response).startswith("Bad Request: Unwrap with key could not be performed.")
    unknown = legacy(api, root, "explode")
    assert unknown.status_code == 400
    assert reason(unknown) == "INVALID_PARAM_ERR"
    missing = api.post(f"/api/v2/keys/{root}", headers=api.kp())
    assert missing.status_code == 400
    assert reason(missing) == "MISSING_FIELD_ERR"
    unauth = api.post(f"/api/v2/keys/{root}?action=wrap", json={})
    assert unauth.status_code == 401
