"""A bounded pool of PKCS#11 sessions around one long-lived logged-in session.

Login in PKCS#11 is per application, not per session, and python-pkcs11's `Session.close()` on
the session that logged in does `C_Logout`: every other session is logged out and the session
objects it created die. So the pool opens one *login session* with the PIN and never closes it
while serving, and opens its worker sessions without a PIN (they inherit the login).

The login session also owns the cached, unwrapped root-key objects (see `backend.py`): session
objects die with the session that created them, and the login session is the only one that lives
as long as the process serves. Calls on it are serialised by `login_lock` (PKCS#11 forbids two
concurrent operations on one session).

After the library is re-initialised (`Pkcs11Library.generation` moved on), every handle is dead:
the next checkout (or the backend's recovery, hsm/recovery.py) rebuilds the pool. A dead handle
is never passed to the module again: after `C_Initialize` SoftHSM2 hands out handle numbers from
1 again, so "closing" a session of an older generation could close somebody's new one. Each
rebuild starts a new `epoch`; what was opened in an older epoch is dropped, and closed only when
its generation is still the module's.

Every checkout holds a permit on the library (`Pkcs11Library.calls`): that is what lets a
re-initialisation fence new calls and drain the ones in flight before `C_Finalize`.

Start-up retries SoftHSM2's concurrent-open race: two processes opening one token at the same
moment (`serve --workers N`) can get CKR_GENERAL_ERROR from C_GetTokenInfo / C_OpenSession
(../shared/PITFALLS.md). `_opening` retries that with a short bounded backoff (`OPEN_ATTEMPTS`)
before the error counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pkcs11
from pkcs11 import exceptions as p11

from hsmbridge.errors import HsmUnavailable, NotFound, Reason
from hsmbridge.hsm.library import Pkcs11Library

log = logging.getLogger(__name__)

T = TypeVar("T")

#: attempts and first delay for the token-open race (0.05 s doubling: ≈3 s in all)
OPEN_ATTEMPTS = 7
OPEN_FIRST_DELAY = 0.05


@dataclass(eq=False)
class PooledSession:
    """A worker session plus what it has looked up, which dies with it."""

    session: Any
    generation: int
    #: the pool's rebuild count when it was opened; an older one is dropped on release
    epoch: int = 0
    #: cached-key load id → that key's object as seen from this session
    keys: dict[int, Any] = field(default_factory=dict)
    #: KEK label → that KEK as seen from this session (more than one while the master KEK rotates)
    keks: dict[str, Any] = field(default_factory=dict)
    #: import keypair object id → its private key as seen from this session (hsm/backend.py
    #: checks each use against the object's CKA_ID and class: handles outlive objects)
    imports: dict[str, Any] = field(default_factory=dict)
    broken: bool = False


@dataclass
class PoolStats:
    size: int
    open: int
    in_use: int
    waits: int
    wait_seconds: float
    replaced: int
    rebuilds: int


class SessionPool:
    def __init__(
        self,
        library: Pkcs11Library,
        *,
        token_label: str | None,
        slot_id: int | None,
        pin: str,
        size: int,
        checkout_timeout: float,
    ) -> None:
        if size < 1:
            raise ValueError("the session pool needs at least one session")
        self._library = library
        self._token_label = token_label
        self._slot_id = slot_id
        self._pin = pin
        self.size = size
        self.checkout_timeout = checkout_timeout
        self._cond = threading.Condition(threading.Lock())
        self._idle: list[PooledSession] = []
        self._open = 0
        self._in_use = 0
        self._waits = 0
        self._wait_seconds = 0.0
        self._replaced = 0
        self._rebuilds = 0
        self._closed = False
        self.login_lock = threading.RLock()
        self.generation = library.generation
        self.epoch = 0
        self.login: Any = None
        #: whether `login` is the session that logged the application in (closing it logs out)
        self._login_has_pin = False
        self._token_key = (token_label, slot_id)
        library.join_token(self._token_key)
        try:
            with library.calls():
                self.token = self._opening(self._find_token)
                self._opening(self._open_login)
        except BaseException:
            library.leave_token(self._token_key)
            raise

    @staticmethod
    def _opening(fn: Callable[[], T]) -> T:
        """`fn()`, retrying CKR_GENERAL_ERROR (the concurrent-open race) with a bounded backoff."""
        delay = OPEN_FIRST_DELAY
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            try:
                return fn()
            except p11.GeneralError:
                if attempt == OPEN_ATTEMPTS:
                    raise
                log.info("opening the token raced another process (CKR_GENERAL_ERROR); retrying")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # -- token and login -----------------------------------------------------------------------

    def _lookup_token(self) -> Any:
        """The token, or PKCS#11's own error: absent now is an outage to recover from (rebuild)."""
        return lookup_token(self._library, slot_id=self._slot_id, token_label=self._token_label)

    def _find_token(self) -> Any:
        """`_lookup_token` at start-up, where absent means misconfigured: say what to check."""
        try:
            return self._lookup_token()
        except p11.NoSuchToken:
            if self._slot_id is not None:
                raise NotFound(f"no token present in PKCS#11 slot {self._slot_id}") from None
            raise NotFound(
                f"no PKCS#11 token labelled {self._token_label!r}; run `hsmbridge init` or check "
                "`hsm.token_label`"
            ) from None
        except p11.MultipleTokensReturned:
            raise NotFound(
                f"several tokens labelled {self._token_label!r}; select one by `hsm.slot`"
            ) from None

    def _open_login(self) -> None:
        try:
            self.login = self.token.open(rw=True, user_pin=self._pin)
            self._login_has_pin = True
        except p11.UserAlreadyLoggedIn:
            # Another pool in this process (tests, `hsm-info` inside a server) holds the login.
            self.login = self.token.open(rw=True)
            self._login_has_pin = False
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise HsmUnavailable(
                "HSM login failed: the PIN was refused; check `hsm.pin_file` / HSMBRIDGE_HSM_PIN"
            ) from None
        except p11.PinLocked:
            raise HsmUnavailable("HSM login failed: the user PIN is locked") from None

    # -- checkout ------------------------------------------------------------------------------

    @contextmanager
    def checkout(self, timeout: float | None = None) -> Iterator[PooledSession]:
        with self._library.calls():
            pooled = self._acquire(self.checkout_timeout if timeout is None else timeout)
            try:
                yield pooled
            finally:
                self._release(pooled)

    def catch_up(self) -> None:
        """Rebuild when the module was re-initialised since, or the last rebuild failed (the token
        was still away: no login). Decided under `login_lock`: many threads see the dead
        generation at once, and one that read `login is None` while another's rebuild was in
        progress must not rebuild a second time: a forced rebuild closes the login session, and
        with it the keys the first rebuild's callers have just loaded into it (NoSuchKey under
        load after a re-initialisation). The caller holds a permit."""
        if self._library.generation == self.generation and self.login is not None:
            return
        with self.login_lock:
            if self._library.generation != self.generation or self.login is None:
                self.rebuild(force=self.login is None)

    def _acquire(self, timeout: float) -> PooledSession:
        self.catch_up()
        with self._cond:
            if self._closed:
                raise HsmUnavailable("the HSM session pool is closed")
            if not self._idle and self._open >= self.size:
                self._waits += 1
                started = time.monotonic()
                deadline = started + timeout
                while not self._idle and self._open >= self.size:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._closed:
                        self._wait_seconds += time.monotonic() - started
                        raise HsmUnavailable(
                            f"no HSM session became free within {timeout:.1f}s",
                            reason=Reason.RESOURCE_EXHAUSTED,
                        )
                    self._cond.wait(remaining)
                self._wait_seconds += time.monotonic() - started
            if self._idle:
                pooled = self._idle.pop()
                self._in_use += 1
                return pooled
            self._open += 1
            self._in_use += 1
            generation, epoch = self.generation, self.epoch
        try:
            return PooledSession(self.token.open(rw=True), generation, epoch)
        except BaseException:
            with self._cond:
                self._open -= 1
                self._in_use -= 1
                self._cond.notify()
            raise

    def _release(self, pooled: PooledSession) -> None:
        with self._cond:
            stale = pooled.broken or pooled.epoch != self.epoch
            self._in_use -= 1
            if stale or self._closed:
                self._open -= 1
            else:
                self._idle.append(pooled)
            self._cond.notify()
        if (stale or self._closed) and pooled.generation == self._library.generation:
            self._close_quietly(pooled.session)

    def replace(self, pooled: PooledSession) -> None:
        """Mark a session dead (CKR_SESSION_HANDLE_INVALID/CLOSED); release() drops it."""
        pooled.broken = True
        self._replaced += 1

    def rebuild(self, *, force: bool = False) -> None:
        """Drop every session and log in again: after a re-initialisation all handles are dead.

        `force` rebuilds even when the module was not re-initialised (the recovery of a token
        that came back on a module shared with healthy siblings): the old sessions of this
        generation are closed, the login session last, then a new login is opened. The caller
        holds a permit (`Pkcs11Library.calls`).
        """
        with self.login_lock:
            generation = self._library.generation
            if generation == self.generation and not force:
                return
            with self._cond:
                idle, self._idle = self._idle, []
                self._open -= len(idle)
                same_generation = generation == self.generation
                self.generation = generation
                self.epoch += 1
            self._rebuilds += 1
            if same_generation:
                for pooled in idle:
                    self._close_quietly(pooled.session)
                self._close_login()
            # Sessions of an older generation died with it: closing them would pass dead handles.
            self.login = None
            self.token = self._lookup_token()
            self._open_login()
            log.warning("HSM session pool rebuilt (generation %d, epoch %d)", self.generation, self.epoch)

    # -- housekeeping --------------------------------------------------------------------------

    def _close_login(self) -> None:
        """Close the login session, unless it is the one that logged the application in while
        other pools on the same token still rely on that login (closing it is a C_Logout for all
        of them): then it is left open, and the login lasts until the module is finalised."""
        login, self.login = self.login, None
        if login is None:
            return
        if self._login_has_pin and self._library.pools_on(self._token_key) > 1:
            return
        self._close_quietly(login)

    @staticmethod
    def _close_quietly(session: Any) -> None:
        with suppress(pkcs11.PKCS11Error):
            session.close()

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(
                self.size,
                self._open,
                self._in_use,
                self._waits,
                self._wait_seconds,
                self._replaced,
                self._rebuilds,
            )

    def close(self) -> None:
        """Close workers, then the login session last (its close logs the whole process out)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._cond.notify_all()
        for pooled in idle:
            if pooled.generation == self._library.generation:
                self._close_quietly(pooled.session)
        with self.login_lock:
            # A login session we did not log in with was opened without a PIN: python-pkcs11
            # closes it without C_Logout, so the pool that owns the login keeps it.
            if self._library.generation == self.generation:
                self._close_login()
            self.login = None
            self._library.leave_token(self._token_key)


def lookup_token(library: Any, *, slot_id: int | None, token_label: str | None) -> Any:
    """The token by slot or label, or PKCS#11's own error (`NoSuchToken`, …)."""
    if slot_id is not None:
        for slot in library.lib.get_slots(token_present=True):
            if slot.slot_id == slot_id:
                return slot.get_token()
        raise p11.NoSuchToken(f"no token present in PKCS#11 slot {slot_id}")
    try:
        return library.lib.get_token(token_label=token_label)
    except p11.GeneralError as exc:
        failure = exc
    # python-pkcs11's get_token asks every slot for its token info and fails as a whole when
    # one slot fails. SoftHSM2 answers C_GetTokenInfo with CKR_GENERAL_ERROR for a token whose
    # directory is gone, so one member of a group being away left every other pool on the
    # module unable to rebuild. So ask slot by slot, skipping a failing one; the error counts
    # only when no slot holds our token (it may be ours: transient, and at start-up the
    # concurrent-open race that `_opening` retries).
    found = []
    for slot in library.lib.get_slots(token_present=True):
        try:
            token = slot.get_token()
        except (p11.GeneralError, p11.TokenNotPresent, p11.TokenNotRecognised):
            continue
        if token.label == token_label:
            found.append(token)
    if len(found) > 1:
        raise p11.MultipleTokensReturned(f"several tokens labelled {token_label!r}")
    if found:
        return found[0]
    raise failure
