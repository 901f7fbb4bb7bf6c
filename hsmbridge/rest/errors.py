"""The one mapping from the domain error tree to Key Protect error responses.

Clients branch on `resources[0].reasons[0].code` and on the HTTP status (409 vs 410 vs 422), and
the Go SDK only recognises an error body that contains ``errorMsg``. So every failure of the REST
facade goes through `to_http_error`, which turns ``(exception, operation)`` into
``(status, body)`` with the §1.6 envelope:

    {"metadata": {"collectionType": "application/vnd.ibm.kms.error+json", "collectionTotal": 1},
     "resources": [{"errorMsg": "Conflict: Wrap with key could not be performed. See 'reasons' ...",
                    "reasons": [{"code", "message", "status", "moreInfo", "target"?}]}]}

Why the operation is an argument: Key Protect words ``errorMsg`` after the operation ("Key could
not be deleted"), and a few operations spell the same domain reason differently (metadata and
registrations say ``KEY_NOT_FOUND``; policies and registrations answer an invalid state with
``KEY_INVALID_STATE_ERR``/422). `Operation.overrides` carries those per-operation spellings.

Where the domain message goes is decided per reason (`Detail`), never by the exception:
- canonical Key Protect texts (``KEY_NOT_FOUND_ERR`` "Key does not exist", the 422 ciphertext
  text, ...) ignore the domain message, so an integrity failure never says which check failed;
- field-level reasons (``INVALID_FIELD_ERR``, ``BAD_BODY_ERR``, ...) use it as the reason message;
- a few reasons put it into ``errorMsg`` the way Key Protect does
  ("Conflict: 1 prior authorization(s) are required for deletion: Key could not be deleted. ...").
401, 429 and 5xx bodies carry a fixed ``errorMsg`` only. Anything that is not an `HsmBridgeError`
is a bug and becomes the fixed 500 text: exception text from below the domain layer never reaches
a body. Domain messages are safe by contract (see `hsmbridge.errors`).

Key Protect codes that have no `Reason` member (``COLLECTION_TOTAL_MISMATCH_ERR``,
``NO_BODY_ERR``, ``KEY_SEARCH_TOO_BROAD``, ``INSTANCE_NOT_FOUND_ERR``, ...) travel in the
exception's metadata under `KP_CODE`; the reason (or class) still decides the status. The target's
kind (``field``/``param``/``path_param``) travels under `TARGET_TYPE`; ``field`` is the default.
Where the reference prints a fixed ``errorMsg`` sentence for a case, `rest.messages` supplies it.
The helpers at the bottom build such exceptions so nobody spells the metadata keys by hand.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, NamedTuple, TypeVar

from hsmbridge.errors import HsmBridgeError, InvalidInput, Reason
from hsmbridge.rest.messages import reference_sentence

MORE_INFO = "https://cloud.ibm.com/apidocs/key-protect"
ERROR_COLLECTION_TYPE = "application/vnd.ibm.kms.error+json"

#: Metadata key: a Key Protect reason code that replaces the table's code (KP-only codes).
KP_CODE = "kp_code"
#: Metadata key: ``field`` (default), ``param`` or ``path_param``; the ``target.type`` on the wire.
TARGET_TYPE = "target_type"
TARGET_TYPES = frozenset({"field", "param", "path_param"})

#: The prefix Key Protect puts before every BAD_BODY_ERR detail.
BAD_BODY_PREFIX = (
    "Invalid body data was passed. "
    "Please ensure the data passed had valid formatting with no invalid characters"
)
SEE_REASONS = "See 'reasons' for more details."

UNAUTHORIZED_MSG = "Unauthorized: The user does not have access to the specified resource."
TOO_MANY_REQUESTS_MSG = "Too Many Requests: Wait a few minutes and try again."
INTERNAL_ERROR_MSG = (
    "Internal Server Error: IBM Key Protect is currently unavailable. "
    "Your request could not be processed. Try again later."
)
#: 503, not 500: the SDKs retry both, and 503 tells operators the HSM (not a bug) is the cause.
UNAVAILABLE_MSG = (
    "Service Unavailable: IBM Key Protect is currently unavailable. "
    "Your request could not be processed. Try again later."
)


class Detail(enum.Enum):
    """Where the domain message of an exception goes in the body."""

    DROP = "drop"  # the canonical Key Protect text only
    REASON = "reason"  # the reason's ``message`` (falls back to the table text when empty)
    ERROR_MSG = "error_msg"  # inserted into errorMsg: "<Phrase>: <detail>: <Op> could not be <verb>."


@dataclass(frozen=True, slots=True)
class ReasonSpec:
    """How one domain reason looks on the wire.

    `code` None means "no ``reasons`` array": the body carries ``errorMsg`` only. `fixed_error_msg`
    is the whole ``errorMsg`` for 401/429/5xx, which never mention the operation or the cause.
    """

    status: int
    code: str | None
    message: str = ""
    detail: Detail = Detail.DROP
    fixed_error_msg: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """What failed, in Key Protect's words: ``Operation("Wrap with key", "performed")`` renders
    "Wrap with key could not be performed." `overrides` swaps the table entry of some reasons for
    this operation only."""

    subject: str
    verb: str = "performed"
    overrides: Mapping[Reason, ReasonSpec] = field(default_factory=dict, compare=False, hash=False)

    @property
    def failure(self) -> str:
        return f"{self.subject} could not be {self.verb}"


def _s(status: int, code: str | None, message: str = "", detail: Detail = Detail.DROP) -> ReasonSpec:
    return ReasonSpec(status, code, message, detail)


def _fixed(status: int, error_msg: str) -> ReasonSpec:
    return ReasonSpec(status, None, fixed_error_msg=error_msg)


_KEY_STATE_MSG = "Key is not in a valid state."
_TOO_EARLY_MSG = "The key was updated recently. Please wait and try again."

#: Every `Reason`, in enum order. A test keeps it complete.
REASON_TABLE: Mapping[Reason, ReasonSpec] = {
    # 404
    Reason.KEY_NOT_FOUND: _s(404, "KEY_NOT_FOUND_ERR", "Key does not exist"),
    Reason.ALIAS_NOT_FOUND: _s(404, "ALIAS_NOT_FOUND_ERR", "Alias does not exist"),
    Reason.KEY_RING_NOT_FOUND: _s(
        404, "KEY_RING_NOT_FOUND_ERR", 'Key ring does not exist. The default key ring name is "default".'
    ),
    Reason.IMPORT_TOKEN_NOT_FOUND: _s(
        404,
        "IMPORT_TOKEN_NOT_FOUND_ERR",
        "An import token was not found in the specified service instance. "
        "To create an import token, use 'POST /import_token'.",
    ),
    Reason.REGISTRATION_NOT_FOUND: _s(404, "REGISTRATION_NOT_FOUND_ERR", "Registration does not exist"),
    Reason.NOT_FOUND: _s(404, None, detail=Detail.ERROR_MSG),
    # 410
    Reason.KEY_DELETED: _s(
        410, "KEY_DELETED_ERR", "Key has already been deleted. Delete references to this key."
    ),
    # 400 / 422
    Reason.INVALID_INPUT: _s(400, None, detail=Detail.ERROR_MSG),  # with a target: see _INVALID_CODES
    Reason.INVALID_FIELD: _s(
        400, "INVALID_FIELD_ERR", "The request contains an invalid field.", Detail.REASON
    ),
    Reason.MISSING_FIELD: _s(400, "MISSING_FIELD_ERR", "A required field is missing.", Detail.REASON),
    Reason.BAD_BODY: _s(400, "BAD_BODY_ERR", BAD_BODY_PREFIX, Detail.REASON),
    Reason.KEY_ROOT_REQUIRED: _s(
        400, "KEY_ROOT_REQ_ERR", "Requested action can only be completed with a root key."
    ),
    Reason.KEY_PAYLOAD_REQUIRED: _s(
        400,
        "KEY_PAYLOAD_REQ_ERR",
        "This root key was created with user-supplied key material: "
        "Key material is required to perform a 'rotate' action",
    ),
    Reason.INCORRECT_NONCE: _s(
        400,
        "INCORRECT_NONCE_ERR",
        "The encrypted nonce given does not match existing record. "
        "Please ensure the correct nonce was given in the request.",
    ),
    Reason.INCORRECT_NONCE_IV: _s(
        400,
        "INCORRECT_NONCE_IV_ERR",
        "The provided encrypted nonce was not encrypted with the key material given "
        "OR the provided IV does not match the encrypted nonce",
    ),
    Reason.KEY_RESTORE_EXPIRED: _s(400, "KEY_RESTORE_EXPIRED", "Key restoration has expired"),
    Reason.KEY_EXPIRED: _s(
        400,
        "KEY_EXPIRED_ERR",
        "The action could not be performed on the key because the key is expired.",
        Detail.ERROR_MSG,
    ),
    Reason.INTEGRITY_CHECK_FAILED: _s(
        422, "UNPROCESSABLE_CIPHERTEXT_ERR", "The provided ciphertext is invalid or corrupted."
    ),
    # 409
    Reason.INVALID_STATE: _s(409, "KEY_ACTION_INVALID_STATE_ERR", _KEY_STATE_MSG),
    # A lost optimistic-concurrency race: retrying succeeds, which is what REQ_TOO_EARLY_ERR says.
    Reason.CONCURRENT_UPDATE: _s(409, "REQ_TOO_EARLY_ERR", _TOO_EARLY_MSG),
    # The domain message says which limit was reached (expiry, or retrievals used up).
    Reason.IMPORT_TOKEN_EXPIRED: _s(
        409, "IMPORT_TOKEN_EXPIRED_ERR", "The import token has expired.", Detail.REASON
    ),
    Reason.ALIAS_NOT_UNIQUE: _s(
        409,
        "KEY_ALIAS_NOT_UNIQUE_ERR",
        "One or more aliases are already associated with a key in the instance.",
    ),
    Reason.ALIAS_QUOTA: _s(
        409,
        "KEY_ALIAS_QUOTA_ERR",
        "The alias quota has been reached: a key can have up to 5 aliases.",
        Detail.REASON,
    ),
    Reason.KEY_RING_QUOTA: _s(
        409,
        "KEY_RING_RESOURCE_QUOTA_ERR",
        "The key ring quota has been reached: an instance can have up to 50 key rings.",
        Detail.REASON,
    ),
    Reason.KEY_RING_NOT_EMPTY: _s(
        409, "KEY_RING_NOT_EMPTY_ERR", "The specified key ring contains at least one key (in any state)."
    ),
    Reason.KEY_RING_KEYS_NOT_DELETED: _s(
        409,
        "KEY_RING_KEYS_NOT_DELETED_ERR",
        "The specified key ring contains at least one key that is not in the Destroyed (5) state.",
    ),
    Reason.AUTHORIZATIONS_NOT_MET: _s(
        409,
        "AUTHORIZATIONS_NOT_MET",
        "Number of authorizations required to delete is not met",
        Detail.ERROR_MSG,
    ),
    Reason.NOT_DUAL_AUTH: _s(
        409, "NOT_DUAL_AUTH_ERR", "The key is not dual auth enabled and cannot be set for deletion."
    ),
    Reason.PROTECTED_RESOURCE: _s(
        409,
        "PROTECTED_RESOURCE_ERR",
        "The key cannot be deleted because the key has one or more associated resources.",
    ),
    Reason.PREVENT_KEY_DELETION: _s(
        409,
        "PREV_KEY_DEL_ERR",
        "The key cannot be deleted because it's protecting a cloud resource that has a retention policy. "
        "Before you delete this key, contact an account owner to remove the retention policy on each "
        "resource that is associated with the key.",
    ),
    Reason.KEY_CREATE_IMPORT_ACCESS: _s(
        409,
        "KEY_CREATE_IMPORT_ACCESS_ERR",
        "KeyCreateImportAccess instance policy does not allow this action",
    ),
    Reason.ALREADY_EXISTS: _s(409, None, detail=Detail.ERROR_MSG),
    Reason.TOO_EARLY: _s(409, "REQ_TOO_EARLY_ERR", _TOO_EARLY_MSG, Detail.REASON),
    Reason.ROTATION_TOO_SOON: _s(
        409,
        "KEY_ROTATION_NOT_PERMITTED",
        "This root key has been rotated within the last hour: Only one 'rotate' action per hour is permitted",
    ),
    # the rest: fixed texts, no cause, no operation
    Reason.UNAUTHENTICATED: _fixed(401, UNAUTHORIZED_MSG),
    # Key Protect answers 401, not 403, for "valid token, action not granted" (§1.5).
    Reason.PERMISSION_DENIED: _fixed(401, UNAUTHORIZED_MSG),
    Reason.RATE_LIMITED: _fixed(429, TOO_MANY_REQUESTS_MSG),
    Reason.RESOURCE_EXHAUSTED: _fixed(429, TOO_MANY_REQUESTS_MSG),
    # A fixed errorMsg like every 5xx, plus one machine-readable reason (and `Retry-After`, set in
    # rest/context.py): clients and operators can tell an HSM outage from a bug without prose.
    Reason.HSM_UNAVAILABLE: ReasonSpec(
        503,
        "HSM_UNAVAILABLE_ERR",
        "The HSM is temporarily unavailable. Retry after the interval in the Retry-After header.",
        fixed_error_msg=UNAVAILABLE_MSG,
    ),
    # 501, not 500: the Go SDK retries every 5xx except 501, and retrying cannot help here.
    Reason.UNSUPPORTED: _s(501, None, detail=Detail.ERROR_MSG),
    # the cloud push (hsmbridge/push/) answers in its own shape; never a Key Protect route's reason
    Reason.CLOUD_ERROR: _s(502, None, detail=Detail.ERROR_MSG),
    Reason.CLOUD_AUTH_FAILED: _s(502, None, detail=Detail.ERROR_MSG),
    Reason.CLOUD_UNAVAILABLE: _fixed(503, UNAVAILABLE_MSG),
    Reason.KEY_MATERIAL_MISMATCH: _s(409, None, detail=Detail.ERROR_MSG),
    Reason.INTERNAL: _fixed(500, INTERNAL_ERROR_MSG),
    Reason.ERROR: _fixed(500, INTERNAL_ERROR_MSG),
    # registrations
    Reason.REGISTRATION_DUPLICATE: _s(409, "REGISTRATION_DUP_ERR", "Registration already exists"),
    Reason.REGISTRATION_INVALID_STATE: _s(
        409,
        "REG_INVALID_STATE_ERR",
        "Request action cannot be performed on the registration in its current state.",
        Detail.REASON,
    ),
    Reason.KEY_VERSION_INVALID: _s(
        422, "KEY_VERSION_INVALID", "The key version is not valid for this registration.", Detail.REASON
    ),
    # faults (issue 15)
    Reason.STORE_UNAVAILABLE: _fixed(503, UNAVAILABLE_MSG),
    Reason.BODY_TOO_LARGE: _s(413, None, detail=Detail.ERROR_MSG),
}

#: INVALID_FIELD / INVALID_INPUT with a target: Key Protect names the code after the target kind.
_INVALID_CODES: Mapping[str, str] = {
    "field": "INVALID_FIELD_ERR",
    "param": "INVALID_PARAM_ERR",
    "path_param": "INVALID_PATH_PARAM_ERR",
}


class HttpError(NamedTuple):
    status: int
    body: dict[str, Any]


def spec_for(exc: BaseException, operation: Operation) -> ReasonSpec:
    """The wire spec of `exc`: operation override, then the reason table, then the class."""
    if not isinstance(exc, HsmBridgeError):
        return REASON_TABLE[Reason.INTERNAL]
    override = operation.overrides.get(exc.reason)
    if override is not None:
        return override
    spec = REASON_TABLE.get(exc.reason)
    if spec is not None:
        return spec
    # An unknown reason (a member added later, or a stray string): the class still knows the status.
    for cls in type(exc).__mro__:
        default = getattr(cls, "default_reason", None)
        if default is not None and default in REASON_TABLE:
            return REASON_TABLE[default]
    return REASON_TABLE[Reason.ERROR]


def to_http_error(exc: BaseException, operation: Operation) -> HttpError:
    """``(exception, operation) -> (status, body)``; the only place errors get a wire shape."""
    spec = spec_for(exc, operation)
    if spec.fixed_error_msg is not None or not isinstance(exc, HsmBridgeError):
        fixed_reasons = None
        if spec.code is not None and isinstance(exc, HsmBridgeError):  # the table's text, never exc's
            fixed_reasons = [
                {"code": spec.code, "message": spec.message, "status": spec.status, "moreInfo": MORE_INFO}
            ]
        return HttpError(spec.status, error_body(spec.fixed_error_msg or INTERNAL_ERROR_MSG, fixed_reasons))

    domain_message = (exc.message or "").strip()
    target_type = exc.metadata.get(TARGET_TYPE, "field")
    if target_type not in TARGET_TYPES:
        target_type = "field"
    code, detail, message = spec.code, spec.detail, spec.message
    overridden = exc.reason in operation.overrides
    if exc.target and not overridden and exc.reason in (Reason.INVALID_FIELD, Reason.INVALID_INPUT):
        code, detail = _INVALID_CODES[target_type], Detail.REASON
    kp_code = exc.metadata.get(KP_CODE)
    if kp_code:
        code, detail = kp_code, Detail.REASON

    error_detail: str | None = None
    if detail is Detail.REASON:
        message = domain_message or message
    elif detail is Detail.ERROR_MSG:
        error_detail = domain_message.rstrip(".").strip() or None

    if code is None:
        return HttpError(spec.status, error_body(error_message(spec.status, operation, error_detail)))
    reason: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": spec.status,
        "moreInfo": MORE_INFO,
    }
    if exc.target:
        reason["target"] = {"type": target_type, "name": exc.target}
    error_msg = reference_sentence(operation.failure, code, exc.target) or error_message(
        spec.status, operation, error_detail, with_reasons=True
    )
    return HttpError(spec.status, error_body(error_msg, [reason]))


def error_message(
    status: int, operation: Operation, detail: str | None = None, *, with_reasons: bool = False
) -> str:
    """``"<Reason-Phrase>: [<detail>: ]<Operation> could not be <verb>.[ See 'reasons' ...]"``."""
    phrase = HTTPStatus(status).phrase
    parts = [f"{phrase}:"]
    if detail:
        parts.append(f"{detail}:")
    parts.append(f"{operation.failure}.")
    if with_reasons:
        parts.append(SEE_REASONS)
    return " ".join(parts)


def error_body(error_msg: str, reasons: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The §1.6 envelope. Public so that framework errors (404 route, 405) can share the shape."""
    resource: dict[str, Any] = {"errorMsg": error_msg}
    if reasons:
        resource["reasons"] = reasons
    return {
        "metadata": {"collectionType": ERROR_COLLECTION_TYPE, "collectionTotal": 1},
        "resources": [resource],
    }


# --- building exceptions that carry Key Protect-only details ------------------------------------

E = TypeVar("E", bound=HsmBridgeError)


def with_kp_code(exc: E, code: str) -> E:
    """Give `exc` a Key Protect code that no `Reason` member spells (see module docstring)."""
    exc.metadata[KP_CODE] = code
    return exc


def _targeted(exc: E, target_type: str) -> E:
    if target_type not in TARGET_TYPES:
        raise ValueError(f"unknown target type {target_type!r}")
    if target_type != "field":
        exc.metadata[TARGET_TYPE] = target_type
    return exc


def invalid_field(name: str, expectation: str, *, target_type: str = "field") -> InvalidInput:
    """Key Protect's wording: "The field 'plaintext' must be: a base64 encoded key material"."""
    exc = InvalidInput(
        f"The {target_type} '{name}' must be: {expectation}", reason=Reason.INVALID_FIELD, target=name
    )
    return _targeted(exc, target_type)


def invalid_param(name: str, expectation: str, *, kp_code: str | None = None) -> InvalidInput:
    """A bad query parameter (``INVALID_PARAM_ERR`` unless `kp_code` says otherwise)."""
    exc = invalid_field(name, expectation, target_type="param")
    return with_kp_code(exc, kp_code) if kp_code else exc


def missing_field(name: str, *, target_type: str = "field") -> InvalidInput:
    """Key Protect's wording: "The field 'ciphertext' is required."."""
    exc = InvalidInput(f"The {target_type} '{name}' is required.", reason=Reason.MISSING_FIELD, target=name)
    return _targeted(exc, target_type)


def bad_body(detail: str | None = None) -> InvalidInput:
    """``BAD_BODY_ERR`` with Key Protect's prefix, e.g. "...: CollectionMetadata is empty"."""
    message = f"{BAD_BODY_PREFIX}: {detail}" if detail else BAD_BODY_PREFIX
    return InvalidInput(message, reason=Reason.BAD_BODY)


def no_body() -> InvalidInput:
    """``NO_BODY_ERR``: the request needs a body and has none (unwrap, rewrap, create ...)."""
    return with_kp_code(InvalidInput("Missing body in request", reason=Reason.BAD_BODY), "NO_BODY_ERR")


# --- the operations, worded as Key Protect words them --------------------------------------------

_KEY_NOT_FOUND_PLAIN = {Reason.KEY_NOT_FOUND: _s(404, "KEY_NOT_FOUND", "Key does not exist")}
_KEY_INVALID_STATE_422 = _s(
    422, "KEY_INVALID_STATE_ERR", "A key must be a root key (non-extractable) in the Activated (1) state."
)


class Operations:
    """Every endpoint's `Operation`, so errorMsg wording stays consistent across handlers."""

    CREATE_KEY = Operation("Key", "created")
    # E4: a policy the key cannot take is refused as PUT /keys/{id}/policies refuses it (422).
    CREATE_KEY_WITH_POLICY_OVERRIDES = Operation(
        "Key", "created", {Reason.INVALID_STATE: _KEY_INVALID_STATE_422}
    )
    LIST_KEYS = Operation("Keys", "listed")
    KEY_TOTAL = Operation("Key total", "retrieved")
    GET_KEY = Operation("Key", "retrieved")
    PATCH_KEY = Operation("Key", "updated")
    DELETE_KEY = Operation("Key", "deleted")
    # §8.5: the metadata examples spell the code without "_ERR".
    GET_KEY_METADATA = Operation("Key metadata", "retrieved", _KEY_NOT_FOUND_PLAIN)
    PURGE_KEY = Operation("Key", "purged")
    RESTORE_KEY = Operation("Key", "restored")
    LIST_KEY_VERSIONS = Operation("Key versions", "retrieved")
    WRAP = Operation("Wrap with key", "performed")
    UNWRAP = Operation("Unwrap with key", "performed")
    REWRAP = Operation("Rewrap with key", "performed")
    ROTATE = Operation("Key", "rotated")
    SET_KEY_FOR_DELETION = Operation("Key deletion", "scheduled")
    UNSET_KEY_FOR_DELETION = Operation("Key deletion", "cancelled")
    ENABLE = Operation("Key", "enabled")
    DISABLE = Operation("Key", "disabled")
    SYNC = Operation("Associated resources", "synced")  # E21's wording in all its examples
    KEY_ACTION = Operation("Action", "performed on key")  # E6 when the action is unknown
    PUT_KEY_POLICIES = Operation("Key policy", "created", {Reason.INVALID_STATE: _KEY_INVALID_STATE_422})
    GET_KEY_POLICIES = Operation("Key policies", "retrieved")
    PUT_INSTANCE_POLICIES = Operation("Instance policy", "created")
    GET_INSTANCE_POLICIES = Operation("Instance policies", "retrieved")
    GET_ALLOWED_IP_PORT = Operation("Allowed IP port", "retrieved")
    CREATE_IMPORT_TOKEN = Operation("Import Token", "created")
    GET_IMPORT_TOKEN = Operation("Import Token", "retrieved")
    CREATE_REGISTRATION = Operation(
        "Registration",
        "created",
        {
            **_KEY_NOT_FOUND_PLAIN,
            Reason.INVALID_STATE: _KEY_INVALID_STATE_422,
            Reason.KEY_ROOT_REQUIRED: _s(
                422, "KEY_ROOT_REQ_REG_ERR", "Requested action can only be completed with a root key."
            ),
        },
    )
    UPDATE_REGISTRATION = Operation("Registration", "updated", _KEY_NOT_FOUND_PLAIN)
    REPLACE_REGISTRATION = Operation("Registration", "replaced", _KEY_NOT_FOUND_PLAIN)
    DELETE_REGISTRATION = Operation("Registration", "deleted", _KEY_NOT_FOUND_PLAIN)
    DEACTIVATE_REGISTRATION = Operation("Registration", "deactivated", _KEY_NOT_FOUND_PLAIN)
    LIST_REGISTRATIONS = Operation("Registrations", "retrieved", _KEY_NOT_FOUND_PLAIN)
    EVENT_ACK = Operation("Event", "acknowledged", _KEY_NOT_FOUND_PLAIN)
    CREATE_ALIAS = Operation("Alias", "created")
    DELETE_ALIAS = Operation("Alias", "deleted")
    LIST_KEY_RINGS = Operation("Key rings", "retrieved")
    CREATE_KEY_RING = Operation("Key ring", "created")
    DELETE_KEY_RING = Operation("Key ring", "deleted")
