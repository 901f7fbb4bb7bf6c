"""A malformed `{id}` is 400, not 404, on every route that takes one (API reference: "The key
could not be retrieved due to a malformed, invalid, or missing ID").

A key is named by its ID (a UUID) or an alias (2–90 of ``[A-Za-z0-9_-]``, not a reserved word):
anything else can never name a key, so the facade answers 400 ``INVALID_PATH_PARAM_ERR`` naming
``id`` before looking anything up. Where the reference prints its own sentence for the case (E5,
E8, E9, E10) the errorMsg is that sentence; elsewhere it is the generic form. A well-formed ID or
alias that names no key stays 404.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

MALFORMED = ["bad%20id!!", "x", "metadata", "key.with.dots"]
_WRAP = {"plaintext": "aGVsbG8="}
_POLICY = {
    "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
    "resources": [{"type": "application/vnd.ibm.kms.policy+json", "rotation": {"interval_month": 3}}],
}
#: (method, path after /api/v2/keys/{id}, body, the reference's errorMsg or None for generic)
ROUTES: list[tuple[str, str, Any, str | None]] = [
    (
        "GET",
        "",
        None,
        "Bad Request: The key could not be retrieved due to a malformed, invalid, or missing ID.",
    ),
    (
        "DELETE",
        "",
        None,
        "Bad Request: The key cannot be deleted due to a malformed, invalid, or missing ID.",
    ),
    (
        "GET",
        "/metadata",
        None,
        "Bad Request: The key metadata could not be retrieved due to a malformed, invalid, or missing ID.",
    ),
    ("DELETE", "/purge", None, "Bad Request: The key cannot be purged due to a malformed ID."),
    ("PATCH", "", {"keyRingID": "default"}, None),
    ("POST", "/restore", None, None),
    ("GET", "/versions", None, None),
    ("POST", "/actions/wrap", _WRAP, None),
    ("POST", "/actions/unwrap", {"ciphertext": "aGVsbG8="}, None),
    ("POST", "/actions/rewrap", {"ciphertext": "aGVsbG8="}, None),
    ("POST", "/actions/rotate", None, None),
    ("POST", "/actions/enable", None, None),
    ("POST", "/actions/disable", None, None),
    ("POST", "/actions/sync", None, None),
    ("POST", "/actions/setKeyForDeletion", None, None),
    ("POST", "/actions/unsetKeyForDeletion", None, None),
    ("POST", "?action=wrap", _WRAP, None),
    ("PUT", "/policies", _POLICY, None),
    ("GET", "/policies", None, None),
    ("GET", "/registrations", None, None),
    ("POST", "/aliases/good-alias", None, None),
    ("DELETE", "/aliases/good-alias", None, None),
]


def _call(api: Api, method: str, path: str, body: Any) -> Any:
    return api.request(method, path, json=body, headers=api.kp())


@pytest.mark.parametrize("malformed", MALFORMED)
@pytest.mark.parametrize(
    ("method", "suffix", "body", "sentence"), ROUTES, ids=[f"{m} {s}" for m, s, _, _ in ROUTES]
)
def test_a_malformed_id_is_400_invalid_path_param(
    api: Api, method: str, suffix: str, body: Any, sentence: str | None, malformed: str
) -> None:
    response = _call(api, method, f"/api/v2/keys/{malformed}{suffix}", body)
    assert response.status_code == 400, response.text
    resource = response.json()["resources"][0]
    assert resource["reasons"][0]["code"] == "INVALID_PATH_PARAM_ERR"
    assert resource["reasons"][0]["target"] == {"type": "path_param", "name": "id"}
    if sentence is not None:
        assert resource["errorMsg"] == sentence
    else:
        assert resource["errorMsg"].startswith("Bad Request: ")
        assert resource["errorMsg"].endswith("See 'reasons' for more details.")


@pytest.mark.parametrize("well_formed", ["6f1e4a4c-2f0e-4c43-9f35-6a2c8f7f8d11", "no-such-alias", "ab"])
def test_a_well_formed_id_that_names_no_key_is_still_404(api: Api, well_formed: str) -> None:
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/metadata"), ("DELETE", "/purge")):
        response = _call(api, method, f"/api/v2/keys/{well_formed}{suffix}", None)
        assert response.status_code == 404, (method, suffix, response.text)


def test_an_alias_still_names_its_key(api: Api) -> None:
    key = api.create_key(aliases=["payments_2024-key"])
    response = api.get("/api/v2/keys/payments_2024-key", headers=api.kp())
    assert response.status_code == 200
    assert response.json()["resources"][0]["id"] == key["id"]
