"""Which action is allowed in which key state, and when (Key Protect's §4.2 matrix as code).

Each `require_*` raises the domain error the facade turns into Key Protect's 400/409/410, so the
gRPC API and REST answer alike. Expiry is applied lazily here (`effective_state`) and persisted by
the services and the sweeper: Key Protect promises deactivation "within one hour".
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hsmbridge.core.model import Key, KeyState
from hsmbridge.errors import Conflict, Gone, InvalidInput, Reason, TooEarly

ROTATION_INTERVAL = timedelta(hours=1)
ENABLE_AFTER_STATE_CHANGE = timedelta(seconds=30)
RESTORE_AFTER_DELETE = timedelta(seconds=30)
RESTORE_WINDOW = timedelta(days=30)
PURGE_AFTER_DELETE = timedelta(hours=4)
AUTO_PURGE_AFTER_DELETE = timedelta(days=90)
DUAL_AUTH_WINDOW = timedelta(days=7)


def effective_state(key: Key, now: datetime) -> KeyState:
    if (
        key.expires_at is not None
        and key.expires_at <= now
        and key.state in (KeyState.ACTIVE, KeyState.SUSPENDED)
    ):
        return KeyState.DEACTIVATED
    return key.state


def apply_expiry(key: Key, now: datetime) -> bool:
    """Move an expired key to Deactivated in memory; True if the caller should persist it."""
    state = effective_state(key, now)
    if state is key.state:
        return False
    key.state = state
    key.state_changed_at = now
    key.updated_at = now
    return True


def _not_deleted(key: Key) -> None:
    if key.state is KeyState.DESTROYED:
        raise Gone("Key has already been deleted. Delete references to this key.", reason=Reason.KEY_DELETED)


def _root(key: Key) -> None:
    if key.extractable:
        raise InvalidInput(
            "Requested action can only be completed with a root key.", reason=Reason.KEY_ROOT_REQUIRED
        )


def _in(key: Key, *states: KeyState) -> None:
    _not_deleted(key)
    if key.state not in states:
        raise Conflict("Key is not in a valid state", reason=Reason.INVALID_STATE)


def require_wrap(key: Key) -> None:
    _not_deleted(key)
    _root(key)
    _in(key, KeyState.ACTIVE)


def require_unwrap(key: Key) -> None:
    """Unwrap and rewrap: Deactivated keys still open old ciphertexts."""
    _not_deleted(key)
    _root(key)
    _in(key, KeyState.ACTIVE, KeyState.DEACTIVATED)


def require_rotate(key: Key, now: datetime) -> None:
    _not_deleted(key)
    _root(key)
    _in(key, KeyState.ACTIVE, KeyState.DEACTIVATED)
    if key.last_rotated_at is not None and now - key.last_rotated_at < ROTATION_INTERVAL:
        raise TooEarly(
            "This key has been rotated within the last hour, only one rotate action per hour is permitted",
            reason=Reason.ROTATION_TOO_SOON,
        )


def require_disable(key: Key) -> None:
    _not_deleted(key)
    _root(key)
    if key.state is not KeyState.ACTIVE:
        raise Conflict("The requested key is not in the Active (1) state.", reason=Reason.INVALID_STATE)


def require_enable(key: Key, now: datetime) -> None:
    _not_deleted(key)
    _root(key)
    if key.state is not KeyState.SUSPENDED:
        raise Conflict("The key is not in the Suspended (2) state.", reason=Reason.INVALID_STATE)
    if key.state_changed_at is not None and now - key.state_changed_at < ENABLE_AFTER_STATE_CHANGE:
        raise TooEarly(
            "After key is disabled, the event must fully propagate before enabling key operations",
            reason=Reason.TOO_EARLY,
        )


def require_delete(key: Key) -> None:
    _not_deleted(key)


def restore_deadline(key: Key) -> datetime | None:
    if key.deleted_at is None:
        return None
    deadline = key.deleted_at + RESTORE_WINDOW
    if key.expires_at is not None:
        deadline = min(deadline, key.expires_at)
    return deadline


def require_restore(key: Key, now: datetime) -> None:
    if key.state is not KeyState.DESTROYED or key.deleted_at is None:
        raise Conflict(
            "Key is not in a valid state: only deleted keys can be restored", reason=Reason.INVALID_STATE
        )
    if now - key.deleted_at < RESTORE_AFTER_DELETE:
        raise TooEarly(
            "Restoring a key is only allowed when 30 seconds after key is deleted has passed.",
            reason=Reason.TOO_EARLY,
        )
    if key.expires_at is not None and key.expires_at <= now:
        raise InvalidInput(
            "The action could not be performed on the key because the key is expired.",
            reason=Reason.KEY_EXPIRED,
        )
    if now >= key.deleted_at + RESTORE_WINDOW:
        raise InvalidInput("Key restoration has expired", reason=Reason.KEY_RESTORE_EXPIRED)


def require_purge(key: Key, now: datetime) -> None:
    if key.state is not KeyState.DESTROYED or key.deleted_at is None:
        raise Conflict(
            "Key is not in a valid state: only deleted keys can be purged", reason=Reason.INVALID_STATE
        )
    if now - key.deleted_at < PURGE_AFTER_DELETE:
        raise TooEarly("The key can be purged 4 hours after it was deleted.", reason=Reason.TOO_EARLY)
