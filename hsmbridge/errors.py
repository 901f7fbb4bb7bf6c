"""The one error tree of hsmbridge.

Every layer raises these and only these; each boundary maps them exactly once:

    PKCS#11 CKR ──(hsm/errors.py)──▶ domain error ──(grpc/errors.py)──▶ gRPC status + ErrorInfo
                                                  ──(rest/errors.py)──▶ Key Protect reason code + HTTP status

    HsmBridgeError
    ├── InvalidInput            the caller sent something malformed or out of range
    │   └── IntegrityError      a ciphertext/tag/AAD did not verify (tampered, wrong key/tenant/AAD)
    ├── NotFound                no such key, version, alias, import token, … (in this tenant)
    ├── Gone                    it existed but was deleted (Key Protect answers 410)
    ├── Conflict                the request is valid but the resource's state forbids it now
    │   ├── AlreadyExists       a unique name (alias, …) is taken
    │   └── TooEarly            allowed later (rotation within the hour, purge before 4 h, …)
    ├── Unauthenticated         no or bad credentials
    ├── PermissionDenied        valid credentials, action not granted
    ├── ResourceExhausted       a quota or rate limit; retry later
    ├── HsmUnavailable          the HSM cannot serve now (device error, pool exhausted); retry later
    ├── StoreUnavailable        the store cannot serve now (disk full, read-only, database down); retry later
    ├── Unsupported             the HSM or this server lacks the feature
    ├── CloudError              a cloud KMS refused a push call (its own code in metadata)
    │   └── CloudUnavailable    a cloud KMS did not answer (refused, timed out, 5xx/429 after retries)
    └── InternalError           a bug or an invariant broken; never the caller's fault

Why a `reason`: clients branch on machine-readable codes, not on prose. Reasons are the `Reason`
enum (``KEY_NOT_FOUND``, ``INVALID_STATE``…); the REST boundary maps them to Key Protect's
spelling, the gRPC boundary sends them as `google.rpc.ErrorInfo.reason`. Messages are for
people and **must never contain key material**: every constructor takes only text the raiser
wrote, and the HSM layer never interpolates buffers into messages.
"""

from __future__ import annotations

import enum
from typing import Any


class Reason(enum.StrEnum):
    """Machine-readable reasons. Adapters map these, never parse messages."""

    # NotFound
    KEY_NOT_FOUND = "KEY_NOT_FOUND"
    ALIAS_NOT_FOUND = "ALIAS_NOT_FOUND"
    KEY_RING_NOT_FOUND = "KEY_RING_NOT_FOUND"
    IMPORT_TOKEN_NOT_FOUND = "IMPORT_TOKEN_NOT_FOUND"
    REGISTRATION_NOT_FOUND = "REGISTRATION_NOT_FOUND"
    NOT_FOUND = "NOT_FOUND"
    # Gone
    KEY_DELETED = "KEY_DELETED"
    # InvalidInput
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_FIELD = "INVALID_FIELD"
    MISSING_FIELD = "MISSING_FIELD"
    BAD_BODY = "BAD_BODY"
    KEY_ROOT_REQUIRED = "KEY_ROOT_REQUIRED"
    KEY_PAYLOAD_REQUIRED = "KEY_PAYLOAD_REQUIRED"
    INCORRECT_NONCE = "INCORRECT_NONCE"
    INCORRECT_NONCE_IV = "INCORRECT_NONCE_IV"
    KEY_RESTORE_EXPIRED = "KEY_RESTORE_EXPIRED"
    KEY_EXPIRED = "KEY_EXPIRED"
    INTEGRITY_CHECK_FAILED = "INTEGRITY_CHECK_FAILED"
    # Conflict
    INVALID_STATE = "INVALID_STATE"
    CONCURRENT_UPDATE = "CONCURRENT_UPDATE"
    IMPORT_TOKEN_EXPIRED = "IMPORT_TOKEN_EXPIRED"
    ALIAS_NOT_UNIQUE = "ALIAS_NOT_UNIQUE"
    ALIAS_QUOTA = "ALIAS_QUOTA"
    KEY_RING_QUOTA = "KEY_RING_QUOTA"
    KEY_RING_NOT_EMPTY = "KEY_RING_NOT_EMPTY"
    KEY_RING_KEYS_NOT_DELETED = "KEY_RING_KEYS_NOT_DELETED"
    AUTHORIZATIONS_NOT_MET = "AUTHORIZATIONS_NOT_MET"
    NOT_DUAL_AUTH = "NOT_DUAL_AUTH"
    PROTECTED_RESOURCE = "PROTECTED_RESOURCE"
    PREVENT_KEY_DELETION = "PREVENT_KEY_DELETION"
    KEY_CREATE_IMPORT_ACCESS = "KEY_CREATE_IMPORT_ACCESS"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    # TooEarly
    TOO_EARLY = "TOO_EARLY"
    ROTATION_TOO_SOON = "ROTATION_TOO_SOON"
    # the rest
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    RATE_LIMITED = "RATE_LIMITED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    HSM_UNAVAILABLE = "HSM_UNAVAILABLE"
    UNSUPPORTED = "UNSUPPORTED"
    INTERNAL = "INTERNAL"
    ERROR = "ERROR"
    # registrations (appended)
    REGISTRATION_DUPLICATE = "REGISTRATION_DUPLICATE"
    REGISTRATION_INVALID_STATE = "REGISTRATION_INVALID_STATE"
    KEY_VERSION_INVALID = "KEY_VERSION_INVALID"
    # faults (issue 15, appended)
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    BODY_TOO_LARGE = "BODY_TOO_LARGE"
    # pushing keys to cloud KMSs (hsmbridge/push/); metadata["cloud_code"] carries the cloud's own
    CLOUD_ERROR = "CLOUD_ERROR"
    CLOUD_AUTH_FAILED = "CLOUD_AUTH_FAILED"
    CLOUD_UNAVAILABLE = "CLOUD_UNAVAILABLE"
    KEY_MATERIAL_MISMATCH = "KEY_MATERIAL_MISMATCH"


class HsmBridgeError(Exception):
    """Root of the tree. `reason` is stable and machine-readable; `target` names the bad field."""

    default_reason: Reason = Reason.ERROR

    def __init__(
        self,
        message: str,
        *,
        reason: Reason | None = None,
        target: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.target = target
        self.metadata = dict(metadata or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, message={self.message!r})"

    def with_context(self, **metadata: Any) -> HsmBridgeError:
        self.metadata.update({k: str(v) for k, v in metadata.items()})
        return self


class InvalidInput(HsmBridgeError):
    default_reason = Reason.INVALID_INPUT


class IntegrityError(InvalidInput):
    """Authentication failed. Deliberately says nothing about *which* check failed."""

    default_reason = Reason.INTEGRITY_CHECK_FAILED


class NotFound(HsmBridgeError):
    default_reason = Reason.NOT_FOUND


class Gone(HsmBridgeError):
    default_reason = Reason.KEY_DELETED


class Conflict(HsmBridgeError):
    default_reason = Reason.INVALID_STATE


class AlreadyExists(Conflict):
    default_reason = Reason.ALREADY_EXISTS


class TooEarly(Conflict):
    default_reason = Reason.TOO_EARLY


class Unauthenticated(HsmBridgeError):
    default_reason = Reason.UNAUTHENTICATED


class PermissionDenied(HsmBridgeError):
    default_reason = Reason.PERMISSION_DENIED


class ResourceExhausted(HsmBridgeError):
    default_reason = Reason.RESOURCE_EXHAUSTED


class HsmUnavailable(HsmBridgeError):
    default_reason = Reason.HSM_UNAVAILABLE


class StoreUnavailable(HsmBridgeError):
    """The store refused a read or write for a reason of its own (disk full, read-only file
    system, I/O error, database unreachable), not because of the request: retrying later works."""

    default_reason = Reason.STORE_UNAVAILABLE


class Unsupported(HsmBridgeError):
    default_reason = Reason.UNSUPPORTED


class CloudError(HsmBridgeError):
    """A target cloud KMS refused a push call (hsmbridge/push/). `metadata["cloud_code"]` is the
    cloud's own error code; the message never carries credentials or key material."""

    default_reason = Reason.CLOUD_ERROR


class CloudUnavailable(CloudError):
    """The target did not answer usefully: connection refused, timeout, 5xx or 429 after retries."""

    default_reason = Reason.CLOUD_UNAVAILABLE


class InternalError(HsmBridgeError):
    default_reason = Reason.INTERNAL
