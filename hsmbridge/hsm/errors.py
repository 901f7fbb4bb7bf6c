"""PKCS#11 return values → the domain error tree, in one place.

python-pkcs11 raises one exception class per CKR. Two extra dimensions matter to the caller:

- *what recovery helps* (`Recovery`): a dead session is replaced, a stale object handle is looked
  up again, a dead device or library is re-initialised with backoff; then the operation may be
  retried once when that is safe (it changes no persistent state).
- *which domain error* the caller sees: GCM tag or AAD mismatch comes back from SoftHSM2 as
  `CKR_GENERAL_ERROR`, so on a decrypt that is an `IntegrityError`, not an internal error.

Messages name the operation and the CKR class only; never a buffer, never a PIN.
"""

from __future__ import annotations

import enum

from pkcs11 import exceptions as p11

from hsmbridge.errors import (
    HsmBridgeError,
    HsmUnavailable,
    IntegrityError,
    InternalError,
    InvalidInput,
    NotFound,
    Reason,
    Unsupported,
)


class Recovery(enum.Enum):
    NONE = "none"
    #: nothing to repair, just try again (see `transient_recovery`)
    RETRY = "retry"
    REPLACE_SESSION = "replace-session"
    RELOAD_OBJECT = "reload-object"
    REINITIALIZE = "reinitialize"


_SESSION_DEAD = (p11.SessionHandleInvalid, p11.SessionClosed)
_OBJECT_STALE = (
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
    p11.WrappingKeyHandleInvalid,
    p11.UnwrappingKeyHandleInvalid,
)
#: The device, the token or the library is gone or was reset: only a re-initialisation (and a
#: new login) helps, and the HSM's recovery thread retries that until it does (hsm/recovery.py).
#: NoSuchToken / TokenNotRecognised come from looking the token up again while it is absent;
#: SlotIDInvalid from opening a session on a module finalised behind our back (NSS softoken:
#: its sessions answer SessionHandleInvalid, and then its slots are gone).
_DEVICE_DEAD = (
    p11.SlotIDInvalid,
    p11.DeviceError,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.NoSuchToken,
    p11.UserNotLoggedIn,
    p11.DeviceMemory,
)
_VERIFY_FAILED = (
    p11.GeneralError,
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.WrappedKeyInvalid,
    p11.WrappedKeyLenRange,
    p11.DataInvalid,
    p11.FunctionFailed,
    p11.TemplateInconsistent,
    p11.KeySizeRange,
)
_UNSUPPORTED = (p11.MechanismInvalid, p11.MechanismParamInvalid, p11.FunctionNotSupported, p11.ArgumentsBad)


class StaleTokenView(p11.PKCS11Error):
    """An object that existed at start-up (the master KEK) cannot be found any more.

    The token restarted or failed over, or (SoftHSM2) its directory vanished for a moment: the
    module's view of the token is stale and only a re-initialisation refreshes it.
    """


def _is_not_initialized(exc: p11.PKCS11Error) -> bool:
    # python-pkcs11 has no class for CKR_CRYPTOKI_NOT_INITIALIZED; it raises the base class.
    return type(exc) is p11.PKCS11Error and "not initialized" in str(exc)


def recovery_for(exc: BaseException) -> Recovery:
    if isinstance(exc, _SESSION_DEAD):
        return Recovery.REPLACE_SESSION
    if isinstance(exc, _OBJECT_STALE):
        return Recovery.RELOAD_OBJECT
    if isinstance(exc, (*_DEVICE_DEAD, StaleTokenView)) or (
        isinstance(exc, p11.PKCS11Error) and _is_not_initialized(exc)
    ):
        return Recovery.REINITIALIZE
    return Recovery.NONE


def transient_recovery(exc: BaseException) -> Recovery:
    """`recovery_for`, plus: outside a verification, CKR_GENERAL_ERROR is worth one more try.

    Measured on SoftHSM2 2.6.1: after a session that owned objects is closed, the next object
    creation or C_FindObjectsInit can fail once with CKR_GENERAL_ERROR (a stale handle-manager
    entry for a recycled address, removed by that failure); the same call then succeeds.
    Verifying operations never get here: their GENERAL_ERROR means a bad tag and is mapped to an
    IntegrityError before it reaches the retry loop.
    """
    recovery = recovery_for(exc)
    if recovery is Recovery.NONE and isinstance(exc, p11.GeneralError):
        return Recovery.RETRY
    return recovery


def to_domain(exc: BaseException, operation: str, *, verifying: bool = False) -> HsmBridgeError:
    """Map a python-pkcs11 exception raised by `operation`.

    `verifying` marks operations whose failure means "the input did not authenticate" (GCM
    decrypt, OAEP unwrap, nonce check): they all become one `IntegrityError`, whatever the CKR,
    so that callers cannot tell padding failures from tag failures (no oracle).
    """
    if isinstance(exc, HsmBridgeError):
        return exc
    name = type(exc).__name__
    if verifying and isinstance(exc, (*_VERIFY_FAILED, p11.DataLenRange)):
        return IntegrityError("the ciphertext could not be authenticated")
    if isinstance(exc, (p11.NoSuchKey, p11.NoSuchToken)):
        return NotFound(f"{operation}: object not found on the HSM ({name})")
    if isinstance(exc, p11.DataLenRange):
        return InvalidInput(
            f"{operation}: input length out of range for the HSM", reason=Reason.INVALID_FIELD
        )
    if isinstance(exc, _UNSUPPORTED):
        return Unsupported(f"{operation}: the HSM does not support this ({name})")
    if isinstance(exc, (p11.PinIncorrect, p11.PinInvalid, p11.PinLocked, p11.PinExpired)):
        return HsmUnavailable(f"{operation}: HSM login failed ({name}); check the configured PIN")
    if recovery_for(exc) is not Recovery.NONE or isinstance(exc, (p11.SessionCount, p11.HostMemory)):
        return HsmUnavailable(f"{operation}: the HSM is unavailable ({name})")
    return InternalError(f"{operation}: HSM operation failed ({name})")
