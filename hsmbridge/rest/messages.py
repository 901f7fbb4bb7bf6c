"""Key Protect's own ``errorMsg`` sentences, for the cases where the API reference prints one.

Most error bodies in the reference follow one pattern ("<Reason-Phrase>: <Operation> could not be
<verb>. See 'reasons' for more details."), which `rest.errors.error_message` builds. For a few
(operation, reason) cases the reference prints a fixed sentence instead — "Not Found: The key
could not be found. Verify that the key ID specified is valid." — and scripts that match on the
message see the difference. This table holds exactly those sentences, copied from the reference
(seed 003, the example error bodies of each endpoint); everything else keeps the generic form.
Status and ``reasons`` do not change: only ``errorMsg`` is replaced.

A case is keyed by the operation's failure phrase (`Operation.failure`, e.g. "Key could not be
retrieved"), the wire reason code, and, where the code alone is too broad, the target's name
(a malformed ``{id}`` is ``INVALID_PATH_PARAM_ERR`` naming ``id``). Not covered on purpose: the
deprecated ``POST /keys/{id}?action=…`` (E6) prints its own sentences, but shares its operations
with E13–E20, whose sections print the generic form; the generic form wins there. Nor are the
reference's inconsistencies inside the generic form: some examples drop the "<Reason-Phrase>: "
prefix (registrations, aliases, key rings), or carry a copy-paste slip (E14's 409 says "Wrap
action", E35's list says "could not be deleted", double spaces, backticks for quotes). The one
systematic wording, E21's "Associated resources could not be synced", is `Operations.SYNC`.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The malformed-``{id}`` case: `rest.keys.require_well_formed_id` raises it.
MALFORMED_ID = ("INVALID_PATH_PARAM_ERR", "id")

_KEY_NOT_FOUND = "Not Found: The key could not be found. KEY_NOT_FOUND_ERR: Key does not exist"
_GONE = (
    "Gone: The requested key was previously deleted and is no longer available. "
    "Delete references to this key."
)

#: (failure phrase, reason code, target name or None) → the reference's errorMsg.
SENTENCES: Mapping[tuple[str, str, str | None], str] = {
    # E1 / E4 create
    ("Key could not be created", "MISSING_FIELD_ERR", None): (
        "Bad Request: The key is missing a required field."
    ),
    ("Key could not be created", "IMPORT_TOKEN_EXPIRED_ERR", None): (
        "Conflict: The import token that was used to encrypt this key has reached its "
        "'maxAllowedRetrievals' or 'expirationDate', and it is no longer available for key "
        "operations. To create a new import token, use 'POST /import_token'."
    ),
    # E5 get
    ("Key could not be retrieved", *MALFORMED_ID): (
        "Bad Request: The key could not be retrieved due to a malformed, invalid, or missing ID."
    ),
    ("Key could not be retrieved", "KEY_NOT_FOUND_ERR", None): (
        "Not Found: The key could not be found. Verify that the key ID specified is valid."
    ),
    # E7 patch
    ("Key could not be updated", "KEY_NOT_FOUND_ERR", None): _KEY_NOT_FOUND,
    ("Key could not be updated", "KEY_DELETED_ERR", None): _GONE,
    # E8 delete
    ("Key could not be deleted", *MALFORMED_ID): (
        "Bad Request: The key cannot be deleted due to a malformed, invalid, or missing ID."
    ),
    ("Key could not be deleted", "KEY_NOT_FOUND_ERR", None): _KEY_NOT_FOUND,
    ("Key could not be deleted", "KEY_DELETED_ERR", None): _GONE,
    # E9 metadata
    ("Key metadata could not be retrieved", *MALFORMED_ID): (
        "Bad Request: The key metadata could not be retrieved due to a malformed, invalid, or missing ID."
    ),
    # E10 purge
    (
        "Key could not be purged",
        *MALFORMED_ID,
    ): "Bad Request: The key cannot be purged due to a malformed ID.",
    ("Key could not be purged", "KEY_NOT_FOUND_ERR", None): _KEY_NOT_FOUND,
    # E12 versions
    ("Key versions could not be retrieved", "KEY_NOT_FOUND_ERR", None): _KEY_NOT_FOUND,
    ("Key versions could not be retrieved", "KEY_ACTION_INVALID_STATE_ERR", None): (
        "Conflict: The key is not in an active state."
    ),
    ("Key versions could not be retrieved", "KEY_DELETED_ERR", None): _GONE,
    # E22 / E23 key policies
    ("Key policy could not be created", "KEY_DELETED_ERR", None): _GONE,
    ("Key policies could not be retrieved", "KEY_NOT_FOUND_ERR", None): _KEY_NOT_FOUND,
    # E28 get import token
    ("Import Token could not be retrieved", "IMPORT_TOKEN_NOT_FOUND_ERR", None): (
        "Not found: An import token was not found in the specified service instance. "
        "To create an import token, use 'POST /import_token'."
    ),
    ("Import Token could not be retrieved", "IMPORT_TOKEN_EXPIRED_ERR", None): (
        "Conflict: The import token has reached its 'maxAllowedRetrievals' or 'expirationDate'. "
        "To create a new import token, use 'POST /import_token'."
    ),
}


def reference_sentence(failure: str, code: str | None, target: str | None) -> str | None:
    """The reference's errorMsg for this case, or None where it prints the generic form."""
    if code is None:
        return None
    return SENTENCES.get((failure, code, target)) or SENTENCES.get((failure, code, None))
