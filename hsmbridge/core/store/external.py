"""Store operations for external keys and bound import parameters (migration 003), written once.

Why one module for both engines: the SQL is plain and identical in SQLite and PostgreSQL, so
the shared transaction (`_sql.SqlTransaction.external`) hands `ExternalRows` its ``_write``, which
takes ``:name`` placeholders and respells them for the engine (and runs each statement under a
savepoint on PostgreSQL). The row mapping then cannot drift between the engines, and
tests/test_store_external.py runs against both.
"""

# ruff: noqa: S608 -- the SQL here is built from this module's column constants only.

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from hsmbridge.core.store._rows import Row, _dt, _dt_opt, _ts, _ts_opt
from hsmbridge.errors import AlreadyExists, NotFound, Reason


@dataclass(frozen=True, slots=True)
class ExternalKey:
    """What a pending-import / scheduled-deletion key has beyond the core `Key` (see 004's notes)."""

    tenant: str
    key_id: str
    alias: str
    description: str
    origin: str  # "kms" (generated here) | "external" (the owner imports it)
    material_present: bool
    created_at: datetime
    material_version_id: str | None = None
    material_check: bytes | None = None
    material_expires_at: datetime | None = None
    scheduled_deletion_at: datetime | None = None

    def but(self, **changes: Any) -> ExternalKey:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class ImportParameters:
    """A bound import token handed out: used at most once; its keypair dies when it expires."""

    tenant: str
    id: str
    key_id: str
    hsm_object_id: str
    expires_at: datetime
    used: bool = False


_EXTERNAL_COLUMNS = (
    "tenant",
    "key_id",
    "alias",
    "description",
    "origin",
    "material_present",
    "material_version_id",
    "material_check",
    "material_expires_at",
    "scheduled_deletion_at",
    "created_at",
)
_PARAMETER_COLUMNS = ("tenant", "id", "key_id", "hsm_object_id", "expires_at", "used")
_SELECT_EXTERNAL = f"SELECT {', '.join(_EXTERNAL_COLUMNS)} FROM external_keys"
_SELECT_PARAMETERS = f"SELECT {', '.join(_PARAMETER_COLUMNS)} FROM import_parameters"

Execute = Callable[[str, dict[str, Any]], Any]


def _is_integrity_error(exc: BaseException) -> bool:
    """sqlite3.IntegrityError and psycopg's IntegrityError subclasses, without importing either."""
    return any(cls.__name__ == "IntegrityError" for cls in type(exc).__mro__)


def _external_params(row: ExternalKey) -> dict[str, Any]:
    return {
        "tenant": row.tenant,
        "key_id": row.key_id,
        "alias": row.alias,
        "description": row.description,
        "origin": row.origin,
        "material_present": row.material_present,
        "material_version_id": row.material_version_id,
        "material_check": None if row.material_check is None else bytes(row.material_check),
        "material_expires_at": _ts_opt(row.material_expires_at),
        "scheduled_deletion_at": _ts_opt(row.scheduled_deletion_at),
        "created_at": _ts(row.created_at),
    }


def _row_to_external(row: Row) -> ExternalKey:
    check = row["material_check"]
    return ExternalKey(
        tenant=row["tenant"],
        key_id=row["key_id"],
        alias=row["alias"],
        description=row["description"],
        origin=row["origin"],
        material_present=bool(row["material_present"]),
        material_version_id=row["material_version_id"],
        material_check=None if check is None else bytes(check),
        material_expires_at=_dt_opt(row["material_expires_at"]),
        scheduled_deletion_at=_dt_opt(row["scheduled_deletion_at"]),
        created_at=_dt(row["created_at"]),
    )


def _row_to_parameters(row: Row) -> ImportParameters:
    return ImportParameters(
        tenant=row["tenant"],
        id=row["id"],
        key_id=row["key_id"],
        hsm_object_id=row["hsm_object_id"],
        expires_at=_dt(row["expires_at"]),
        used=bool(row["used"]),
    )


class ExternalRows:
    """The 004 operations over one engine connection (inside that engine's transaction)."""

    def __init__(self, execute: Execute) -> None:
        #: runs ``:name``-style SQL on the engine (see the module docstring)
        self._execute = execute

    # -- external keys -----------------------------------------------------------------------

    def get_external_key(self, tenant: str, key_id: str) -> ExternalKey | None:
        row = self._execute(
            f"{_SELECT_EXTERNAL} WHERE tenant = :tenant AND key_id = :key_id",
            {"tenant": tenant, "key_id": key_id},
        ).fetchone()
        return None if row is None else _row_to_external(row)

    def get_external_key_by_alias(self, tenant: str, alias: str) -> ExternalKey | None:
        row = self._execute(
            f"{_SELECT_EXTERNAL} WHERE tenant = :tenant AND alias = :alias",
            {"tenant": tenant, "alias": alias},
        ).fetchone()
        return None if row is None else _row_to_external(row)

    def list_external_keys(self, tenant: str, *, after: str | None, limit: int) -> list[ExternalKey]:
        """The tenant's external keys ordered by key id, starting after the `after` key id."""
        rows = self._execute(
            f"{_SELECT_EXTERNAL} WHERE tenant = :tenant AND key_id > :after ORDER BY key_id LIMIT :limit",
            {"tenant": tenant, "after": after or "", "limit": limit},
        ).fetchall()
        return [_row_to_external(row) for row in rows]

    def count_external_keys(self, tenant: str) -> int:
        row = self._execute(
            "SELECT COUNT(*) AS n FROM external_keys WHERE tenant = :tenant", {"tenant": tenant}
        )
        return int(row.fetchone()["n"])

    def list_external_keys_due(self, when: datetime) -> list[ExternalKey]:
        """All tenants: keys whose material expired or whose scheduled deletion is due by `when`."""
        rows = self._execute(
            f"{_SELECT_EXTERNAL} "
            "WHERE (material_present AND material_expires_at <= :when) OR scheduled_deletion_at <= :when "
            "ORDER BY tenant, key_id",
            {"when": _ts(when)},
        ).fetchall()
        return [_row_to_external(row) for row in rows]

    def put_external_key(self, row: ExternalKey) -> None:
        """Insert or replace the row; `AlreadyExists` if another key of the tenant has the alias."""
        params = _external_params(row)
        other = self.get_external_key_by_alias(row.tenant, row.alias)
        if other is not None and other.key_id != row.key_id:
            raise AlreadyExists("Existing CMK alias.", reason=Reason.ALIAS_NOT_UNIQUE, target="key_alias")
        updates = ", ".join(f"{c} = :{c}" for c in _EXTERNAL_COLUMNS if c not in ("tenant", "key_id"))
        try:
            self._execute(
                f"INSERT INTO external_keys ({', '.join(_EXTERNAL_COLUMNS)}) VALUES "
                f"({', '.join(':' + c for c in _EXTERNAL_COLUMNS)}) "
                f"ON CONFLICT (tenant, key_id) DO UPDATE SET {updates}",
                params,
            )
        except Exception as exc:
            if _is_integrity_error(exc):
                raise AlreadyExists(
                    "Existing CMK alias.", reason=Reason.ALIAS_NOT_UNIQUE, target="key_alias"
                ) from exc
            raise

    def delete_key_versions(self, tenant: str, key_id: str) -> int:
        """Destroy a key's stored material (every version); the key row stays."""
        cur = self._execute(
            "DELETE FROM key_versions WHERE tenant = :tenant AND key_id = :key_id",
            {"tenant": tenant, "key_id": key_id},
        )
        return int(cur.rowcount)

    # -- import parameters -------------------------------------------------------------------

    def insert_import_parameters(self, row: ImportParameters) -> None:
        self._execute(
            f"INSERT INTO import_parameters ({', '.join(_PARAMETER_COLUMNS)}) VALUES "
            f"({', '.join(':' + c for c in _PARAMETER_COLUMNS)})",
            {
                "tenant": row.tenant,
                "id": row.id,
                "key_id": row.key_id,
                "hsm_object_id": row.hsm_object_id,
                "expires_at": _ts(row.expires_at),
                "used": row.used,
            },
        )

    def consume_import_parameters(self, tenant: str, token_id: str) -> ImportParameters:
        """Mark the token used; `NotFound` if it is unknown or was already used (single use)."""
        row = self._execute(
            f"{_SELECT_PARAMETERS} WHERE tenant = :tenant AND id = :id",
            {"tenant": tenant, "id": token_id},
        ).fetchone()
        cur = self._execute(
            "UPDATE import_parameters SET used = :used WHERE tenant = :tenant AND id = :id AND NOT used",
            {"tenant": tenant, "id": token_id, "used": True},
        )
        if row is None or cur.rowcount != 1:
            raise NotFound(
                "the import token is unknown or was already used", reason=Reason.IMPORT_TOKEN_NOT_FOUND
            )
        return _row_to_parameters(row)

    def list_import_parameters_expired(self, when: datetime) -> list[ImportParameters]:
        rows = self._execute(
            f"{_SELECT_PARAMETERS} WHERE expires_at <= :when ORDER BY tenant, id",
            {"when": _ts(when)},
        ).fetchall()
        return [_row_to_parameters(row) for row in rows]

    def delete_import_parameters(self, tenant: str, token_id: str) -> None:
        self._execute(
            "DELETE FROM import_parameters WHERE tenant = :tenant AND id = :id",
            {"tenant": tenant, "id": token_id},
        )
