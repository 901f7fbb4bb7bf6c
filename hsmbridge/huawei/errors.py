"""The one mapping from the domain error tree to Huawei KMS error responses.

Huawei's clients read ``{"error": {"error_code": "KMS.xxxx", "error_msg": "..."}}`` (the SDK's
exception handler takes ``error_code``/``error_msg`` from the first nested object that has them) and
the HTTP status. Codes and texts follow Huawei's KMS API reference error table; statuses are the ones
the seeds list (400, 401, 403, 404, 500, 502, 504, plus 429 for throttling as Huawei's gateway does).

How a handler picks a Huawei code: it raises a domain error (hsmbridge/errors.py) and, where
Huawei has a specific code (``KMS.0209`` disabled key, ``KMS.2103`` bad digest…), puts it in the
exception's metadata with `coded`. Everything else maps by class and reason below, so the security
gate's own denials (401/403/429) and the core's errors come out in this shape too. Messages of 5xx
and 401 answers are fixed: exception text from below the domain layer never reaches a body, and an
authentication failure never says which check failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from hsmbridge.core import external_keys as ext
from hsmbridge.errors import (
    AlreadyExists,
    Conflict,
    Gone,
    HsmBridgeError,
    HsmUnavailable,
    IntegrityError,
    InternalError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    StoreUnavailable,
    Unauthenticated,
    Unsupported,
)

#: Metadata key carrying the Huawei error code chosen by the handler.
HUAWEI_CODE = "huawei_code"

E = TypeVar("E", bound=HsmBridgeError)

# Huawei KMS codes used by this facade (KMS API reference, "Error Codes").
KMS_ERROR = "KMS.0101"
KMS_IO = "KMS.0102"
INVALID_URL = "KMS.0201"
INVALID_JSON = "KMS.0202"
TOO_LONG = "KMS.0203"
MISSING_PARAMETER = "KMS.0204"
INVALID_KEY_ID = "KMS.0205"
INVALID_SEQUENCE = "KMS.0206"
KEY_NOT_FOUND = "KMS.0207"
KEY_DISABLED = "KMS.0209"
KEY_PENDING_DELETION = "KMS.0210"
TOKEN_MISSING = "KMS.0301"
TOKEN_INVALID = "KMS.0302"
NO_KEY_PERMISSION = "KMS.0306"
NO_API_PERMISSION = "KMS.0307"
INVALID_PARAMETER = "KMS.0308"
NOT_IMPORTED_KEY = "KMS.0309"
NOT_PENDING_IMPORT = "KMS.0310"
INVALID_ALIAS = "KMS.1101"
INVALID_DESCRIPTION = "KMS.1103"
ALIAS_EXISTS = "KMS.1104"
NOT_DISABLED = "KMS.1201"
NOT_ENABLED = "KMS.1301"
PENDING_DAYS = "KMS.1401"
ALREADY_PENDING_DELETION = "KMS.1402"
NOT_PENDING_DELETION = "KMS.1501"
LIMIT_RANGE = "KMS.1601"
MARKER_RANGE = "KMS.1602"
RANDOM_LENGTH = "KMS.1801"
DATAKEY_LENGTH = "KMS.1901"
INVALID_PLAIN_TEXT = "KMS.2101"
PLAIN_LENGTH = "KMS.2102"
DIGEST_MISMATCH = "KMS.2103"
INVALID_CIPHER_TEXT = "KMS.2201"
CIPHER_LENGTH = "KMS.2202"
#: Huawei's API gateway answers a rejected AK/SK signature with this code.
SIGNATURE_REJECTED = "APIGW.0301"
THROTTLED = "APIGW.0308"

_FIXED_401 = "Incorrect IAM authentication information: the request signature or token was not accepted."
_FIXED_500 = "KMS error."


@dataclass(frozen=True, slots=True)
class HuaweiError:
    status: int
    code: str
    message: str

    @property
    def body(self) -> dict[str, Any]:
        return {"error": {"error_code": self.code, "error_msg": self.message}}


def coded(error: E, code: str) -> E:
    """Attach the Huawei code a handler chose (kept in metadata, so the core stays dialect-free)."""
    error.metadata[HUAWEI_CODE] = code
    return error


def invalid(field: str, code: str = INVALID_PARAMETER, message: str | None = None) -> InvalidInput:
    return coded(
        InvalidInput(message or f"Invalid {field}.", reason=Reason.INVALID_FIELD, target=field), code
    )


def missing(field: str) -> InvalidInput:
    return coded(
        InvalidInput(
            f"The request message lacks required parameters: {field}.",
            reason=Reason.MISSING_FIELD,
            target=field,
        ),
        MISSING_PARAMETER,
    )


def key_not_found() -> NotFound:
    return coded(NotFound("The key does not exist.", reason=Reason.KEY_NOT_FOUND), KEY_NOT_FOUND)


#: The core's dialect-neutral refusals (core/external_keys.py `CONDITION`) → Huawei codes.
_BY_CONDITION = {
    ext.PENDING_IMPORT: INVALID_PARAMETER,
    ext.NOT_PENDING_IMPORT: NOT_PENDING_IMPORT,
    ext.NOT_EXTERNAL: NOT_IMPORTED_KEY,
    ext.PENDING_DELETION: KEY_PENDING_DELETION,
    ext.NOT_PENDING_DELETION: NOT_PENDING_DELETION,
    ext.DISABLED: KEY_DISABLED,
    ext.NOT_DISABLED: NOT_DISABLED,
    ext.NOT_ENABLED: NOT_ENABLED,
    ext.MATERIAL_MISMATCH: INVALID_PARAMETER,
    ext.TOKEN_REJECTED: INVALID_PARAMETER,
}


def to_huawei_error(exc: BaseException) -> HuaweiError:
    if not isinstance(exc, HsmBridgeError):
        return HuaweiError(500, KMS_ERROR, _FIXED_500)
    code = exc.metadata.get(HUAWEI_CODE) or _BY_CONDITION.get(exc.metadata.get(ext.CONDITION, ""))
    if isinstance(exc, Unauthenticated):
        return HuaweiError(401, code or SIGNATURE_REJECTED, _FIXED_401)
    if isinstance(exc, PermissionDenied):
        return HuaweiError(
            403, code or NO_API_PERMISSION, "The user role has no permission to access the API."
        )
    if isinstance(exc, ResourceExhausted):
        return HuaweiError(429, THROTTLED, "The throttling threshold has been reached.")
    if isinstance(exc, HsmUnavailable | StoreUnavailable):
        return HuaweiError(502, KMS_IO, "Abnormal KMS I/O.")
    if isinstance(exc, InternalError):
        return HuaweiError(500, KMS_ERROR, _FIXED_500)
    if isinstance(exc, NotFound | Gone):
        return HuaweiError(404, code or KEY_NOT_FOUND, exc.message if code else "The key does not exist.")
    if isinstance(exc, IntegrityError):
        # Never say which check failed: one text for every ciphertext that does not open.
        return HuaweiError(400, code or INVALID_CIPHER_TEXT, "Invalid cipher_text.")
    if isinstance(exc, AlreadyExists):
        return HuaweiError(400, code or ALIAS_EXISTS, exc.message)
    if isinstance(exc, InvalidInput | Conflict | Unsupported):
        if code is None:
            code = KEY_DISABLED if exc.reason is Reason.INVALID_STATE else INVALID_PARAMETER
        return HuaweiError(400, code, exc.message)
    return HuaweiError(500, KMS_ERROR, _FIXED_500)
