"""Spec §4.2–§4.6: which action is allowed in which key state, and when, as `lifecycle.require_*`.

The first table is the spec's action × state matrix, row for row. The timing tables pin every
boundary (30 s, 1 h, 4 h, 30 d) on both sides. Plain `Key` objects, no backend, no store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hsmbridge.core import lifecycle
from hsmbridge.core.model import Key, KeyState
from hsmbridge.errors import Conflict, Gone, HsmBridgeError, InvalidInput, Reason, TooEarly

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LONG_AGO = NOW - timedelta(days=1)  # older than every waiting period except the 30-day restore window

ACTIVE, SUSPENDED, DEACTIVATED, DESTROYED = (
    KeyState.ACTIVE,
    KeyState.SUSPENDED,
    KeyState.DEACTIVATED,
    KeyState.DESTROYED,
)
STATES = (ACTIVE, SUSPENDED, DEACTIVATED, DESTROYED)


def make_key(state: KeyState = ACTIVE, *, extractable: bool = False, **fields: object) -> Key:
    """A key whose every waiting period is over, unless a test sets the timestamps itself."""
    key = Key(
        id="6f9619ff-8b86-4d01-b42d-00cf4fc964ff",
        tenant="tenant-a",
        name="lifecycle",
        extractable=extractable,
        imported=False,
        state=state,
        created_at=LONG_AGO - timedelta(days=1),
        created_by="alice",
        updated_at=LONG_AGO,
        current_version_id="6f9619ff-8b86-4d01-b42d-00cf4fc964ff",
        state_changed_at=LONG_AGO,
        deleted_at=LONG_AGO if state is DESTROYED else None,
    )
    for name, value in fields.items():
        setattr(key, name, value)
    return key


ACTIONS: dict[str, Callable[[Key, datetime], None]] = {
    "wrap": lambda key, now: lifecycle.require_wrap(key),
    "unwrap": lambda key, now: lifecycle.require_unwrap(key),  # rewrap uses the same rule
    "rotate": lifecycle.require_rotate,
    "disable": lambda key, now: lifecycle.require_disable(key),
    "enable": lifecycle.require_enable,
    "delete": lambda key, now: lifecycle.require_delete(key),
    "restore": lifecycle.require_restore,
    "purge": lifecycle.require_purge,
}
ROOT_ONLY = {"wrap", "unwrap", "rotate", "disable", "enable"}


@dataclass(frozen=True)
class Refused:
    error: type[HsmBridgeError]
    reason: Reason

    def __str__(self) -> str:
        return f"{self.error.__name__}({self.reason})"


OK = None
C409 = Refused(Conflict, Reason.INVALID_STATE)
G410 = Refused(Gone, Reason.KEY_DELETED)
ROOT_REQUIRED = Refused(InvalidInput, Reason.KEY_ROOT_REQUIRED)

# Spec §4.2, columns Active 1 | Suspended 2 | Deactivated 3 | Destroyed 5.
MATRIX: dict[str, tuple[Refused | None, ...]] = {
    "wrap": (OK, C409, C409, G410),
    "unwrap": (OK, C409, OK, G410),
    "rotate": (OK, C409, OK, G410),
    "disable": (OK, C409, C409, G410),
    "enable": (C409, OK, C409, G410),
    "delete": (OK, OK, OK, G410),
    "restore": (C409, C409, C409, OK),
    "purge": (C409, C409, C409, OK),
}


def outcome(action: str, key: Key, now: datetime = NOW) -> Refused | None:
    try:
        ACTIONS[action](key, now)
    except HsmBridgeError as exc:
        return Refused(type(exc), exc.reason)
    return OK


@pytest.mark.parametrize(
    ("action", "state", "expected"),
    [
        pytest.param(action, state, expected, id=f"{action}-{state.name}-{expected or 'ok'}")
        for action, row in MATRIX.items()
        for state, expected in zip(STATES, row, strict=True)
    ],
)
def test_root_key_action_state_matrix(action: str, state: KeyState, expected: Refused | None) -> None:
    assert outcome(action, make_key(state)) == expected


@pytest.mark.parametrize(
    ("action", "state"),
    [(action, state) for action in sorted(ACTIONS) for state in STATES if state is not SUSPENDED],
)
def test_standard_keys_are_refused_root_only_actions_but_share_the_rest(action: str, state: KeyState) -> None:
    """Standard keys cannot wrap, rotate, enable or disable (400 KEY_ROOT_REQ); deletion rules are the
    same as for root keys, and a deleted key answers 410 before anything else."""
    expected = MATRIX[action][STATES.index(state)]
    if action in ROOT_ONLY and state is not DESTROYED:
        expected = ROOT_REQUIRED
    assert outcome(action, make_key(state, extractable=True)) == expected


# --- timing rules ---------------------------------------------------------------------------------

SECOND = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("last_rotated", "expected"),
    [
        (None, OK),
        (NOW, Refused(TooEarly, Reason.ROTATION_TOO_SOON)),
        (NOW - lifecycle.ROTATION_INTERVAL + SECOND, Refused(TooEarly, Reason.ROTATION_TOO_SOON)),
        (NOW - lifecycle.ROTATION_INTERVAL, OK),
        (NOW - timedelta(days=400), OK),
    ],
)
def test_one_rotation_per_hour(last_rotated: datetime | None, expected: Refused | None) -> None:
    assert outcome("rotate", make_key(last_rotated_at=last_rotated)) == expected


def test_the_hourly_rotation_limit_applies_to_deactivated_keys_too() -> None:
    key = make_key(DEACTIVATED, last_rotated_at=NOW - timedelta(minutes=10))
    assert outcome("rotate", key) == Refused(TooEarly, Reason.ROTATION_TOO_SOON)


@pytest.mark.parametrize(
    ("since_disable", "expected"),
    [
        (timedelta(0), Refused(TooEarly, Reason.TOO_EARLY)),
        (lifecycle.ENABLE_AFTER_STATE_CHANGE - SECOND, Refused(TooEarly, Reason.TOO_EARLY)),
        (lifecycle.ENABLE_AFTER_STATE_CHANGE, OK),
        (timedelta(days=3), OK),
    ],
)
def test_enable_waits_30_seconds_after_disable(since_disable: timedelta, expected: Refused | None) -> None:
    key = make_key(SUSPENDED, state_changed_at=NOW - since_disable)
    assert outcome("enable", key) == expected


@pytest.mark.parametrize(
    ("since_delete", "expected"),
    [
        (timedelta(0), Refused(TooEarly, Reason.TOO_EARLY)),
        (lifecycle.RESTORE_AFTER_DELETE - SECOND, Refused(TooEarly, Reason.TOO_EARLY)),
        (lifecycle.RESTORE_AFTER_DELETE, OK),
        (lifecycle.RESTORE_WINDOW - SECOND, OK),
        (lifecycle.RESTORE_WINDOW, Refused(InvalidInput, Reason.KEY_RESTORE_EXPIRED)),
        (timedelta(days=89), Refused(InvalidInput, Reason.KEY_RESTORE_EXPIRED)),
    ],
)
def test_restore_window_is_30_seconds_to_30_days(since_delete: timedelta, expected: Refused | None) -> None:
    key = make_key(DESTROYED, deleted_at=NOW - since_delete)
    assert outcome("restore", key) == expected


@pytest.mark.parametrize(
    ("expires_in", "expected"),
    [
        (timedelta(days=1), OK),
        (SECOND, OK),
        (timedelta(0), Refused(InvalidInput, Reason.KEY_EXPIRED)),
        (-timedelta(days=1), Refused(InvalidInput, Reason.KEY_EXPIRED)),
    ],
)
def test_an_expired_key_cannot_be_restored(expires_in: timedelta, expected: Refused | None) -> None:
    key = make_key(DESTROYED, expires_at=NOW + expires_in)
    assert outcome("restore", key) == expected


@pytest.mark.parametrize(
    ("since_delete", "expected"),
    [
        (timedelta(0), Refused(TooEarly, Reason.TOO_EARLY)),
        (lifecycle.PURGE_AFTER_DELETE - SECOND, Refused(TooEarly, Reason.TOO_EARLY)),
        (lifecycle.PURGE_AFTER_DELETE, OK),
        (timedelta(days=31), OK),  # past the restore window, purge is still the user's call
        (lifecycle.AUTO_PURGE_AFTER_DELETE, OK),
    ],
)
def test_purge_waits_4_hours_after_delete(since_delete: timedelta, expected: Refused | None) -> None:
    key = make_key(DESTROYED, deleted_at=NOW - since_delete)
    assert outcome("purge", key) == expected


@pytest.mark.parametrize("action", ["restore", "purge"])
def test_a_destroyed_key_without_a_deletion_date_is_refused_not_crashed_on(action: str) -> None:
    assert outcome(action, make_key(DESTROYED, deleted_at=None)) == C409


@given(elapsed=st.integers(min_value=0, max_value=200 * 86_400))
def test_timing_rules_hold_at_every_elapsed_second(elapsed: int) -> None:
    """Each waiting period allows the action exactly from its boundary on (restore: until 30 d)."""
    since = timedelta(seconds=elapsed)
    rotated = make_key(last_rotated_at=NOW - since)
    assert (outcome("rotate", rotated) is OK) == (since >= lifecycle.ROTATION_INTERVAL)
    disabled = make_key(SUSPENDED, state_changed_at=NOW - since)
    assert (outcome("enable", disabled) is OK) == (since >= lifecycle.ENABLE_AFTER_STATE_CHANGE)
    deleted = make_key(DESTROYED, deleted_at=NOW - since)
    restorable = lifecycle.RESTORE_AFTER_DELETE <= since < lifecycle.RESTORE_WINDOW
    assert (outcome("restore", deleted) is OK) == restorable
    assert (outcome("purge", deleted) is OK) == (since >= lifecycle.PURGE_AFTER_DELETE)


# --- expiry ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expires_in", "effective"),
    [
        (ACTIVE, None, ACTIVE),
        (ACTIVE, SECOND, ACTIVE),
        (ACTIVE, timedelta(0), DEACTIVATED),
        (ACTIVE, -timedelta(days=1), DEACTIVATED),
        (SUSPENDED, -SECOND, DEACTIVATED),
        (DEACTIVATED, -SECOND, DEACTIVATED),
        (DESTROYED, -SECOND, DESTROYED),  # deletion is final whatever the date says
    ],
)
def test_expiry_deactivates_active_and_suspended_keys(
    state: KeyState, expires_in: timedelta | None, effective: KeyState
) -> None:
    key = make_key(state, expires_at=None if expires_in is None else NOW + expires_in)
    assert lifecycle.effective_state(key, NOW) is effective
    changed = lifecycle.apply_expiry(key, NOW)
    assert changed == (effective is not state)
    assert key.state is effective
    if changed:
        assert key.state_changed_at == NOW
        assert key.updated_at == NOW
    else:
        assert key.state_changed_at == LONG_AGO


def test_an_expired_key_can_unwrap_and_rotate_but_not_wrap() -> None:
    key = make_key(expires_at=NOW - SECOND)
    lifecycle.apply_expiry(key, NOW)
    assert [outcome(a, key) for a in ("wrap", "unwrap", "rotate", "enable", "delete")] == [
        C409,
        OK,
        OK,
        C409,  # "cannot enable an expired key"
        OK,
    ]


@pytest.mark.parametrize(
    ("expires_in", "deadline_after_delete"),
    [
        (None, lifecycle.RESTORE_WINDOW),
        (timedelta(days=400), lifecycle.RESTORE_WINDOW),
        (timedelta(days=3), timedelta(days=3) + (NOW - LONG_AGO)),
    ],
)
def test_restore_deadline_is_30_days_or_the_expiration_date_whichever_is_sooner(
    expires_in: timedelta | None, deadline_after_delete: timedelta
) -> None:
    key = make_key(DESTROYED, expires_at=None if expires_in is None else NOW + expires_in)
    assert lifecycle.restore_deadline(key) == LONG_AGO + deadline_after_delete
    assert lifecycle.restore_deadline(make_key(ACTIVE)) is None
