"""The store's records for pushing keys to cloud KMSs (migration 004), shared by both engines.

Why one module for SQLite and PostgreSQL: these are plain single-table reads and writes with no
engine-specific locking, so the SQL is written once with ``:name`` parameters and runs through
the shared implementation's primitives (`_sql.SqlReader._one`/``_all``/``_exec``, which respell
the placeholders for the engine), each operation `guarded` like every other store operation. The
mixins are bases of `SqlReader`, `SqlTransaction` and `SqlStore`, so no engine module names them.
The contract test (tests/test_push_store.py) runs on both engines.

Unique names and (connection, cloud key) pairs are checked inside the write transaction before
the insert, so a taken one is `AlreadyExists`; a concurrent insert that wins the race between
check and insert on PostgreSQL is caught by the UNIQUE constraint and surfaces as an internal
error instead (it is an operator creating the same connection twice at the same moment).
"""

# ruff: noqa: S608 -- the SQL here is assembled from this module's constants; values are bound.

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hsmbridge.core.store._guard import guarded
from hsmbridge.core.store._rows import _dt, _dt_opt, _ts, _ts_opt
from hsmbridge.errors import AlreadyExists, Conflict

CLOUDS = ("ibm", "aws", "huawei")


@dataclass(frozen=True, slots=True)
class PushConnection:
    """A target account. `settings` holds the non-secret fields only; the secret is sealed."""

    tenant: str
    id: str
    name: str
    cloud: str
    settings: Mapping[str, Any]
    sealed_secret: bytes = field(repr=False)
    created_at: datetime
    created_by: str
    updated_at: datetime


@dataclass(slots=True)
class CloudKey:
    """A key in a target KMS fed by hsmbridge. The material fields are set only once the cloud
    accepted an import (see the migration's comment)."""

    tenant: str
    id: str
    cloud: str
    connection_id: str
    kms_id: str
    created_at: datetime
    updated_at: datetime
    synced_at: datetime
    cloud_params: dict[str, Any] = field(default_factory=dict)
    region: str | None = None
    local_key_id: str | None = None
    local_key_name: str | None = None
    local_version_id: str | None = None
    kcv: str | None = None
    key_expiration: bool = False
    #: as the caller wrote it (RFC 3339, up to nanoseconds), echoed unchanged
    valid_to: str | None = None
    pushed_at: datetime | None = None


_CONNECTION_COLUMNS = (
    "tenant",
    "id",
    "name",
    "cloud",
    "settings",
    "sealed_secret",
    "created_at",
    "created_by",
    "updated_at",
)
_KEY_COLUMNS = (
    "tenant",
    "id",
    "cloud",
    "connection_id",
    "kms_id",
    "region",
    "local_key_id",
    "local_key_name",
    "local_version_id",
    "kcv",
    "key_expiration",
    "valid_to",
    "cloud_params",
    "synced_at",
    "pushed_at",
    "created_at",
    "updated_at",
)
_SELECT_CONNECTION = f"SELECT {', '.join(_CONNECTION_COLUMNS)} FROM push_connections"
_SELECT_KEY = f"SELECT {', '.join(_KEY_COLUMNS)} FROM push_cloud_keys"


def _insert(table: str, columns: Sequence[str]) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"


def _connection_params(conn: PushConnection) -> dict[str, Any]:
    return {
        "tenant": conn.tenant,
        "id": conn.id,
        "name": conn.name,
        "cloud": conn.cloud,
        "settings": json.dumps(dict(conn.settings), sort_keys=True),
        "sealed_secret": bytes(conn.sealed_secret),
        "created_at": _ts(conn.created_at),
        "created_by": conn.created_by,
        "updated_at": _ts(conn.updated_at),
    }


def _row_to_connection(row: Any) -> PushConnection:
    return PushConnection(
        tenant=row["tenant"],
        id=row["id"],
        name=row["name"],
        cloud=row["cloud"],
        settings=json.loads(row["settings"]),
        sealed_secret=bytes(row["sealed_secret"]),
        created_at=_dt(row["created_at"]),
        created_by=row["created_by"],
        updated_at=_dt(row["updated_at"]),
    )


def _key_params(key: CloudKey) -> dict[str, Any]:
    return {
        "tenant": key.tenant,
        "id": key.id,
        "cloud": key.cloud,
        "connection_id": key.connection_id,
        "kms_id": key.kms_id,
        "region": key.region,
        "local_key_id": key.local_key_id,
        "local_key_name": key.local_key_name,
        "local_version_id": key.local_version_id,
        "kcv": key.kcv,
        "key_expiration": bool(key.key_expiration),
        "valid_to": key.valid_to,
        "cloud_params": json.dumps(key.cloud_params, sort_keys=True, default=str),
        "synced_at": _ts(key.synced_at),
        "pushed_at": _ts_opt(key.pushed_at),
        "created_at": _ts(key.created_at),
        "updated_at": _ts(key.updated_at),
    }


def _row_to_key(row: Any) -> CloudKey:
    return CloudKey(
        tenant=row["tenant"],
        id=row["id"],
        cloud=row["cloud"],
        connection_id=row["connection_id"],
        kms_id=row["kms_id"],
        region=row["region"],
        local_key_id=row["local_key_id"],
        local_key_name=row["local_key_name"],
        local_version_id=row["local_version_id"],
        kcv=row["kcv"],
        key_expiration=bool(row["key_expiration"]),
        valid_to=row["valid_to"],
        cloud_params=json.loads(row["cloud_params"]),
        synced_at=_dt(row["synced_at"]),
        pushed_at=_dt_opt(row["pushed_at"]),
        created_at=_dt(row["created_at"]),
        updated_at=_dt(row["updated_at"]),
    )


class PushRecordReads:
    """A base of `_sql.SqlReader`: its ``_one``/``_all``/``_exec`` run the ``:name`` SQL on the
    engine, and `guarded` maps driver errors with the engine's mapping."""

    def _push_one(self, sql: str, params: Mapping[str, Any]) -> Any:
        return self._one(sql, dict(params))  # type: ignore[attr-defined]

    def _push_all(self, sql: str, params: Mapping[str, Any]) -> list[Any]:
        return list(self._all(sql, dict(params)))  # type: ignore[attr-defined]

    def _push_exec(self, sql: str, params: Mapping[str, Any]) -> int:
        """Run a write; the number of rows it changed."""
        return int(self._exec(sql, dict(params)).rowcount)  # type: ignore[attr-defined]

    @guarded
    def get_push_connection(self, tenant: str, ref: str) -> PushConnection | None:
        """By id, else by name."""
        row = self._push_one(
            f"{_SELECT_CONNECTION} WHERE tenant = :tenant AND id = :ref", {"tenant": tenant, "ref": ref}
        ) or self._push_one(
            f"{_SELECT_CONNECTION} WHERE tenant = :tenant AND name = :ref", {"tenant": tenant, "ref": ref}
        )
        return None if row is None else _row_to_connection(row)

    @guarded
    def list_push_connections(self, tenant: str) -> list[PushConnection]:
        rows = self._push_all(
            f"{_SELECT_CONNECTION} WHERE tenant = :tenant ORDER BY created_at, id", {"tenant": tenant}
        )
        return [_row_to_connection(row) for row in rows]

    @guarded
    def get_cloud_key(self, tenant: str, key_id: str) -> CloudKey | None:
        row = self._push_one(
            f"{_SELECT_KEY} WHERE tenant = :tenant AND id = :id", {"tenant": tenant, "id": key_id}
        )
        return None if row is None else _row_to_key(row)

    @guarded
    def find_cloud_key(self, tenant: str, connection_id: str, kms_id: str) -> CloudKey | None:
        row = self._push_one(
            f"{_SELECT_KEY} WHERE tenant = :tenant AND connection_id = :connection_id AND kms_id = :kms_id",
            {"tenant": tenant, "connection_id": connection_id, "kms_id": kms_id},
        )
        return None if row is None else _row_to_key(row)

    @guarded
    def list_cloud_keys(self, tenant: str, cloud: str | None = None) -> list[CloudKey]:
        where = "tenant = :tenant" + (" AND cloud = :cloud" if cloud else "")
        rows = self._push_all(
            f"{_SELECT_KEY} WHERE {where} ORDER BY created_at, id", {"tenant": tenant, "cloud": cloud}
        )
        return [_row_to_key(row) for row in rows]


class PushRecordWrites(PushRecordReads):
    """Mixed into each backend's write transaction."""

    @guarded
    def insert_push_connection(self, conn: PushConnection) -> None:
        if self.get_push_connection(conn.tenant, conn.name) is not None:
            raise AlreadyExists(f"a connection named {conn.name!r} already exists", target="name")
        self._push_exec(_insert("push_connections", _CONNECTION_COLUMNS), _connection_params(conn))

    @guarded
    def delete_push_connection(self, tenant: str, connection_id: str) -> bool:
        """Refused while cloud keys use it: their records would lose the account they live in."""
        used = self._push_one(
            "SELECT COUNT(*) AS n FROM push_cloud_keys WHERE tenant = :tenant AND connection_id = :id",
            {"tenant": tenant, "id": connection_id},
        )
        if used is not None and int(used["n"]) > 0:
            raise Conflict("the connection is used by cloud keys; delete their records first")
        return (
            self._push_exec(
                "DELETE FROM push_connections WHERE tenant = :tenant AND id = :id",
                {"tenant": tenant, "id": connection_id},
            )
            > 0
        )

    @guarded
    def insert_cloud_key(self, key: CloudKey) -> None:
        if self.find_cloud_key(key.tenant, key.connection_id, key.kms_id) is not None:
            raise AlreadyExists("this cloud key is already linked", target="kms_id")
        self._push_exec(_insert("push_cloud_keys", _KEY_COLUMNS), _key_params(key))

    @guarded
    def update_cloud_key(self, key: CloudKey) -> None:
        fixed = ("tenant", "id", "cloud", "connection_id", "kms_id", "created_at")
        sets = ", ".join(f"{c} = :{c}" for c in _KEY_COLUMNS if c not in fixed)
        self._push_exec(
            f"UPDATE push_cloud_keys SET {sets} WHERE tenant = :tenant AND id = :id", _key_params(key)
        )

    @guarded
    def delete_cloud_key(self, tenant: str, key_id: str) -> bool:
        return (
            self._push_exec(
                "DELETE FROM push_cloud_keys WHERE tenant = :tenant AND id = :id",
                {"tenant": tenant, "id": key_id},
            )
            > 0
        )


class PushStoreReads:
    """Mixed into each `Store`: the same reads outside a transaction, on one snapshot."""

    @guarded
    def get_push_connection(self, tenant: str, ref: str) -> PushConnection | None:
        with self._reading() as r:
            return r.get_push_connection(tenant, ref)

    @guarded
    def list_push_connections(self, tenant: str) -> list[PushConnection]:
        with self._reading() as r:
            return r.list_push_connections(tenant)

    @guarded
    def get_cloud_key(self, tenant: str, key_id: str) -> CloudKey | None:
        with self._reading() as r:
            return r.get_cloud_key(tenant, key_id)

    @guarded
    def find_cloud_key(self, tenant: str, connection_id: str, kms_id: str) -> CloudKey | None:
        with self._reading() as r:
            return r.find_cloud_key(tenant, connection_id, kms_id)

    @guarded
    def list_cloud_keys(self, tenant: str, cloud: str | None = None) -> list[CloudKey]:
        with self._reading() as r:
            return r.list_cloud_keys(tenant, cloud)
