"""Load a PKCS#11 module so that it is safe to call from many threads.

python-pkcs11 calls `C_Initialize(NULL)`. With NULL, the PKCS#11 spec lets a module assume the
application is single-threaded, and SoftHSM2 then runs without any mutex: two threads doing GCM on
their own sessions crash the process (../shared/PITFALLS.md). python-pkcs11 releases the GIL around
every call, so the GIL does not save us. And some modules refuse NULL outright: NSS's softoken
needs its configuration (`configdir=...`) in `CK_C_INITIALIZE_ARGS.pReserved`, the way p11-kit's
`x-init-reserved` passes it, and answers NULL with CKR_ARGUMENTS_BAD.

So we initialise the module ourselves, through ctypes, before python-pkcs11 sees it:
`C_Initialize(CK_C_INITIALIZE_ARGS{flags = CKF_OS_LOCKING_OK, pReserved = hsm.init_args})`. Then
python-pkcs11 attaches to the same loaded module (`dlopen` of one path returns one handle) through
a subclass whose `initialize()` does nothing: `lib.__init__` calls it (a `cpdef`, so the Python
override is what runs) and then only reads `C_GetInfo`. We never call python-pkcs11's
`initialize()/reinitialize()/finalize()` afterwards: they would pass NULL again.

`tests/test_hsm_library.py` guards the assumptions (pinned python-pkcs11 version, the module is
initialised by us, the 8-thread stress run is clean).

One loaded module per path per process: `Pkcs11Library.load()` returns a shared instance, because
`C_Finalize` on one copy would finalise the others too.

**No call inside the module while it is finalised.** `C_Finalize` while another thread is inside a
PKCS#11 call frees what that call is using: the daemon died with SIGSEGV in 2 of 2 runs that
re-initialised under load (issue 15). So every call from the serving path holds a *permit*
(`calls()`, taken by the session pool's checkout), and `reinitialize` first *fences* (new permits
are refused at once with `HsmUnavailable`, so callers fail fast instead of queueing), then
*drains* (waits until no permit is held), and only then calls `C_Finalize`/`C_Initialize`. A drain
that does not finish in time aborts the attempt without finalising: a call stuck inside the
module (a hung network HSM) is never pulled out from under. The backend's recovery
(hsm/recovery.py) retries, and reports itself wedged if that keeps happening.

**Shared by every backend on the same module path.** Two backends on one module (two tokens or
slots of one HSM, hsm/group.py) share one `C_Initialize`: re-initialising for one of them kills
the other's sessions and handles too. Each backend compares `generation` to notice it and
rebuilds on its next checkout; `recovery_lock` keeps their recoveries from interleaving, and
`healthy_users()` lets a backend whose own token is gone hold back from re-initialising a module
its healthy siblings are serving from (see hsm/recovery.py).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import pkcs11
import pkcs11._pkcs11

from hsmbridge.errors import HsmUnavailable, InvalidInput
from hsmbridge.hsm.sized import SizedOutput

log = logging.getLogger(__name__)

CKR_OK = 0x0
CKR_ARGUMENTS_BAD = 0x7
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
CKF_OS_LOCKING_OK = 0x2

#: Metadata key of `HsmUnavailable`: whole seconds after which a retry makes sense; the REST and
#: gRPC boundaries send it as `Retry-After` / in `ErrorInfo.metadata`.
RETRY_AFTER = "retry_after"
#: how long a call waits for a re-initialisation in progress before it is refused (it may be on
#: an event loop, where every other request waits with it)
FENCE_WAIT = 0.1

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
        ("pReserved", ctypes.c_char_p),
    ]


class _AttachedLib(pkcs11._pkcs11.lib):
    """python-pkcs11's library object on a module hsmbridge has already initialised."""

    def initialize(self) -> None:
        """The module is initialised (with our arguments) before this object exists."""


class DrainTimeout(HsmUnavailable):
    """Calls stayed inside the module too long to re-initialise it safely."""


class Fenced(HsmUnavailable):
    """A call refused because the module is being re-initialised (by any backend on it): says
    nothing about the caller's token, which an HSM group must not take out of service for it."""


class Pkcs11Library:
    """A loaded, OS-locking-initialised PKCS#11 module, shared per path within the process.

    `generation` increases on every re-initialisation: every session and object handle from an
    older generation is dead, and holders (the session pool) compare it to know when to rebuild.
    """

    _instances: ClassVar[dict[str, Pkcs11Library]] = {}
    _instances_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str, init_args: str | None = None) -> None:
        self.path = path
        self.init_args = init_args
        try:
            module = ctypes.CDLL(path)
        except OSError:
            raise InvalidInput(
                f"cannot load the PKCS#11 module {path!r}; check `hsm.module` in the configuration"
            ) from None
        functions = ctypes.POINTER(_CK_FUNCTION_LIST_HEAD)()
        rv = module.C_GetFunctionList(ctypes.byref(functions))
        if rv != CKR_OK:
            raise HsmUnavailable(f"C_GetFunctionList failed with CKR 0x{rv:x}")
        self._functions = functions.contents
        self._module = module  # keep the handle alive as long as the function pointers
        #: GCM and key wrap with output buffers sized by us, for modules whose length query is short
        self.sized = SizedOutput(module)
        #: one re-initialisation (and the rebuild after it) at a time, whichever backend asks
        self.recovery_lock = threading.RLock()
        self._gate = threading.Condition(threading.Lock())
        self._in_flight = 0
        self._fenced = False
        self._initialized = False
        #: time.monotonic() of the last successful C_Initialize
        self.initialized_at = 0.0
        #: the backends' health states on this module (weak: a closed backend drops out)
        self._users: weakref.WeakSet[Any] = weakref.WeakSet()
        #: open session pools per token: login is per application, so they share one
        self._token_pools: collections.Counter[Any] = collections.Counter()
        self.generation = 0
        self._finalize()  # someone else in the process may have initialised it with NULL
        self._initialize_with_locking()
        try:
            self.lib = _AttachedLib(path)
        except pkcs11.PKCS11Error as exc:
            raise InvalidInput(
                f"cannot use the PKCS#11 module {path!r}: {type(exc).__name__}; "
                "check `hsm.module` in the configuration"
            ) from None
        # Loaded for the life of the process (instances are shared and never closed): one extra
        # reference keeps python-pkcs11's `__dealloc__` from running during interpreter
        # shutdown, when the subclass it looks `unload` up through may already be torn down.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(self.lib))

    @classmethod
    def load(cls, path: str, init_args: str | None = None) -> Pkcs11Library:
        """The process's one instance for `path`. A module is initialised once, so two
        configurations that disagree on its initialisation arguments cannot both be honoured."""
        with cls._instances_lock:
            instance = cls._instances.get(path)
            if instance is None:
                instance = cls._instances[path] = cls(path, init_args)
            elif instance.init_args != init_args:
                raise InvalidInput(
                    f"the PKCS#11 module {path!r} is configured with two different `init_args`; "
                    "one module is initialised once per process"
                )
            return instance

    def _finalize(self) -> None:
        self._initialized = False
        rv = self._functions.C_Finalize(None)
        if rv not in (CKR_OK, CKR_CRYPTOKI_NOT_INITIALIZED):
            log.warning("C_Finalize returned CKR 0x%x", rv)

    def _initialize_args(self) -> _CK_C_INITIALIZE_ARGS:
        reserved = self.init_args.encode() if self.init_args is not None else None
        return _CK_C_INITIALIZE_ARGS(None, None, None, None, CKF_OS_LOCKING_OK, reserved)

    def _initialize_with_locking(self) -> None:
        args = self._initialize_args()
        rv = self._functions.C_Initialize(ctypes.byref(args))
        if rv != CKR_OK:
            hint = ""
            if rv == CKR_ARGUMENTS_BAD:
                hint = (
                    ": the module refused its initialisation arguments; check `hsm.init_args` "
                    "(NSS softoken needs its configdir there)"
                )
            raise HsmUnavailable(f"C_Initialize with CKF_OS_LOCKING_OK failed with CKR 0x{rv:x}{hint}")
        self._initialized = True
        self.initialized_at = time.monotonic()
        self.generation += 1
        log.info(
            "PKCS#11 module %s initialised with CKF_OS_LOCKING_OK (generation %d)", self.path, self.generation
        )

    def is_initialized_by_us(self) -> bool:
        """True when the module is initialised: a second C_Initialize must be refused.

        Used by the guard test; harmless (the refused call changes nothing).
        """
        args = self._initialize_args()
        return bool(self._functions.C_Initialize(ctypes.byref(args)) == CKR_CRYPTOKI_ALREADY_INITIALIZED)

    # -- permits, fence and drain -------------------------------------------------------------------

    @contextmanager
    def calls(self, wait: float = FENCE_WAIT) -> Iterator[None]:
        """Hold a permit to call into the module. While it is being re-initialised, wait up to
        `wait` (a re-initialisation takes well under a millisecond on SoftHSM2: a sibling backend
        on the same module should not fail for it), then refuse."""
        with self._gate:
            if self._fenced and not self._gate.wait_for(lambda: not self._fenced, wait):
                raise Fenced("the HSM is being re-initialised; retry shortly", metadata={RETRY_AFTER: "1"})
            self._in_flight += 1
        try:
            yield
        finally:
            with self._gate:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._gate.notify_all()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def register(self, user: Any) -> None:
        """Count `user` (a backend's `HsmHealth`, hsm/recovery.py) among this module's."""
        self._users.add(user)

    def join_token(self, key: Any) -> None:
        with self._gate:
            self._token_pools[key] += 1

    def leave_token(self, key: Any) -> None:
        with self._gate:
            self._token_pools[key] -= 1

    def pools_on(self, key: Any) -> int:
        """Open session pools on the token `key`: the one holding the PIN login must not log the
        others out by closing it (hsm/pool.py)."""
        with self._gate:
            return self._token_pools[key]

    def healthy_users(self, besides: Any) -> int:
        """How many other backends on this module are serving now (each confirms with a probe)."""
        return sum(1 for user in list(self._users) if user is not besides and user.confirm())

    def reinitialize(self, seen_generation: int, *, drain_timeout: float) -> int:
        """One fenced, drained `C_Finalize` + `C_Initialize`; returns the new generation.

        Many threads or backends may see the same dead device: a caller whose `seen_generation` is
        no longer current finds the work done and gets the new generation. Raises `DrainTimeout`
        (nothing finalised) when in-flight calls do not leave within `drain_timeout`, and
        `HsmUnavailable` when `C_Initialize` fails (the module stays fenced: nothing may call into
        an uninitialised module; the next attempt tries again).
        """
        with self.recovery_lock:
            if self.generation != seen_generation and self._initialized:
                return self.generation
            with self._gate:
                self._fenced = True
                drained = self._gate.wait_for(lambda: self._in_flight == 0, drain_timeout)
                if not drained:
                    self._fenced = not self._initialized
                    self._gate.notify_all()
                    raise DrainTimeout(
                        f"{self._in_flight} PKCS#11 call(s) still inside the module after "
                        f"{drain_timeout:.1f}s; not re-initialising under them"
                    )
            try:
                self._finalize()
                self._initialize_with_locking()
            finally:
                with self._gate:
                    self._fenced = not self._initialized
                    self._gate.notify_all()
            return self.generation

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
