"""One backend's HSM health: up, or recovering in the background until it is up again.

Why a state machine with its own thread, instead of re-initialising inline in the failing call:

- **Never gives up.** An outage lasts as long as it lasts (a network HSM failing over, a token
  re-inserted, SoftHSM2's directory back after 120 s). A fixed attempt budget spent during the
  outage left the daemon answering 500 "not initialized" for good (issue 15), so the recovery
  thread retries with capped exponential backoff (`RecoveryPolicy`) until it succeeds or the
  backend is closed. The cap is what bounds time-to-serve after the HSM returns: at most one
  backoff interval plus one attempt (≈1 s on SoftHSM2 with the default 1 s cap).
- **Fails fast while down.** Requests do not queue on a dead HSM: `admit()` refuses them at once
  with `HsmUnavailable` (503 / UNAVAILABLE) carrying `retry_after` (whole seconds, the cap), so
  clients back off and no thread holds a session meanwhile. Only the calls that were in flight
  when the failure was seen wait for the first attempt (≤ `RecoveryPolicy.caller_wait` on a
  thread, ≤ `loop_wait` on an event loop, which every other request shares), so a momentary
  glitch (a finalised library) costs a retry, not an error.
- **Only one thread re-initialises.** The attempt itself is the backend's (`attempt` callback):
  fence and drain the module, `C_Finalize`/`C_Initialize` (hsm/library.py), find the token, log in,
  find the master KEK. Running it on one thread per backend is what makes "no call inside the
  module while it is finalised" enforceable.
- **Readiness and liveness.** `healthy` is the readiness input (cheap: no HSM call). `wedged` is
  the liveness input: the backend is recovering and no attempt has *completed* for
  `wedged_after` seconds (attempts keep timing out draining a call stuck inside the module, or
  the thread died). Retrying cannot cure that; a restart can, so liveness fails only then.
  An HSM that is simply absent is not wedged: attempts complete (and fail) every backoff.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hsmbridge.errors import HsmUnavailable
from hsmbridge.hsm.library import RETRY_AFTER, DrainTimeout

log = logging.getLogger(__name__)

__all__ = ["RETRY_AFTER", "HealthSnapshot", "HsmHealth", "HsmState", "RecoveryPolicy"]


class HsmState(enum.Enum):
    #: the backend is being built: failures are start-up errors, not outages
    STARTING = "starting"
    UP = "up"
    RECOVERING = "recovering"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    first_backoff: float = 0.05
    #: the cap: time-to-serve after the HSM returns is at most this plus one attempt
    max_backoff: float = 1.0
    #: how long an attempt waits for in-flight calls to leave the module before giving up
    drain_timeout: float = 10.0
    #: how long a call that saw the failure waits for the first attempt before answering 503
    caller_wait: float = 2.0
    #: the same on an event-loop thread (gRPC aio / REST run short HSM calls on the loop): every
    #: other request waits with it, so only long enough for a quick re-initialisation
    loop_wait: float = 0.1
    #: a backend whose token is gone re-initialises a module that healthy sibling backends
    #: (other tokens on the same module) serve from at most this often; it probes in between
    shared_reinit_interval: float = 10.0
    #: liveness fails when recovering and no attempt has completed for this long
    wedged_after: float = 30.0


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    state: HsmState
    #: seconds since the backend went down (0 when up)
    down_for: float
    attempts: int
    recoveries: int
    last_error: str
    wedged: bool


class HsmHealth:
    """See the module docstring. `attempt()` raises on failure and returns on success."""

    def __init__(
        self,
        name: str,
        attempt: Callable[[], None],
        policy: RecoveryPolicy | None = None,
        *,
        probe: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.policy = policy or RecoveryPolicy()
        self._attempt = attempt
        self._probe = probe
        self._clock = clock
        self._cond = threading.Condition(threading.Lock())
        self._state = HsmState.STARTING
        self._thread: threading.Thread | None = None
        self._down_since = 0.0
        self._progress_at = 0.0
        self._attempts = 0
        self._recoveries = 0
        self._last_error = ""
        self.retry_after = str(max(1, math.ceil(self.policy.max_backoff)))

    # -- state ---------------------------------------------------------------------------------------

    @property
    def state(self) -> HsmState:
        return self._state

    @property
    def healthy(self) -> bool:
        return self._state is HsmState.UP

    def started(self) -> None:
        """The backend is built: from now on failures are outages to recover from."""
        with self._cond:
            if self._state is HsmState.STARTING:
                self._state = HsmState.UP

    def unavailable(self, what: str) -> HsmUnavailable:
        return HsmUnavailable(
            f"{what}: the HSM is unavailable; recovering, retry shortly",
            metadata={RETRY_AFTER: self.retry_after},
        )

    def admit(self) -> None:
        """Refuse at once while recovering: no request waits on a dead HSM."""
        state = self._state
        if state is HsmState.RECOVERING:
            raise HsmUnavailable(
                "the HSM is unavailable; recovering, retry shortly", metadata={RETRY_AFTER: self.retry_after}
            )
        if state is HsmState.CLOSED:
            raise HsmUnavailable("the HSM backend is closed")

    def report_failure(self, cause: str) -> bool:
        """A device-level failure was seen; start recovering. False while starting (the caller
        raises: a start-up failure is a configuration error, not an outage) or closed."""
        with self._cond:
            if self._state is HsmState.UP:
                self._state = HsmState.RECOVERING
                self._down_since = self._progress_at = self._clock()
                self._last_error = cause
                log.warning("HSM %s is unavailable (%s): recovering in the background", self.name, cause)
                self._thread = threading.Thread(
                    target=self._recover, name=f"hsmbridge-hsm-recovery-{self.name}", daemon=True
                )
                self._thread.start()
            return self._state is HsmState.RECOVERING

    def confirm(self) -> bool:
        """Healthy, checked with one cheap HSM call (the backend's `probe`); a failed probe starts
        recovering. A sibling backend on the same module asks this before re-initialising it:
        a backend that merely has not noticed yet that its token is gone must not count."""
        if self._state is not HsmState.UP:
            return False
        try:
            ok = self._probe() if self._probe is not None else True
        except Exception:
            ok = False
        if not ok:
            self.report_failure("probe: the token is not visible")
        return ok and self._state is HsmState.UP

    def caller_wait(self) -> float:
        """How long the current thread may wait for a recovery attempt (`wait_up`)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self.policy.caller_wait
        return min(self.policy.loop_wait, self.policy.caller_wait)

    def wait_up(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._state is not HsmState.RECOVERING, timeout) and (
                self._state is HsmState.UP
            )

    @property
    def wedged(self) -> bool:
        with self._cond:
            if self._state is not HsmState.RECOVERING:
                return False
            thread_dead = self._thread is None or not self._thread.is_alive()
            return thread_dead or self._clock() - self._progress_at > self.policy.wedged_after

    def snapshot(self) -> HealthSnapshot:
        wedged = self.wedged
        with self._cond:
            down = self._clock() - self._down_since if self._state is HsmState.RECOVERING else 0.0
            return HealthSnapshot(
                self._state, down, self._attempts, self._recoveries, self._last_error, wedged
            )

    def close(self) -> None:
        with self._cond:
            self._state = HsmState.CLOSED
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.policy.drain_timeout + 5)

    # -- the recovery thread -----------------------------------------------------------------------

    def _recover(self) -> None:
        delay = self.policy.first_backoff
        last_logged = float("-inf")
        tries = 0
        while True:
            with self._cond:
                if self._state is not HsmState.RECOVERING:
                    return
                self._attempts += 1
            tries += 1
            try:
                self._attempt()
            except Exception as exc:  # never let the thread die: it is the only way back
                now = self._clock()
                error = f"{type(exc).__name__}: {getattr(exc, 'message', '') or ''}".rstrip(": ")
                with self._cond:
                    self._last_error = error
                    if not isinstance(exc, DrainTimeout):
                        self._progress_at = now
                if now - last_logged >= 30.0:
                    log.warning(
                        "HSM %s still unavailable after %.1fs (%s); retrying every ≤%.1fs",
                        self.name,
                        now - self._down_since,
                        error,
                        self.policy.max_backoff,
                    )
                    last_logged = now
            else:
                with self._cond:
                    if self._state is HsmState.RECOVERING:
                        self._state = HsmState.UP
                        self._recoveries += 1
                    self._cond.notify_all()
                log.warning(
                    "HSM %s recovered after %.1fs (%d attempt(s))",
                    self.name,
                    self._clock() - self._down_since,
                    tries,
                )
                return
            with self._cond:
                # jitter: workers and replicas on one HSM do not retry in lock-step
                self._cond.wait_for(
                    lambda: self._state is not HsmState.RECOVERING,
                    delay * random.uniform(0.8, 1.2),  # noqa: S311 - jitter, not crypto
                )
            delay = min(delay * 2, self.policy.max_backoff)
