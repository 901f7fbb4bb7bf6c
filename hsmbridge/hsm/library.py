"""Load a PKCS#11 module so that it is safe to call from many threads.

python-pkcs11 calls `C_Initialize(NULL)`. With NULL, the PKCS#11 spec lets a module assume the
application is single-threaded, and SoftHSM2 then runs without any mutex: two threads doing GCM on
their own sessions crash the process (../shared/PITFALLS.md). python-pkcs11 releases the GIL around
every call, so the GIL does not save us.

The fix: let python-pkcs11 load the module (it resolves the function list in `__cinit__` and calls
`C_Initialize(NULL)` in `__init__`), then — through ctypes, on the *same* loaded module, since
`dlopen` of one path returns one handle — `C_Finalize(NULL)` and `C_Initialize` again with
`CK_C_INITIALIZE_ARGS{flags = CKF_OS_LOCKING_OK}`. No session exists yet at that point, so
nothing is lost, and python-pkcs11's function pointers stay valid. We never call python-pkcs11's
own `initialize()/reinitialize()` afterwards: they would pass NULL again.

`tests/test_hsm_library.py` guards the assumptions (pinned python-pkcs11 version, the module is
initialised by us, the 8-thread stress run is clean).

One loaded module per path per process: `Pkcs11Library.load()` returns a shared instance, because
`C_Finalize` on one copy would finalise the others too.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from typing import ClassVar

import pkcs11

from hsmbridge.errors import HsmUnavailable, InvalidInput

log = logging.getLogger(__name__)

CKR_OK = 0x0
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKF_OS_LOCKING_OK = 0x2

_CK_RV = ctypes.c_ulong
_C_Initialize = ctypes.CFUNCTYPE(_CK_RV, ctypes.c_void_p)
_C_Finalize = ctypes.CFUNCTYPE(_CK_RV, ctypes.c_void_p)


class _CK_VERSION(ctypes.Structure):
    _fields_: ClassVar = [("major", ctypes.c_ubyte), ("minor", ctypes.c_ubyte)]


class _CK_FUNCTION_LIST_HEAD(ctypes.Structure):
    """The first members of CK_FUNCTION_LIST; only these are needed (Unix default packing)."""

    _fields_: ClassVar = [
        ("version", _CK_VERSION),
        ("C_Initialize", _C_Initialize),
        ("C_Finalize", _C_Finalize),
    ]


class _CK_C_INITIALIZE_ARGS(ctypes.Structure):
    _fields_: ClassVar = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", ctypes.c_ulong),
        ("pReserved", ctypes.c_void_p),
    ]


class Pkcs11Library:
    """A loaded, OS-locking-initialised PKCS#11 module, shared per path within the process.

    `generation` increases on every re-initialisation: every session and object handle from an
    older generation is dead, and holders (the session pool) compare it to know when to rebuild.
    """

    _instances: ClassVar[dict[str, Pkcs11Library]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.lib = pkcs11.lib(path)
        except pkcs11.PKCS11Error as exc:
            raise InvalidInput(
                f"cannot load the PKCS#11 module {path!r}: {type(exc).__name__}; "
                "check `hsm.module` in the configuration"
            ) from None
        functions = ctypes.POINTER(_CK_FUNCTION_LIST_HEAD)()
        module = ctypes.CDLL(path)
        rv = module.C_GetFunctionList(ctypes.byref(functions))
        if rv != CKR_OK:
            raise HsmUnavailable(f"C_GetFunctionList failed with CKR 0x{rv:x}")
        self._functions = functions.contents
        self._module = module  # keep the handle alive as long as the function pointers
        self._lock = threading.Lock()
        self.generation = 0
        self._finalize()
        self._initialize_with_locking()

    @classmethod
    def load(cls, path: str) -> Pkcs11Library:
        with cls._instances_lock:
            instance = cls._instances.get(path)
            if instance is None:
                instance = cls._instances[path] = cls(path)
            return instance

    def _finalize(self) -> None:
        rv = self._functions.C_Finalize(None)
        if rv not in (CKR_OK, CKR_CRYPTOKI_NOT_INITIALIZED):
            log.warning("C_Finalize returned CKR 0x%x", rv)

    def _initialize_with_locking(self) -> None:
        args = _CK_C_INITIALIZE_ARGS(None, None, None, None, CKF_OS_LOCKING_OK, None)
        rv = self._functions.C_Initialize(ctypes.byref(args))
        if rv != CKR_OK:
            raise HsmUnavailable(f"C_Initialize with CKF_OS_LOCKING_OK failed with CKR 0x{rv:x}")
        self.generation += 1
        log.info(
            "PKCS#11 module %s initialised with CKF_OS_LOCKING_OK (generation %d)", self.path, self.generation
        )

    def is_initialized_by_us(self) -> bool:
        """True when the module is initialised: a second C_Initialize must be refused.

        Used by the guard test; harmless (the refused call changes nothing).
        """
        args = _CK_C_INITIALIZE_ARGS(None, None, None, None, CKF_OS_LOCKING_OK, None)
        return bool(self._functions.C_Initialize(ctypes.byref(args)) == CKR_CRYPTOKI_ALREADY_INITIALIZED)

    def reinitialize(self, seen_generation: int, *, attempts: int = 5, first_delay: float = 0.1) -> int:
        """Finalise and initialise again after a device-level failure, with backoff.

        Many threads may hit the same dead device at once: only the first one whose
        `seen_generation` is current does the work, the others return the new generation.
        """
        with self._lock:
            if self.generation != seen_generation:
                return self.generation
            delay = first_delay
            for attempt in range(1, attempts + 1):
                self._finalize()
                try:
                    self._initialize_with_locking()
                    return self.generation
                except HsmUnavailable:
                    log.warning("PKCS#11 re-initialisation attempt %d/%d failed", attempt, attempts)
                    if attempt == attempts:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def finalize_behind_our_back(self) -> None:
        """Test hook: simulate another component finalising the module."""
        self._finalize()

    @property
    def info(self) -> dict[str, str]:
        lib = self.lib
        return {
            "manufacturer": lib.manufacturer_id,
            "library_description": lib.library_description,
            "library_version": "{}.{}".format(*lib.library_version),
            "cryptoki_version": "{}.{}".format(*lib.cryptoki_version),
        }
