"""Value conversions and row mapping shared by the SQLite and PostgreSQL stores.

Why one copy: both backends store the same schema (the same migration files), so how a `Key`
becomes column values and back must not drift between them; the store test suite compares every
backend against the same expectations, and a second hand-written mapper would be where they
first disagree. The SQL itself is shared too (`_sql.py`); only placeholders and locking clauses
differ per backend.

Timestamps are fixed-width ISO-8601 UTC text in both engines (see migrations/001_initial.sql);
booleans come back as 0/1 from SQLite and as `bool` from PostgreSQL, hence the `bool()` calls.
"""

# ruff: noqa: S608 -- the SQL fragments here are built from this module's column constants only.

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from hsmbridge.core.model import (
    DualAuthDelete,
    ImportToken,
    Key,
    KeyState,
    KeyVersion,
    RotationPolicy,
    WrappedKey,
)
from hsmbridge.core.store.base import KeyPolicyRecord, Registration, RegistrationState
from hsmbridge.errors import InternalError


class Row(Protocol):
    """A result row addressable by column name: `sqlite3.Row`, or the dict psycopg's `dict_row` gives."""

    def __getitem__(self, key: str, /) -> Any: ...


# --- value conversions -------------------------------------------------------------------------


def _ts(value: datetime) -> str:
    """Fixed-width UTC text, so that SQL string comparison is time comparison."""
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time is ambiguous; guessing would silently shift expiry dates.
        raise InternalError("naive datetime given to the store; the model requires timezone-aware UTC")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _ts_opt(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _dt_opt(text: str | None) -> datetime | None:
    return None if text is None else _dt(text)


def _state_opt(value: int | None) -> KeyState | None:
    return None if value is None else KeyState(value)


# --- row mapping -------------------------------------------------------------------------------

_KEY_COLUMNS = (
    "tenant",
    "id",
    "name",
    "description",
    "extractable",
    "imported",
    "state",
    "bit_length",
    "key_ring",
    "created_at",
    "created_by",
    "updated_at",
    "current_version_id",
    "expires_at",
    "last_rotated_at",
    "state_changed_at",
    "deleted_at",
    "deleted_by",
    "state_before_delete",
    "dual_auth_enabled",
    "dual_auth_set_by",
    "dual_auth_expires_at",
    "rotation_enabled",
    "rotation_interval_month",
    "revision",
)
_KEY_UPDATABLE = tuple(c for c in _KEY_COLUMNS if c not in ("tenant", "id", "revision"))
_VERSION_COLUMNS = (
    "tenant, id, key_id, number, created_at, wrapped_blob, wrapped_length, kek_label, wrap_mechanism, "
    "material_kind"
)
_IMPORT_COLUMNS = (
    "tenant, id, created_at, created_by, expires_at, max_retrievals, remaining_retrievals, "
    "nonce, key_bits, public_key_der, hsm_object_id"
)


def _key_params(key: Key) -> dict[str, Any]:
    rotation = key.rotation
    return {
        "tenant": key.tenant,
        "id": key.id,
        "name": key.name,
        "description": key.description,
        "extractable": bool(key.extractable),
        "imported": bool(key.imported),
        "state": int(key.state),
        "bit_length": key.bit_length,
        "key_ring": key.key_ring,
        "created_at": _ts(key.created_at),
        "created_by": key.created_by,
        "updated_at": _ts(key.updated_at),
        "current_version_id": key.current_version_id,
        "expires_at": _ts_opt(key.expires_at),
        "last_rotated_at": _ts_opt(key.last_rotated_at),
        "state_changed_at": _ts_opt(key.state_changed_at),
        "deleted_at": _ts_opt(key.deleted_at),
        "deleted_by": key.deleted_by,
        "state_before_delete": None if key.state_before_delete is None else int(key.state_before_delete),
        "dual_auth_enabled": bool(key.dual_auth.enabled),
        "dual_auth_set_by": key.dual_auth.set_by,
        "dual_auth_expires_at": _ts_opt(key.dual_auth.expires_at),
        "rotation_enabled": None if rotation is None else bool(rotation.enabled),
        "rotation_interval_month": None if rotation is None else rotation.interval_month,
        "revision": key.revision,
    }


def _row_to_key(row: Row, aliases: list[str]) -> Key:
    rotation = (
        None
        if row["rotation_enabled"] is None
        else RotationPolicy(
            enabled=bool(row["rotation_enabled"]), interval_month=row["rotation_interval_month"]
        )
    )
    return Key(
        id=row["id"],
        tenant=row["tenant"],
        name=row["name"],
        extractable=bool(row["extractable"]),
        imported=bool(row["imported"]),
        state=KeyState(row["state"]),
        created_at=_dt(row["created_at"]),
        created_by=row["created_by"],
        updated_at=_dt(row["updated_at"]),
        current_version_id=row["current_version_id"],
        bit_length=row["bit_length"],
        description=row["description"],
        key_ring=row["key_ring"],
        aliases=aliases,
        expires_at=_dt_opt(row["expires_at"]),
        last_rotated_at=_dt_opt(row["last_rotated_at"]),
        state_changed_at=_dt_opt(row["state_changed_at"]),
        deleted_at=_dt_opt(row["deleted_at"]),
        deleted_by=row["deleted_by"],
        state_before_delete=_state_opt(row["state_before_delete"]),
        dual_auth=DualAuthDelete(
            enabled=bool(row["dual_auth_enabled"]),
            set_by=row["dual_auth_set_by"],
            expires_at=_dt_opt(row["dual_auth_expires_at"]),
        ),
        rotation=rotation,
        revision=row["revision"],
    )


def _row_to_version(row: Row) -> KeyVersion:
    return KeyVersion(
        id=row["id"],
        key_id=row["key_id"],
        tenant=row["tenant"],
        number=row["number"],
        created_at=_dt(row["created_at"]),
        wrapped=WrappedKey(
            blob=bytes(row["wrapped_blob"]),
            length=row["wrapped_length"],
            kek_label=row["kek_label"],
            mechanism=row["wrap_mechanism"],
            kind=row["material_kind"],
        ),
    )


def _check_rewrap(expected: WrappedKey, new: WrappedKey) -> None:
    """A rewrap changes the wrapping, never the material: its true length and its kind (which
    decides whether the HSM may ever reveal it) must stay what they were."""
    if (new.length, new.kind) != (expected.length, expected.kind):
        raise InternalError("a rewrapped key version must keep its material's length and kind")


def _rewrap_params(tenant: str, version_id: str, expected: WrappedKey, new: WrappedKey) -> dict[str, Any]:
    return {
        "tenant": tenant,
        "id": version_id,
        "blob": bytes(new.blob),
        "kek_label": new.kek_label,
        "mechanism": new.mechanism,
        "old_blob": bytes(expected.blob),
        "old_kek_label": expected.kek_label,
        "old_mechanism": expected.mechanism,
    }


def _token_params(token: ImportToken) -> dict[str, Any]:
    return {
        "tenant": token.tenant,
        "id": token.id,
        "created_at": _ts(token.created_at),
        "created_by": token.created_by,
        "expires_at": _ts(token.expires_at),
        "max_retrievals": token.max_retrievals,
        "remaining_retrievals": token.remaining_retrievals,
        "nonce": bytes(token.nonce),
        "key_bits": token.key_bits,
        "public_key_der": bytes(token.public_key_der),
        "hsm_object_id": token.hsm_object_id,
    }


def _row_to_token(row: Row) -> ImportToken:
    return ImportToken(
        id=row["id"],
        tenant=row["tenant"],
        created_at=_dt(row["created_at"]),
        expires_at=_dt(row["expires_at"]),
        max_retrievals=row["max_retrievals"],
        remaining_retrievals=row["remaining_retrievals"],
        nonce=bytes(row["nonce"]),
        key_bits=row["key_bits"],
        public_key_der=bytes(row["public_key_der"]),
        hsm_object_id=row["hsm_object_id"],
        created_by=row["created_by"],
    )


_KEY_POLICY_COLUMNS = "tenant, key_id, policy_type, id, created_at, created_by, updated_at, updated_by"
_REGISTRATION_COLUMNS = (
    "tenant",
    "key_id",
    "resource_crn",
    "description",
    "prevent_key_deletion",
    "registration_metadata",
    "key_version_id",
    "key_version_created_at",
    "state",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
)
_REGISTRATION_SELECT = (
    "SELECT " + ", ".join(f"r.{c}" for c in _REGISTRATION_COLUMNS) + " FROM registrations r"
)


def _row_to_key_policy(row: Row) -> KeyPolicyRecord:
    return KeyPolicyRecord(
        tenant=row["tenant"],
        key_id=row["key_id"],
        policy_type=row["policy_type"],
        id=row["id"],
        created_at=_dt(row["created_at"]),
        created_by=row["created_by"],
        updated_at=_dt(row["updated_at"]),
        updated_by=row["updated_by"],
    )


def _registration_params(reg: Registration) -> dict[str, Any]:
    return {
        "tenant": reg.tenant,
        "key_id": reg.key_id,
        "resource_crn": reg.resource_crn,
        "description": reg.description,
        "prevent_key_deletion": bool(reg.prevent_key_deletion),
        "registration_metadata": reg.registration_metadata,
        "key_version_id": reg.key_version_id,
        "key_version_created_at": _ts(reg.key_version_created_at),
        "state": int(reg.state),
        "created_at": _ts(reg.created_at),
        "created_by": reg.created_by,
        "updated_at": _ts(reg.updated_at),
        "updated_by": reg.updated_by,
    }


def _row_to_registration(row: Row) -> Registration:
    return Registration(
        tenant=row["tenant"],
        key_id=row["key_id"],
        resource_crn=row["resource_crn"],
        description=row["description"],
        prevent_key_deletion=bool(row["prevent_key_deletion"]),
        registration_metadata=row["registration_metadata"],
        key_version_id=row["key_version_id"],
        key_version_created_at=_dt(row["key_version_created_at"]),
        state=RegistrationState(row["state"]),
        created_at=_dt(row["created_at"]),
        created_by=row["created_by"],
        updated_at=_dt(row["updated_at"]),
        updated_by=row["updated_by"],
    )
