"""The HSM health state machine (hsm/recovery.py) on its own, with a scripted attempt: it never
gives up, callers fail fast while it recovers, a failure while the backend is still being built
is a start-up error, and "wedged" (the liveness input) means no attempt has completed for a
while — not merely that the HSM is down. The real-token behaviour is in test_fault_hsm_outage.py.
"""

from __future__ import annotations

import threading
import time

import pytest

from hsmbridge.errors import HsmUnavailable
from hsmbridge.hsm.library import DrainTimeout
from hsmbridge.hsm.recovery import HsmHealth, HsmState, RecoveryPolicy

FAST = RecoveryPolicy(first_backoff=0.001, max_backoff=0.004, wedged_after=30.0)


class ScriptedAttempt:
    """Fails `failures` times (with `error`), then succeeds; can be told to block."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or HsmUnavailable("token not present")
        self.calls = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> None:
        self.calls += 1
        self.release.wait(30)
        if self.calls <= self.failures:
            raise self.error


def up(health: HsmHealth) -> HsmHealth:
    health.started()
    assert health.healthy
    return health


def test_recovery_never_gives_up_and_callers_fail_fast_meanwhile() -> None:
    attempt = ScriptedAttempt(failures=200)  # far beyond any attempt budget
    health = up(HsmHealth("t", attempt, FAST))
    attempt.release.clear()
    assert health.report_failure("gcm-encrypt: DeviceRemoved")
    started = time.monotonic()
    with pytest.raises(HsmUnavailable) as refused:
        health.admit()
    assert time.monotonic() - started < 0.5  # at once, no waiting on the HSM
    assert refused.value.metadata["retry_after"] == "1"
    assert not health.healthy
    attempt.release.set()
    assert health.wait_up(30)
    assert attempt.calls == 201 and health.snapshot().recoveries == 1
    health.admit()
    health.close()


def test_a_failure_while_starting_is_a_start_up_error_not_an_outage() -> None:
    attempt = ScriptedAttempt(failures=0)
    health = HsmHealth("t", attempt, FAST)
    assert not health.report_failure("ensure-kek: TokenNotPresent")
    assert health.state is HsmState.STARTING and attempt.calls == 0


def test_only_one_recovery_runs_however_many_callers_report() -> None:
    attempt = ScriptedAttempt(failures=3)
    health = up(HsmHealth("t", attempt, FAST))
    attempt.release.clear()
    assert all(health.report_failure(f"call {n}") for n in range(20))
    threads = [t for t in threading.enumerate() if t.name.startswith("hsmbridge-hsm-recovery-t")]
    assert len(threads) == 1
    attempt.release.set()
    assert health.wait_up(30)
    assert attempt.calls == 4


def test_down_is_not_wedged_but_attempts_that_never_complete_are() -> None:
    now = [0.0]
    policy = RecoveryPolicy(first_backoff=0.001, max_backoff=0.002, wedged_after=30.0)
    absent = ScriptedAttempt(failures=10**9)
    health = up(HsmHealth("absent", absent, policy, clock=lambda: now[0]))
    health.report_failure("token gone")
    calls = absent.calls
    while absent.calls < calls + 5:  # attempts complete (and fail): progress
        time.sleep(0.01)
    now[0] = 1000.0
    while absent.calls < calls + 10:
        time.sleep(0.01)
    assert not health.wedged  # failing attempts keep completing: merely down
    health.close()

    stuck = ScriptedAttempt(failures=10**9, error=DrainTimeout("a call is stuck inside the module"))
    now[0] = 0.0
    health = up(HsmHealth("stuck", stuck, policy, clock=lambda: now[0]))
    health.report_failure("device error")
    while stuck.calls < 3:
        time.sleep(0.01)
    assert not health.wedged  # not yet: within wedged_after
    now[0] = 31.0
    assert health.wedged  # draining never succeeds: only a restart helps
    assert health.snapshot().wedged and "DrainTimeout" in health.snapshot().last_error
    health.close()
