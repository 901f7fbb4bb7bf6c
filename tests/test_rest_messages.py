"""The API reference's own errorMsg sentences (rest/messages.py), case by case.

Where the reference prints a fixed sentence for an (operation, reason) case, the facade answers
with exactly that sentence; status and ``reasons`` are unchanged. Every other case keeps the
generic "<Reason-Phrase>: <Operation> could not be <verb>. See 'reasons' for more details.".
The first test goes through the one error mapping for every table entry; the rest drive the
common cases over HTTP, as a client following the reference meets them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from hsmbridge.errors import Conflict, Gone, HsmBridgeError, NotFound, Reason
from hsmbridge.rest.errors import Operation, Operations, invalid_field, missing_field, to_http_error
from hsmbridge.rest.messages import SENTENCES

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

KEY_NOT_FOUND = "Not Found: The key could not be found. KEY_NOT_FOUND_ERR: Key does not exist"
GONE = (
    "Gone: The requested key was previously deleted and is no longer available. "
    "Delete references to this key."
)


def _malformed() -> HsmBridgeError:
    return invalid_field("id", "a key ID or an alias", target_type="path_param")


def _not_found() -> HsmBridgeError:
    return NotFound("Key does not exist", reason=Reason.KEY_NOT_FOUND)


def _gone() -> HsmBridgeError:
    return Gone("deleted", reason=Reason.KEY_DELETED)


CASES: list[tuple[Operation, HsmBridgeError, int, str]] = [
    (Operations.CREATE_KEY, missing_field("name"), 400, "Bad Request: The key is missing a required field."),
    (
        Operations.CREATE_KEY_WITH_POLICY_OVERRIDES,
        missing_field("interval_month"),
        400,
        "Bad Request: The key is missing a required field.",
    ),
    (
        Operations.CREATE_KEY,
        Conflict("expired", reason=Reason.IMPORT_TOKEN_EXPIRED),
        409,
        "Conflict: The import token that was used to encrypt this key has reached its "
        "'maxAllowedRetrievals' or 'expirationDate', and it is no longer available for key operations. "
        "To create a new import token, use 'POST /import_token'.",
    ),
    (
        Operations.GET_KEY,
        _malformed(),
        400,
        "Bad Request: The key could not be retrieved due to a malformed, invalid, or missing ID.",
    ),
    (
        Operations.GET_KEY,
        _not_found(),
        404,
        "Not Found: The key could not be found. Verify that the key ID specified is valid.",
    ),
    (Operations.PATCH_KEY, _not_found(), 404, KEY_NOT_FOUND),
    (Operations.PATCH_KEY, _gone(), 410, GONE),
    (
        Operations.DELETE_KEY,
        _malformed(),
        400,
        "Bad Request: The key cannot be deleted due to a malformed, invalid, or missing ID.",
    ),
    (Operations.DELETE_KEY, _not_found(), 404, KEY_NOT_FOUND),
    (Operations.DELETE_KEY, _gone(), 410, GONE),
    (
        Operations.GET_KEY_METADATA,
        _malformed(),
        400,
        "Bad Request: The key metadata could not be retrieved due to a malformed, invalid, or missing ID.",
    ),
    (Operations.PURGE_KEY, _malformed(), 400, "Bad Request: The key cannot be purged due to a malformed ID."),
    (Operations.PURGE_KEY, _not_found(), 404, KEY_NOT_FOUND),
    (Operations.LIST_KEY_VERSIONS, _not_found(), 404, KEY_NOT_FOUND),
    (
        Operations.LIST_KEY_VERSIONS,
        Conflict("not active", reason=Reason.INVALID_STATE),
        409,
        "Conflict: The key is not in an active state.",
    ),
    (Operations.LIST_KEY_VERSIONS, _gone(), 410, GONE),
    (Operations.PUT_KEY_POLICIES, _gone(), 410, GONE),
    (Operations.GET_KEY_POLICIES, _not_found(), 404, KEY_NOT_FOUND),
    (
        Operations.GET_IMPORT_TOKEN,
        NotFound("none", reason=Reason.IMPORT_TOKEN_NOT_FOUND),
        404,
        "Not found: An import token was not found in the specified service instance. "
        "To create an import token, use 'POST /import_token'.",
    ),
    (
        Operations.GET_IMPORT_TOKEN,
        Conflict("spent", reason=Reason.IMPORT_TOKEN_EXPIRED),
        409,
        "Conflict: The import token has reached its 'maxAllowedRetrievals' or 'expirationDate'. "
        "To create a new import token, use 'POST /import_token'.",
    ),
]


@pytest.mark.parametrize(("operation", "exc", "status", "sentence"), CASES)
def test_the_reference_sentence_replaces_the_generic_error_msg(
    operation: Operation, exc: HsmBridgeError, status: int, sentence: str
) -> None:
    got_status, body = to_http_error(exc, operation)
    assert got_status == status
    assert body["resources"][0]["errorMsg"] == sentence
    assert body["resources"][0]["reasons"][0]["status"] == status  # the reasons stay


def test_every_sentence_in_the_table_is_tested() -> None:
    assert sorted(set(SENTENCES.values())) == sorted({case[3] for case in CASES})


@pytest.mark.parametrize(
    ("operation", "exc", "generic"),
    [
        (Operations.GET_KEY_METADATA, _not_found(), "Not Found: Key metadata could not be retrieved."),
        (Operations.ROTATE, _gone(), "Gone: Key could not be rotated."),
        (Operations.CREATE_KEY, invalid_field("name", "a string"), "Bad Request: Key could not be created."),
        (Operations.CREATE_ALIAS, _malformed(), "Bad Request: Alias could not be created."),
    ],
)
def test_cases_the_reference_words_generically_keep_the_generic_form(
    operation: Operation, exc: HsmBridgeError, generic: str
) -> None:
    _, body = to_http_error(exc, operation)
    assert body["resources"][0]["errorMsg"] == f"{generic} See 'reasons' for more details."


# --- over HTTP --------------------------------------------------------------------------------------


def _error_msg(response: object) -> str:
    return response.json()["resources"][0]["errorMsg"]  # type: ignore[attr-defined,no-any-return]


MISSING = "6f1e4a4c-2f0e-4c43-9f35-6a2c8f7f8d11"


def test_unknown_key_sentences_per_operation(api: Api) -> None:
    h = api.kp()
    assert _error_msg(api.get(f"/api/v2/keys/{MISSING}", headers=h)) == (
        "Not Found: The key could not be found. Verify that the key ID specified is valid."
    )
    for response in (
        api.patch(f"/api/v2/keys/{MISSING}", json={"keyRingID": "default"}, headers=h),
        api.delete(f"/api/v2/keys/{MISSING}", headers=h),
        api.delete(f"/api/v2/keys/{MISSING}/purge", headers=h),
        api.get(f"/api/v2/keys/{MISSING}/versions", headers=h),
        api.get(f"/api/v2/keys/{MISSING}/policies", headers=h),
    ):
        assert response.status_code == 404
        assert _error_msg(response) == KEY_NOT_FOUND


def test_deleted_key_sentences_per_operation(api: Api) -> None:
    h = api.kp()
    key = api.create_key()["id"]
    assert api.delete(f"/api/v2/keys/{key}", headers=h).status_code == 204
    policy = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.policy+json", "rotation": {"interval_month": 3}}],
    }
    for response in (
        api.patch(f"/api/v2/keys/{key}", json={"keyRingID": "default"}, headers=h),
        api.delete(f"/api/v2/keys/{key}", headers=h),
        api.get(f"/api/v2/keys/{key}/versions", headers=h),
        api.put(f"/api/v2/keys/{key}/policies", json=policy, headers=h),
    ):
        assert response.status_code == 410, response.text
        assert _error_msg(response) == GONE


def test_versions_of_a_disabled_key_say_it_is_not_active(api: Api) -> None:
    key = api.create_key()["id"]
    assert api.post(f"/api/v2/keys/{key}/actions/disable", headers=api.kp()).status_code == 204
    response = api.get(f"/api/v2/keys/{key}/versions", headers=api.kp())
    assert response.status_code == 409
    assert _error_msg(response) == "Conflict: The key is not in an active state."


def test_a_create_missing_a_field_says_so(api: Api) -> None:
    body = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "extractable": False}],
    }
    for path in ("/api/v2/keys", "/api/v2/keys_with_policy_overrides"):
        response = api.post(path, json=body, headers=api.kp())
        assert response.status_code == 400
        assert response.json()["resources"][0]["reasons"][0]["code"] == "MISSING_FIELD_ERR"
        assert _error_msg(response) == "Bad Request: The key is missing a required field."


def test_no_import_token_says_how_to_create_one(api: Api) -> None:
    response = api.get("/api/v2/import_token", headers=api.kp())
    assert response.status_code == 404
    assert _error_msg(response) == (
        "Not found: An import token was not found in the specified service instance. "
        "To create an import token, use 'POST /import_token'."
    )


def test_sync_words_its_errors_after_the_associated_resources(api: Api) -> None:
    """E21's examples (400, 404, 409) all say "Associated resources could not be synced"."""
    response = api.post(f"/api/v2/keys/{MISSING}/actions/sync", headers=api.kp())
    assert response.status_code == 404
    assert _error_msg(response) == (
        "Not Found: Associated resources could not be synced. See 'reasons' for more details."
    )
    standard = api.create_key("standard", extractable=True)["id"]
    response = api.post(f"/api/v2/keys/{standard}/actions/sync", headers=api.kp())
    assert response.status_code == 400
    assert _error_msg(response) == (
        "Bad Request: Associated resources could not be synced. See 'reasons' for more details."
    )
