"""GCM encryption and key wrapping with output buffers sized by us, for modules whose length
queries answer short.

python-pkcs11 asks the module for an output length (`C_Encrypt`/`C_WrapKey` with a NULL output
pointer), allocates that, and calls again. NSS's softoken 3.87 answers that query too short for
CKM_AES_GCM (no room for the tag) and for CKM_AES_KEY_WRAP_KWP (RFC 5649), so the second call
fails with CKR_BUFFER_TOO_SMALL, and after `C_Encrypt` the operation stays active on the session.
Neither length is a question: GCM's output is the plaintext plus the 16-byte tag (`GCMParams`'
default), and a wrap gets a buffer large enough for any key hsmbridge stores, grown on the
module's CKR_BUFFER_TOO_SMALL. So for such modules the backend calls these functions itself,
through ctypes, on python-pkcs11's own session and object handles (one loaded module, one handle
space).

The capability probe (hsm/capabilities.py) decides which path a module gets, and measures the
GCM answer without leaving an operation active behind it. Like python-pkcs11, the foreign calls
release the GIL (ctypes' CFUNCTYPE does), so concurrency on separate sessions is unchanged.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any, ClassVar

from pkcs11 import GCMParams, Mechanism
from pkcs11 import exceptions as p11

CKM_AES_GCM = 0x1087
TAG_BYTES = 16
#: first buffer for a wrapped key: RFC 5649 of any AES key or the secrets the store keeps
WRAP_BUFFER = 4096
WRAP_BUFFER_MAX = 1 << 20
CKR_OK = 0x0
CKR_BUFFER_TOO_SMALL = 0x150
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190

_ULONG = ctypes.c_ulong


class _CK_MECHANISM(ctypes.Structure):
    _fields_: ClassVar = [("mechanism", _ULONG), ("pParameter", ctypes.c_void_p), ("ulParameterLen", _ULONG)]


class _CK_GCM_PARAMS(ctypes.Structure):
    """PKCS#11 v2.40 errata / v3.0 layout (with ulIvBits), the one python-pkcs11 sends too."""

    _fields_: ClassVar = [
        ("pIv", ctypes.c_char_p),
        ("ulIvLen", _ULONG),
        ("ulIvBits", _ULONG),
        ("pAAD", ctypes.c_char_p),
        ("ulAADLen", _ULONG),
        ("ulTagBits", _ULONG),
    ]


_C_EncryptInit = ctypes.CFUNCTYPE(_ULONG, _ULONG, ctypes.POINTER(_CK_MECHANISM), _ULONG)
_C_Encrypt = ctypes.CFUNCTYPE(
    _ULONG, _ULONG, ctypes.c_char_p, _ULONG, ctypes.c_void_p, ctypes.POINTER(_ULONG)
)
_C_WrapKey = ctypes.CFUNCTYPE(
    _ULONG, _ULONG, ctypes.POINTER(_CK_MECHANISM), _ULONG, _ULONG, ctypes.c_void_p, ctypes.POINTER(_ULONG)
)

#: CK_FUNCTION_LIST up to C_WrapKey, in the order of pkcs11f.h (Unix default packing)
_BEFORE_ENCRYPT_INIT = (
    "C_Initialize",
    "C_Finalize",
    "C_GetInfo",
    "C_GetFunctionList",
    "C_GetSlotList",
    "C_GetSlotInfo",
    "C_GetTokenInfo",
    "C_GetMechanismList",
    "C_GetMechanismInfo",
    "C_InitToken",
    "C_InitPIN",
    "C_SetPIN",
    "C_OpenSession",
    "C_CloseSession",
    "C_CloseAllSessions",
    "C_GetSessionInfo",
    "C_GetOperationState",
    "C_SetOperationState",
    "C_Login",
    "C_Logout",
    "C_CreateObject",
    "C_CopyObject",
    "C_DestroyObject",
    "C_GetObjectSize",
    "C_GetAttributeValue",
    "C_SetAttributeValue",
    "C_FindObjectsInit",
    "C_FindObjects",
    "C_FindObjectsFinal",
)


_BEFORE_WRAP_KEY = (
    "C_EncryptUpdate",
    "C_EncryptFinal",
    "C_DecryptInit",
    "C_Decrypt",
    "C_DecryptUpdate",
    "C_DecryptFinal",
    "C_DigestInit",
    "C_Digest",
    "C_DigestUpdate",
    "C_DigestKey",
    "C_DigestFinal",
    "C_SignInit",
    "C_Sign",
    "C_SignUpdate",
    "C_SignFinal",
    "C_SignRecoverInit",
    "C_SignRecover",
    "C_VerifyInit",
    "C_Verify",
    "C_VerifyUpdate",
    "C_VerifyFinal",
    "C_VerifyRecoverInit",
    "C_VerifyRecover",
    "C_DigestEncryptUpdate",
    "C_DecryptDigestUpdate",
    "C_SignEncryptUpdate",
    "C_DecryptVerifyUpdate",
    "C_GenerateKey",
    "C_GenerateKeyPair",
)


class _CK_VERSION(ctypes.Structure):
    _fields_: ClassVar = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _FunctionList(ctypes.Structure):
    _fields_: ClassVar = [
        ("version", _CK_VERSION),
        *((name, ctypes.c_void_p) for name in _BEFORE_ENCRYPT_INIT),
        ("C_EncryptInit", _C_EncryptInit),
        ("C_Encrypt", _C_Encrypt),
        *((name, ctypes.c_void_p) for name in _BEFORE_WRAP_KEY),
        ("C_WrapKey", _C_WrapKey),
    ]


#: The CKRs C_EncryptInit/C_Encrypt/C_WrapKey can return, as python-pkcs11's exception classes, so that the
#: backend's one mapping (CKR → recovery class → domain error, hsm/errors.py) treats both paths
#: alike. python-pkcs11's own table is a Cython inline function, not reachable from Python.
_ERRORS: dict[int, type[p11.PKCS11Error]] = {
    0x05: p11.GeneralError,
    0x06: p11.FunctionFailed,
    0x07: p11.ArgumentsBad,
    0x20: p11.DataInvalid,
    0x21: p11.DataLenRange,
    0x30: p11.DeviceError,
    0x31: p11.DeviceMemory,
    0x32: p11.DeviceRemoved,
    0x60: p11.KeyHandleInvalid,
    0x69: p11.KeyNotWrappable,
    0x6A: p11.KeyUnextractable,
    0x62: p11.KeySizeRange,
    0x63: p11.KeyTypeInconsistent,
    0x70: p11.MechanismInvalid,
    0x71: p11.MechanismParamInvalid,
    0x90: p11.OperationActive,
    0xB0: p11.SessionClosed,
    0xB3: p11.SessionHandleInvalid,
    0xE0: p11.TokenNotPresent,
    0xE1: p11.TokenNotRecognised,
    0x101: p11.UserNotLoggedIn,
    0x113: p11.WrappingKeyHandleInvalid,
    0x114: p11.WrappingKeySizeRange,
    0x115: p11.WrappingKeyTypeInconsistent,
}


def _fail(rv: int) -> p11.PKCS11Error:
    if rv == CKR_CRYPTOKI_NOT_INITIALIZED:  # python-pkcs11 has no class for it either
        return p11.PKCS11Error("Initialisation error (not initialized).")
    error = _ERRORS.get(rv)
    return error() if error is not None else p11.PKCS11Error(f"CKR 0x{rv:x}")


#: `(key, plaintext, iv, aad) -> ciphertext || tag`, with a python-pkcs11 key object
GcmEncrypt = Callable[[Any, bytes, bytes, bytes], bytes]
#: `(wrapping key, key, mechanism) -> wrapped key`, with python-pkcs11 key objects
WrapKey = Callable[[Any, Any, Mechanism], bytes]


def library_encrypt(key: Any, data: bytes, iv: bytes, aad: bytes) -> bytes:
    """The usual path: python-pkcs11's single-part encrypt (its length query, then C_Encrypt)."""
    return bytes(key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad)))


def library_wrap(wrapper: Any, key: Any, mechanism: Mechanism) -> bytes:
    """The usual path: python-pkcs11's C_WrapKey (its length query, then the call)."""
    return bytes(wrapper.wrap_key(key, mechanism=mechanism))


def is_short_buffer(exc: BaseException) -> bool:
    """python-pkcs11's error for a module whose length query answered short (its base class)."""
    return type(exc) is p11.PKCS11Error and "too small" in str(exc)


class SizedOutput:
    """GCM encryption and key wrapping on one loaded module, output buffers sized by us."""

    def __init__(self, module: ctypes.CDLL) -> None:
        functions = ctypes.POINTER(_FunctionList)()
        rv = module.C_GetFunctionList(ctypes.byref(functions))
        if rv != CKR_OK:
            raise _fail(rv)
        self._functions = functions.contents
        self._module = module

    def _init(self, session: int, key: int, iv: bytes, aad: bytes) -> None:
        params = _CK_GCM_PARAMS(iv, len(iv), len(iv) * 8, aad, len(aad), TAG_BYTES * 8)
        pointer = ctypes.cast(ctypes.pointer(params), ctypes.c_void_p)
        mechanism = _CK_MECHANISM(CKM_AES_GCM, pointer, ctypes.sizeof(params))
        rv = self._functions.C_EncryptInit(session, ctypes.byref(mechanism), key)
        if rv != CKR_OK:
            raise _fail(rv)

    def _finish(self, session: int, data: bytes) -> bytes:
        out = ctypes.create_string_buffer(len(data) + TAG_BYTES)
        length = _ULONG(len(out))
        rv = self._functions.C_Encrypt(session, data, len(data), out, ctypes.byref(length))
        if rv != CKR_OK:
            raise _fail(rv)
        return out.raw[: length.value]

    def wrap_key(self, wrapper: Any, key: Any, mechanism: Mechanism) -> bytes:
        """C_WrapKey for a mechanism without parameters (the AES key wraps), into a buffer
        grown on the module's CKR_BUFFER_TOO_SMALL (PKCS#11 leaves no operation active then)."""
        raw = _CK_MECHANISM(int(mechanism), None, 0)
        size = WRAP_BUFFER
        while True:
            out = ctypes.create_string_buffer(size)
            length = _ULONG(size)
            rv = self._functions.C_WrapKey(
                wrapper.session.handle,
                ctypes.byref(raw),
                wrapper.handle,
                key.handle,
                out,
                ctypes.byref(length),
            )
            if rv == CKR_OK:
                return out.raw[: length.value]
            if rv != CKR_BUFFER_TOO_SMALL or size >= WRAP_BUFFER_MAX:
                raise _fail(rv)
            size = min(max(size * 2, length.value), WRAP_BUFFER_MAX)

    def encrypt(self, key: Any, data: bytes, iv: bytes, aad: bytes) -> bytes:
        session = key.session
        self._init(session.handle, key.handle, iv, aad)
        return self._finish(session.handle, data)

    def length_query_is_short(self, key: Any, data: bytes, iv: bytes, aad: bytes) -> bool:
        """True when the module's output-length answer for GCM leaves out the tag. The operation
        is then completed with a full buffer, so the session is left clean either way."""
        session = key.session
        self._init(session.handle, key.handle, iv, aad)
        length = _ULONG(0)
        rv = self._functions.C_Encrypt(session.handle, data, len(data), None, ctypes.byref(length))
        if rv != CKR_OK:
            raise _fail(rv)
        short = length.value < len(data) + TAG_BYTES
        self._finish(session.handle, data)
        return short
