"""The one implementation of the store contract (base.py), shared by SQLite and PostgreSQL.

Why a shared base class with engine hooks and not SQLAlchemy Core: both engines already run the
same schema from the same migration files, and every statement here is plain SQL both accept;
what differs is not the query language but *how each guarantee is obtained* (``BEGIN IMMEDIATE``
versus per-tenant advisory locks and row locks, a savepoint per constraint-checked write,
thread-local connections versus a pool). Those are a handful of hooks, each a few lines, in
sqlite.py and postgres.py. SQLAlchemy Core would give one query set too, but it would sit between
these hooks and the driver (its own transaction and savepoint objects, its own pool next to
psycopg_pool's, its own error wrapping), and it costs per statement on the path every
wrap/unwrap takes (a key lookup): measured on this machine, a one-row primary-key read in a
``BEGIN``/``COMMIT`` made 31.9k reads/s through sqlite3, 8.3k/s through SQLAlchemy 2.1 Core with
a cached ``select()`` (0.26x) and 4.1k/s with ``text()`` (0.13x), same run, same file.

How to add a store operation: write it once here with ``:name`` parameters (sqlite3's native
style; `SqlReader._exec` respells them ``%(name)s`` for psycopg), in `SqlReader` for a read and
`SqlTransaction` for a write, decorate it with `guarded`, and add a delegating read to `SqlStore`
if it is a read the store offers outside transactions too. In a read that is scoped to one tenant
call ``self._lock_tenant(tenant)`` first, and append ``self._for_update(...)`` to a read whose
rows the transaction will write afterwards: both are no-ops on SQLite, and on PostgreSQL they are
what serialises read-check-write sequences per tenant (see postgres.py). A write that may violate
a constraint goes through ``self._write`` (under a savepoint on PostgreSQL, so a follow-up query
can diagnose the violation) and catches ``self._integrity_error``.

The engine hooks (sqlite.py and postgres.py implement or override them):

* reader: `_integrity_error`, `_map_error` (driver error → domain error), `_translate`
  (placeholders), `_any` (membership in a list of values), `_lock_tenant`, `_for_update`, `_keys`
  (PostgreSQL reads a key with its aliases in one statement outside transactions);
* transaction: `_write`, `_savepoint_usable`;
* store: `_connection`, `_snapshot` (a reader for one read: SQLite wraps its queries in
  ``BEGIN``/``COMMIT``), `_begin`, `_commit`, `_rollback_quietly`, `_apply_migrations`,
  `_read_schema_version`, `_close`, `_transaction_type`.
"""

# ruff: noqa: S608 -- every SQL text here is assembled from this module's constants and
# placeholders; values are always bound parameters, never interpolated.

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from hsmbridge.core.model import DEFAULT_KEY_RING, ImportToken, Key, KeyState, KeyVersion, WrappedKey
from hsmbridge.core.store._guard import guarded
from hsmbridge.core.store._rows import (
    _IMPORT_COLUMNS,
    _KEY_COLUMNS,
    _KEY_POLICY_COLUMNS,
    _KEY_UPDATABLE,
    _REGISTRATION_COLUMNS,
    _REGISTRATION_SELECT,
    _VERSION_COLUMNS,
    Row,
    _check_rewrap,
    _dt,
    _dt_opt,
    _key_params,
    _registration_params,
    _rewrap_params,
    _row_to_key,
    _row_to_key_policy,
    _row_to_registration,
    _row_to_token,
    _row_to_version,
    _token_params,
    _ts,
    _ts_opt,
)
from hsmbridge.core.store.base import (
    InstancePolicy,
    KeyPolicyRecord,
    KeyQuery,
    KeyRing,
    Registration,
    RegistrationQuery,
)
from hsmbridge.core.store.external import ExternalRows
from hsmbridge.core.store.push_records import PushRecordReads, PushRecordWrites, PushStoreReads
from hsmbridge.errors import (
    AlreadyExists,
    Conflict,
    InternalError,
    InvalidInput,
    NotFound,
    Reason,
    StoreUnavailable,
)


class Cursor(Protocol):
    """What both drivers' ``execute`` returns and this module uses."""

    rowcount: int

    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Any = ..., /) -> Any: ...


def store_fault(what: str, unavailable: bool, detail: str) -> StoreUnavailable | InternalError:
    """A driver error met while doing `what`, as a domain error: `StoreUnavailable` (503 /
    UNAVAILABLE with Retry-After, retried by clients) when it is the database's own condition
    (down, full, read-only), `InternalError` (a bug) otherwise. `detail` is the engine's text,
    which never quotes bound values."""
    if unavailable:
        return StoreUnavailable(f"the store is unavailable ({what}: {detail})", metadata={"retry_after": "1"})
    return InternalError(f"database error in {what}: {detail}")


def concurrent_update() -> Conflict:
    """A lost race on a key: another request changed it first; the caller retries from a fresh read."""
    return Conflict(
        "the key was changed by another request; read it again and retry",
        reason=Reason.CONCURRENT_UPDATE,
    )


# --- SQL text ----------------------------------------------------------------------------------

_KEY_COLS = ", ".join(f"k.{c}" for c in _KEY_COLUMNS)
KEY_SELECT = f"SELECT {_KEY_COLS} FROM keys k"
_KEY_INSERT = (
    f"INSERT INTO keys ({', '.join(_KEY_COLUMNS)}) VALUES ({', '.join(':' + c for c in _KEY_COLUMNS)})"
)
#: Identity stays put; `revision` is bumped by the statement itself.
_KEY_UPDATE = (
    "UPDATE keys SET "
    + ", ".join(f"{c} = :{c}" for c in _KEY_UPDATABLE)
    + ", revision = revision + 1 WHERE tenant = :tenant AND id = :id AND revision = :revision"
)
#: Master KEK rotation's compare-and-swap: only the wrapping changes, and only if it is still
#: exactly what the rotation read (see `_check_rewrap` for why length and kind must not change).
_REWRAP = (
    "UPDATE key_versions SET wrapped_blob = :blob, kek_label = :kek_label, wrap_mechanism = :mechanism "
    "WHERE tenant = :tenant AND id = :id AND kek_label = :old_kek_label AND wrapped_blob = :old_blob "
    "AND wrap_mechanism = :old_mechanism"
)
_VERSION_INSERT = (
    f"INSERT INTO key_versions ({_VERSION_COLUMNS}) VALUES ("
    + ", ".join(":" + c.strip() for c in _VERSION_COLUMNS.split(","))
    + ")"
)
_IMPORT_INSERT = (
    f"INSERT INTO import_tokens ({_IMPORT_COLUMNS}) VALUES ("
    + ", ".join(":" + c.strip() for c in _IMPORT_COLUMNS.split(","))
    + ")"
)
_KEY_POLICY_INSERT = (
    f"INSERT INTO key_policies ({_KEY_POLICY_COLUMNS}) VALUES ("
    + ", ".join(":" + c.strip() for c in _KEY_POLICY_COLUMNS.split(","))
    + ")"
)
#: Whether a key exists (and, with `_for_update`, the lock on its row).
_KEY_ROW = "SELECT 1 AS x FROM keys WHERE tenant = :tenant AND id = :key_id"
#: One text for both engines: booleans read as truth values in both, timestamps compare as
#: fixed-width text.
_ROTATION_CANDIDATES = (
    "SELECT tenant, id FROM keys WHERE rotation_enabled AND state = :state AND NOT extractable "
    "AND NOT imported AND COALESCE(last_rotated_at, created_at) < :before "
    "AND (tenant, id) > (:after_tenant, :after_id) ORDER BY tenant, id LIMIT :limit"
)


def _version_params(version: KeyVersion) -> dict[str, Any]:
    return {
        "tenant": version.tenant,
        "id": version.id,
        "key_id": version.key_id,
        "number": version.number,
        "created_at": _ts(version.created_at),
        "wrapped_blob": bytes(version.wrapped.blob),
        "wrapped_length": version.wrapped.length,
        "kek_label": version.wrapped.kek_label,
        "wrap_mechanism": version.wrapped.mechanism,
        "material_kind": version.wrapped.kind,
    }


# --- reads ------------------------------------------------------------------------------------


class SqlReader(PushRecordReads):
    """Every read, bound to one connection: the store's own reads and a transaction's."""

    #: the driver's constraint-violation exception
    _integrity_error: ClassVar[type[Exception]]

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    # engine hooks ----------------------------------------------------------------------------

    @staticmethod
    def _map_error(exc: Exception, what: str) -> Exception | None:
        """The domain error for a driver error `exc` met while doing `what` (an operation's
        name, "commit"…), None if `exc` is not the driver's: `StoreUnavailable` for the
        database's own conditions (down, full, read-only), `InternalError` for a bug."""
        raise NotImplementedError

    @staticmethod
    def _translate(sql: str) -> str:
        """`sql` with this driver's placeholders (the shared text uses ``:name``)."""
        return sql

    @staticmethod
    def _any(column: str, name: str, values: Sequence[Any], params: dict[str, Any]) -> str:
        """A condition "`column` is one of `values`", binding them as the one parameter `name`.

        Why one parameter, not ``IN (:v0, :v1, …)``: the statement text then stays the same
        whatever the number of values, so the driver's prepared-statement cache serves it, and
        no engine limit on bound parameters applies.
        """
        raise NotImplementedError

    def _lock_tenant(self, tenant: str) -> None:
        """Serialise this transaction with every other one reading `tenant` (PostgreSQL)."""

    def _for_update(self, strength: str) -> str:
        """A row-locking clause for a read inside a write transaction (PostgreSQL), else ''."""
        return ""

    # primitives ------------------------------------------------------------------------------

    def _db(self) -> Any:
        return self._conn

    def _exec(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        return self._db().execute(self._translate(sql), params or {})

    def _one(self, sql: str, params: dict[str, Any] | None = None) -> Row | None:
        row: Row | None = self._exec(sql, params).fetchone()
        return row

    def _all(self, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
        return list(self._exec(sql, params).fetchall())

    def _keys(self, tenant: str, where: str, params: dict[str, Any], tail: str = "") -> list[Key]:
        """Keys matching `where`, each with its aliases (in their order of creation)."""
        self._lock_tenant(tenant)
        rows = self._all(f"{KEY_SELECT} WHERE {where}{tail}{self._for_update('NO KEY UPDATE OF k')}", params)
        if not rows:
            return []
        # A statement of its own: on PostgreSQL it sees every alias committed before the row
        # locks above were granted (a subquery in the locking statement would not).
        found: dict[str, list[str]] = {row["id"]: [] for row in rows}
        alias_params: dict[str, Any] = {"tenant": tenant}
        if len(found) == 1:  # get_key, get_key_by_alias: the hot path, a plain equality
            alias_params["key_id"] = rows[0]["id"]
            members = "key_id = :key_id"
        else:
            members = self._any("key_id", "key_ids", list(found), alias_params)
        for alias in self._all(
            f"SELECT key_id, alias FROM key_aliases WHERE tenant = :tenant AND {members} "
            "ORDER BY key_id, seq",
            alias_params,
        ):
            found[alias["key_id"]].append(alias["alias"])
        return [_row_to_key(row, found[row["id"]]) for row in rows]

    def _key_filter(self, tenant: str, query: KeyQuery) -> tuple[str, dict[str, Any]] | None:
        """WHERE clause and parameters for `query`; None when it can match nothing (``states=[]``)."""
        clauses = ["k.tenant = :tenant"]
        params: dict[str, Any] = {"tenant": tenant}
        if query.states is not None:
            states = sorted({int(s) for s in query.states})
            if not states:
                return None
            clauses.append(self._any("k.state", "states", states, params))
        if query.extractable is not None:
            clauses.append("k.extractable = :extractable")
            params["extractable"] = bool(query.extractable)
        if query.key_ring is not None:
            clauses.append("k.key_ring = :key_ring")
            params["key_ring"] = query.key_ring
        return " AND ".join(clauses), params

    def _key_exists(self, tenant: str, key_id: str) -> bool:
        return self._one(_KEY_ROW, {"tenant": tenant, "key_id": key_id}) is not None

    def _ring_exists(self, tenant: str, ring_id: str) -> bool:
        row = self._one(
            "SELECT 1 AS x FROM key_rings WHERE tenant = :tenant AND id = :id",
            {"tenant": tenant, "id": ring_id},
        )
        return row is not None

    def _tenant_exists(self, tenant: str) -> bool:
        return self._one("SELECT 1 AS x FROM tenants WHERE id = :id", {"id": tenant}) is not None

    # the contract ----------------------------------------------------------------------------

    @guarded
    def get_key(self, tenant: str, key_id: str) -> Key | None:
        keys = self._keys(tenant, "k.tenant = :tenant AND k.id = :id", {"tenant": tenant, "id": key_id})
        return keys[0] if keys else None

    @guarded
    def get_key_by_alias(self, tenant: str, alias: str) -> Key | None:
        keys = self._keys(
            tenant,
            "k.tenant = :tenant AND k.id = "
            "(SELECT key_id FROM key_aliases WHERE tenant = :tenant AND alias = :alias)",
            {"tenant": tenant, "alias": alias},
        )
        return keys[0] if keys else None

    @guarded
    def list_keys(self, tenant: str, query: KeyQuery) -> list[Key]:
        if query.limit < 0 or query.offset < 0:
            # SQLite reads LIMIT -1 as "no limit"; refuse rather than return everything.
            raise InvalidInput("limit and offset must not be negative", reason=Reason.INVALID_FIELD)
        where = self._key_filter(tenant, query)
        if where is None or query.limit == 0:
            return []
        clause, params = where
        params.update(limit=query.limit, offset=query.offset)
        return self._keys(tenant, clause, params, " ORDER BY k.id LIMIT :limit OFFSET :offset")

    @guarded
    def count_keys(self, tenant: str, query: KeyQuery) -> int:
        where = self._key_filter(tenant, query)
        if where is None:
            return 0
        clause, params = where
        self._lock_tenant(tenant)
        row = self._one(f"SELECT COUNT(*) AS n FROM keys k WHERE {clause}", params)
        return 0 if row is None else int(row["n"])

    @guarded
    def get_version(self, tenant: str, version_id: str) -> KeyVersion | None:
        self._lock_tenant(tenant)
        row = self._one(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions WHERE tenant = :tenant AND id = :id",
            {"tenant": tenant, "id": version_id},
        )
        return None if row is None else _row_to_version(row)

    @guarded
    def list_versions(self, tenant: str, key_id: str) -> list[KeyVersion]:
        self._lock_tenant(tenant)
        rows = self._all(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions "
            "WHERE tenant = :tenant AND key_id = :key_id ORDER BY number DESC",
            {"tenant": tenant, "key_id": key_id},
        )
        return [_row_to_version(row) for row in rows]

    @guarded
    def list_versions_not_under_kek(
        self, kek_label: str, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[KeyVersion]:
        # Across tenants, for master KEK rotation: no tenant lock (each rewrap is a blind
        # compare-and-swap in its own transaction).
        tenant, version_id = after or ("", "")
        rows = self._all(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions WHERE kek_label <> :kek_label "
            "AND (tenant, id) > (:after_tenant, :after_id) ORDER BY tenant, id LIMIT :limit",
            {"kek_label": kek_label, "after_tenant": tenant, "after_id": version_id, "limit": limit},
        )
        return [_row_to_version(row) for row in rows]

    @guarded
    def count_versions_by_kek(self) -> dict[str, int]:
        rows = self._all("SELECT kek_label, COUNT(*) AS n FROM key_versions GROUP BY kek_label")
        return {row["kek_label"]: int(row["n"]) for row in rows}

    @guarded
    def list_rotation_candidates(
        self, rotated_before: datetime, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[tuple[str, str]]:
        # Across tenants, for the rotation scheduler: no tenant lock (each rotation is a
        # compare-and-swap on the key revision in its own transaction).
        tenant, key_id = after or ("", "")
        rows = self._all(
            _ROTATION_CANDIDATES,
            {
                "state": int(KeyState.ACTIVE),
                "before": _ts(rotated_before),
                "after_tenant": tenant,
                "after_id": key_id,
                "limit": limit,
            },
        )
        return [(row["tenant"], row["id"]) for row in rows]

    @guarded
    def get_import_token(self, tenant: str) -> ImportToken | None:
        self._lock_tenant(tenant)
        row = self._one(
            f"SELECT {_IMPORT_COLUMNS} FROM import_tokens WHERE tenant = :tenant{self._for_update('UPDATE')}",
            {"tenant": tenant},
        )
        return None if row is None else _row_to_token(row)

    @guarded
    def list_import_tokens_expired_before(self, when: datetime) -> list[ImportToken]:
        # Across tenants, for the sweeper: no tenant lock (it deletes each token in its own transaction).
        rows = self._all(
            f"SELECT {_IMPORT_COLUMNS} FROM import_tokens WHERE expires_at < :when "
            "ORDER BY expires_at, tenant",
            {"when": _ts(when)},
        )
        return [_row_to_token(row) for row in rows]

    @guarded
    def list_key_rings(self, tenant: str) -> list[KeyRing]:
        self._lock_tenant(tenant)
        rows = self._all(
            "SELECT tenant, id, created_at, created_by FROM key_rings WHERE tenant = :tenant ORDER BY id",
            {"tenant": tenant},
        )
        return [
            KeyRing(
                id=row["id"],
                tenant=row["tenant"],
                created_at=_dt_opt(row["created_at"]),
                created_by=row["created_by"],
            )
            for row in rows
        ]

    @guarded
    def get_instance_policies(self, tenant: str) -> list[InstancePolicy]:
        self._lock_tenant(tenant)
        rows = self._all(
            "SELECT policy_type, data, created_at, created_by, updated_at, updated_by "
            "FROM instance_policies WHERE tenant = :tenant ORDER BY policy_type",
            {"tenant": tenant},
        )
        return [
            InstancePolicy(
                policy_type=row["policy_type"],
                data=json.loads(row["data"]),
                created_at=_dt(row["created_at"]),
                created_by=row["created_by"],
                updated_at=_dt(row["updated_at"]),
                updated_by=row["updated_by"],
            )
            for row in rows
        ]

    @guarded
    def get_key_policy_records(self, tenant: str, key_id: str) -> list[KeyPolicyRecord]:
        self._lock_tenant(tenant)
        rows = self._all(
            f"SELECT {_KEY_POLICY_COLUMNS} FROM key_policies "
            "WHERE tenant = :tenant AND key_id = :key_id ORDER BY policy_type",
            {"tenant": tenant, "key_id": key_id},
        )
        return [_row_to_key_policy(row) for row in rows]

    @guarded
    def get_registration(self, tenant: str, key_id: str, resource_crn: str) -> Registration | None:
        self._lock_tenant(tenant)
        row = self._one(
            _REGISTRATION_SELECT
            + " WHERE r.tenant = :tenant AND r.key_id = :key_id AND r.resource_crn = :crn",
            {"tenant": tenant, "key_id": key_id, "crn": resource_crn},
        )
        return None if row is None else _row_to_registration(row)

    @guarded
    def list_registrations(self, tenant: str, query: RegistrationQuery) -> list[Registration]:
        clauses = ["r.tenant = :tenant"]
        params: dict[str, Any] = {"tenant": tenant}
        join = ""
        if query.states is not None:
            states = sorted({int(s) for s in query.states})
            if not states:
                return []
            clauses.append(self._any("r.state", "states", states, params))
        if query.key_id is not None:
            clauses.append("r.key_id = :key_id")
            params["key_id"] = query.key_id
        if query.key_ring is not None:
            join = " JOIN keys k ON k.tenant = r.tenant AND k.id = r.key_id"
            clauses.append("k.key_ring = :key_ring")
            params["key_ring"] = query.key_ring
        if query.crn_prefix:
            # A literal, case-sensitive prefix in both engines: LIKE would give % and _ a meaning,
            # and SQLite's LIKE folds ASCII case while CRNs are case-sensitive.
            clauses.append("substr(r.resource_crn, 1, :crn_length) = :crn_prefix")
            params.update(crn_prefix=query.crn_prefix, crn_length=len(query.crn_prefix))
        if query.prevent_key_deletion is not None:
            clauses.append("r.prevent_key_deletion = :prevent")
            params["prevent"] = bool(query.prevent_key_deletion)
        self._lock_tenant(tenant)
        rows = self._all(
            f"{_REGISTRATION_SELECT}{join} WHERE {' AND '.join(clauses)} "
            "ORDER BY r.created_at, r.key_id, r.resource_crn",
            params,
        )
        return [_row_to_registration(row) for row in rows]


# --- writes -----------------------------------------------------------------------------------


class SqlTransaction(SqlReader, PushRecordWrites):
    """The writer handed out by `transaction()`; dead once the `with` block ends.

    Why multi-statement writes (`insert_key`, `purge_key`, adding an alias) run under a
    SAVEPOINT: a caller may catch `AlreadyExists` from a taken alias and carry on; without the
    savepoint the key and its version would already be written and get committed without it.
    """

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self._open = True

    # engine hooks ----------------------------------------------------------------------------

    def _write(self, sql: str, params: dict[str, Any]) -> Any:
        """A statement that may violate a constraint (PostgreSQL runs it under a savepoint)."""
        return self._exec(sql, params)

    def _savepoint_usable(self) -> bool:
        """Whether a savepoint can still be rolled back to (the engine may have rolled back all)."""
        raise NotImplementedError

    # primitives ------------------------------------------------------------------------------

    def _db(self) -> Any:
        if not self._open:
            raise InternalError("store transaction used after its `with` block ended")
        return self._conn

    def _finish(self) -> None:
        self._open = False

    @contextmanager
    def _atomic(self, name: str) -> Iterator[None]:
        """A SAVEPOINT: on any error, undo just this block and leave the transaction usable."""
        db = self._db()
        db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            try:
                if self._savepoint_usable():
                    db.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    db.execute(f"RELEASE SAVEPOINT {name}")
            except Exception:  # noqa: S110 -- keep the original error; the commit refuses later
                pass
            raise
        db.execute(f"RELEASE SAVEPOINT {name}")

    def _require_tenant(self, tenant: str) -> None:
        if not self._tenant_exists(tenant):
            raise InternalError(f"tenant {tenant!r} is not registered; call ensure_tenant() first")

    # the contract ----------------------------------------------------------------------------

    @guarded
    def ensure_tenant(self, tenant: str, now: datetime) -> None:
        cur = self._exec(
            "INSERT INTO tenants (id, created_at) VALUES (:id, :now) ON CONFLICT (id) DO NOTHING",
            {"id": tenant, "now": _ts(now)},
        )
        if cur.rowcount == 1:
            # Only for a brand-new tenant: if the default ring were re-created on every call, a
            # ring the service had deleted on purpose would come back.
            # Nobody created it, hence no created_by; it came into being with the tenant.
            self._exec(
                "INSERT INTO key_rings (tenant, id, created_at, created_by) "
                "VALUES (:tenant, :id, :now, NULL)",
                {"tenant": tenant, "id": DEFAULT_KEY_RING, "now": _ts(now)},
            )

    @guarded
    def insert_key(self, key: Key, first_version: KeyVersion | None) -> None:
        if first_version is not None:
            if (first_version.tenant, first_version.key_id) != (key.tenant, key.id):
                raise InternalError("first version belongs to another key")
            if key.current_version_id != first_version.id:
                raise InternalError("a new key's current version must be its first version")
        with self._atomic("insert_key"):
            try:
                self._write(_KEY_INSERT, _key_params(key))
            except self._integrity_error as exc:
                if self._key_exists(key.tenant, key.id):
                    raise AlreadyExists("a key with this id already exists") from exc
                self._require_tenant(key.tenant)
                if not self._ring_exists(key.tenant, key.key_ring):
                    raise NotFound("key ring not found", reason=Reason.KEY_RING_NOT_FOUND) from exc
                raise
            if first_version is not None:
                self._insert_version(first_version)
            for alias in key.aliases:
                self._insert_alias(key.tenant, key.id, alias)

    @property
    def external(self) -> ExternalRows:
        """External keys and bound import parameters (migration 003, core/store/external.py)."""
        return ExternalRows(self._write)

    @guarded
    def update_key(self, key: Key) -> None:
        # Of two updates from the same revision exactly one matches: SQLite serialises writers,
        # PostgreSQL re-checks the WHERE against the row a concurrent writer committed.
        try:
            cur = self._write(_KEY_UPDATE, _key_params(key))
        except self._integrity_error as exc:
            # The only foreign key an update can break: moving the key to a ring that does not exist.
            if not self._ring_exists(key.tenant, key.key_ring):
                raise NotFound("key ring not found", reason=Reason.KEY_RING_NOT_FOUND) from exc
            raise
        if cur.rowcount == 1:
            key.revision += 1
            return
        if not self._key_exists(key.tenant, key.id):
            raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND)
        raise concurrent_update()

    @guarded
    def add_version(self, version: KeyVersion) -> None:
        self._insert_version(version)

    @guarded
    def replace_wrapped(self, tenant: str, version_id: str, expected: WrappedKey, new: WrappedKey) -> bool:
        # A concurrent rewrap of the same row makes this one wait (PostgreSQL: then re-check the
        # WHERE against the committed row) and match nothing: False, as in `update_key`.
        _check_rewrap(expected, new)
        cur = self._write(_REWRAP, _rewrap_params(tenant, version_id, expected, new))
        return bool(cur.rowcount == 1)

    def _insert_version(self, version: KeyVersion) -> None:
        try:
            self._write(_VERSION_INSERT, _version_params(version))
        except self._integrity_error as exc:
            # PostgreSQL (READ COMMITTED): these queries see what a racing transaction committed.
            if not self._key_exists(version.tenant, version.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            if self._one(
                "SELECT 1 AS x FROM key_versions WHERE tenant = :tenant AND id = :id",
                {"tenant": version.tenant, "id": version.id},
            ):
                raise AlreadyExists("a key version with this id already exists") from exc
            # The number is taken: another rotation got there first.
            raise Conflict(
                "another version with this number was stored concurrently",
                reason=Reason.CONCURRENT_UPDATE,
            ) from exc

    @guarded
    def add_alias(self, tenant: str, key_id: str, alias: str) -> None:
        self._insert_alias(tenant, key_id, alias)

    def _insert_alias(self, tenant: str, key_id: str, alias: str) -> None:
        params = {"tenant": tenant, "key_id": key_id, "alias": alias, "now": _ts(datetime.now(UTC))}
        with self._atomic("add_alias"):
            # The key row lock (PostgreSQL) makes MAX(seq) + 1 safe: every alias insert for this
            # key holds it; SQLite's write lock does the same for the whole transaction.
            if (
                self._one(
                    _KEY_ROW + self._for_update("NO KEY UPDATE"),
                    params,
                )
                is None
            ):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND)
            try:
                self._write(
                    "INSERT INTO key_aliases (tenant, alias, key_id, seq, created_at) "
                    "SELECT :tenant, :alias, :key_id, COALESCE(MAX(seq), 0) + 1, :now FROM key_aliases "
                    "WHERE tenant = :tenant AND key_id = :key_id",
                    params,
                )
            except self._integrity_error as exc:
                raise AlreadyExists(
                    "the alias is already in use in this instance", reason=Reason.ALIAS_NOT_UNIQUE
                ) from exc

    @guarded
    def remove_alias(self, tenant: str, key_id: str, alias: str) -> bool:
        cur = self._exec(
            "DELETE FROM key_aliases WHERE tenant = :tenant AND key_id = :key_id AND alias = :alias",
            {"tenant": tenant, "key_id": key_id, "alias": alias},
        )
        return bool(cur.rowcount > 0)

    @guarded
    def purge_key(self, tenant: str, key_id: str) -> None:
        params = {"tenant": tenant, "key_id": key_id}
        with self._atomic("purge_key"):
            # FOR UPDATE first (PostgreSQL): a concurrent rotation or alias insert (whose foreign
            # key check needs a share lock on this row) waits for us, then finds the key gone.
            if (
                self._one(
                    _KEY_ROW + self._for_update("UPDATE"),
                    params,
                )
                is None
            ):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND)
            # Explicit deletes rather than relying on ON DELETE CASCADE: correct even on a SQLite
            # connection where someone forgot PRAGMA foreign_keys.
            for table in _KEY_CHILD_TABLES:
                self._exec(f"DELETE FROM {table} WHERE tenant = :tenant AND key_id = :key_id", params)
            self._exec("DELETE FROM keys WHERE tenant = :tenant AND id = :key_id", params)

    @guarded
    def put_import_token(self, token: ImportToken) -> ImportToken | None:
        # get_import_token takes the tenant lock on PostgreSQL: two replacements cannot both
        # return the same previous token (one of the new tokens' keypairs would never be destroyed).
        previous = self.get_import_token(token.tenant)
        params = _token_params(token)
        try:
            self._write(
                f"{_IMPORT_INSERT} ON CONFLICT (tenant) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in params if c != "tenant"),
                params,
            )
        except self._integrity_error as exc:
            self._require_tenant(token.tenant)
            raise InternalError("could not store the import token") from exc
        return previous

    @guarded
    def update_import_token(self, token: ImportToken) -> None:
        params = _token_params(token)
        cur = self._exec(
            "UPDATE import_tokens SET "
            + ", ".join(f"{c} = :{c}" for c in params if c not in ("tenant", "id"))
            + " WHERE tenant = :tenant AND id = :id",
            params,
        )
        if cur.rowcount == 0:
            raise NotFound("import token not found", reason=Reason.IMPORT_TOKEN_NOT_FOUND)

    @guarded
    def delete_import_token(self, tenant: str, token_id: str) -> None:
        # Deliberately silent when absent: the expiry sweeper may race with a replacement, and
        # the replaced token's keypair is already the replacer's to destroy.
        self._exec(
            "DELETE FROM import_tokens WHERE tenant = :tenant AND id = :id",
            {"tenant": tenant, "id": token_id},
        )

    @guarded
    def create_key_ring(self, ring: KeyRing) -> None:
        try:
            self._write(
                "INSERT INTO key_rings (tenant, id, created_at, created_by) "
                "VALUES (:tenant, :id, :created_at, :created_by)",
                {
                    "tenant": ring.tenant,
                    "id": ring.id,
                    "created_at": _ts_opt(ring.created_at),
                    "created_by": ring.created_by,
                },
            )
        except self._integrity_error as exc:
            self._require_tenant(ring.tenant)
            raise AlreadyExists("a key ring with this id already exists") from exc

    @guarded
    def delete_key_ring(self, tenant: str, ring_id: str) -> None:
        try:
            cur = self._write(
                "DELETE FROM key_rings WHERE tenant = :tenant AND id = :id", {"tenant": tenant, "id": ring_id}
            )
        except self._integrity_error as exc:
            raise Conflict("the key ring still holds keys", reason=Reason.KEY_RING_NOT_EMPTY) from exc
        if cur.rowcount == 0:
            raise NotFound("key ring not found", reason=Reason.KEY_RING_NOT_FOUND)

    @guarded
    def put_instance_policy(self, tenant: str, policy: InstancePolicy) -> None:
        """Upsert; on replace the original `created_at`/`created_by` are kept.

        Why: creation is a historical fact, and keeping it here spares every caller a read
        before each write just to carry those two fields over.
        """
        try:
            data = json.dumps(policy.data, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InternalError("instance policy data is not JSON-serialisable") from exc
        try:
            self._write(
                "INSERT INTO instance_policies "
                "(tenant, policy_type, data, created_at, created_by, updated_at, updated_by) "
                "VALUES (:tenant, :policy_type, :data, :created_at, :created_by, :updated_at, :updated_by) "
                "ON CONFLICT (tenant, policy_type) DO UPDATE SET "
                "data = excluded.data, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                {
                    "tenant": tenant,
                    "policy_type": policy.policy_type,
                    "data": data,
                    "created_at": _ts(policy.created_at),
                    "created_by": policy.created_by,
                    "updated_at": _ts(policy.updated_at),
                    "updated_by": policy.updated_by,
                },
            )
        except self._integrity_error as exc:
            self._require_tenant(tenant)
            raise InternalError("could not store the instance policy") from exc

    @guarded
    def put_key_policy_record(self, record: KeyPolicyRecord) -> None:
        """Upsert keeping `id`, `created_at`, `created_by` (see `put_instance_policy` for why)."""
        try:
            self._write(
                f"{_KEY_POLICY_INSERT} ON CONFLICT (tenant, key_id, policy_type) DO UPDATE SET "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                {
                    "tenant": record.tenant,
                    "key_id": record.key_id,
                    "policy_type": record.policy_type,
                    "id": record.id,
                    "created_at": _ts(record.created_at),
                    "created_by": record.created_by,
                    "updated_at": _ts(record.updated_at),
                    "updated_by": record.updated_by,
                },
            )
        except self._integrity_error as exc:
            if not self._key_exists(record.tenant, record.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            raise InternalError("could not store the key policy") from exc

    @guarded
    def insert_registration(self, registration: Registration) -> None:
        try:
            self._write(
                f"INSERT INTO registrations ({', '.join(_REGISTRATION_COLUMNS)}) "
                f"VALUES ({', '.join(':' + c for c in _REGISTRATION_COLUMNS)})",
                _registration_params(registration),
            )
        except self._integrity_error as exc:
            if not self._key_exists(registration.tenant, registration.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            raise AlreadyExists("a registration for this key and resource already exists") from exc

    @guarded
    def update_registration(self, registration: Registration) -> None:
        identity = ("tenant", "key_id", "resource_crn", "created_at", "created_by")
        cur = self._exec(
            "UPDATE registrations SET "
            + ", ".join(f"{c} = :{c}" for c in _REGISTRATION_COLUMNS if c not in identity)
            + " WHERE tenant = :tenant AND key_id = :key_id AND resource_crn = :resource_crn",
            _registration_params(registration),
        )
        if cur.rowcount == 0:
            raise NotFound("registration not found", reason=Reason.REGISTRATION_NOT_FOUND)

    @guarded
    def delete_registration(self, tenant: str, key_id: str, resource_crn: str) -> bool:
        cur = self._exec(
            "DELETE FROM registrations WHERE tenant = :tenant AND key_id = :key_id AND resource_crn = :crn",
            {"tenant": tenant, "key_id": key_id, "crn": resource_crn},
        )
        return bool(cur.rowcount > 0)


#: What `purge_key` deletes before the key row itself, children first.
_KEY_CHILD_TABLES = ("key_aliases", "key_policies", "registrations", "external_keys", "key_versions")


# --- the store --------------------------------------------------------------------------------


class SqlStore(PushStoreReads):
    """`Store` over one engine: transactions, and the reads outside them (one snapshot each)."""

    _transaction_type: ClassVar[type[SqlTransaction]]

    def __init__(self) -> None:
        #: the transaction this thread has open, if any: its reads see its own writes
        self._local = threading.local()

    # engine hooks ----------------------------------------------------------------------------

    @staticmethod
    def _map_error(exc: Exception, what: str) -> Exception | None:
        """As `SqlReader._map_error` (the engine sets both to its one mapping)."""
        raise NotImplementedError

    def _connection(self) -> AbstractContextManager[Any]:
        """A connection for one read or one transaction."""
        raise NotImplementedError

    def _snapshot(self) -> AbstractContextManager[SqlReader]:
        """A reader for one read outside a transaction, all of whose queries see one snapshot."""
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        raise NotImplementedError

    def _commit(self, conn: Any) -> None:
        raise NotImplementedError

    def _rollback_quietly(self, conn: Any) -> None:
        raise NotImplementedError

    def _apply_migrations(self, conn: Any) -> None:
        """migrate.py's function for this engine (each takes its own lock; see there)."""
        raise NotImplementedError

    def _read_schema_version(self, conn: Any) -> int:
        raise NotImplementedError

    def _close(self) -> None:
        """Close every connection this store opened."""
        raise NotImplementedError

    # lifecycle -------------------------------------------------------------------------------

    @guarded
    def migrate(self) -> None:
        """Apply pending schema migrations (idempotent)."""
        with self._connection() as conn:
            self._apply_migrations(conn)

    @guarded
    def schema_version(self) -> int:
        with self._connection() as conn:
            return self._read_schema_version(conn)

    def close(self) -> None:
        """Close every connection; later calls raise `InternalError`. Safe to call twice."""
        try:
            self._close()
        except Exception as exc:
            mapped = self._map_error(exc, "error while closing the store")
            if mapped is None:
                raise
            raise mapped from exc

    @guarded
    def ping(self) -> None:
        with self._connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def transaction(self) -> AbstractContextManager[SqlTransaction]:
        """One write transaction; any exception rolls back and propagates unchanged."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[SqlTransaction]:
        if getattr(self._local, "tx", None) is not None:
            raise InternalError("nested store transactions are not supported")
        with self._connection() as conn:
            try:
                self._begin(conn)
            except Exception as exc:
                self._rollback_quietly(conn)
                mapped = self._map_error(exc, "starting a write transaction")
                if mapped is None:
                    raise
                raise mapped from exc
            tx = self._transaction_type(conn)
            self._local.tx = tx
            try:
                yield tx
            except BaseException:
                tx._finish()
                self._local.tx = None
                self._rollback_quietly(conn)
                raise
            tx._finish()
            self._local.tx = None
            try:
                self._commit(conn)
            except Exception as exc:
                self._rollback_quietly(conn)
                mapped = self._map_error(exc, "commit")
                if mapped is None:
                    raise
                raise mapped from exc

    def _reading(self) -> AbstractContextManager[SqlReader]:
        """This thread's open transaction if there is one (it sees its own writes), else one snapshot."""
        tx: SqlTransaction | None = getattr(self._local, "tx", None)
        return self._snapshot() if tx is None else nullcontext(tx)

    # reads -----------------------------------------------------------------------------------

    @guarded
    def get_key(self, tenant: str, key_id: str) -> Key | None:
        with self._reading() as r:
            return r.get_key(tenant, key_id)

    @guarded
    def get_key_by_alias(self, tenant: str, alias: str) -> Key | None:
        with self._reading() as r:
            return r.get_key_by_alias(tenant, alias)

    @guarded
    def list_keys(self, tenant: str, query: KeyQuery) -> list[Key]:
        with self._reading() as r:
            return r.list_keys(tenant, query)

    @guarded
    def count_keys(self, tenant: str, query: KeyQuery) -> int:
        with self._reading() as r:
            return r.count_keys(tenant, query)

    @guarded
    def get_version(self, tenant: str, version_id: str) -> KeyVersion | None:
        with self._reading() as r:
            return r.get_version(tenant, version_id)

    @guarded
    def list_versions(self, tenant: str, key_id: str) -> list[KeyVersion]:
        with self._reading() as r:
            return r.list_versions(tenant, key_id)

    @guarded
    def list_versions_not_under_kek(
        self, kek_label: str, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[KeyVersion]:
        with self._reading() as r:
            return r.list_versions_not_under_kek(kek_label, after=after, limit=limit)

    @guarded
    def count_versions_by_kek(self) -> dict[str, int]:
        with self._reading() as r:
            return r.count_versions_by_kek()

    @guarded
    def list_rotation_candidates(
        self, rotated_before: datetime, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[tuple[str, str]]:
        with self._reading() as r:
            return r.list_rotation_candidates(rotated_before, after=after, limit=limit)

    @guarded
    def get_import_token(self, tenant: str) -> ImportToken | None:
        with self._reading() as r:
            return r.get_import_token(tenant)

    @guarded
    def list_import_tokens_expired_before(self, when: datetime) -> list[ImportToken]:
        with self._reading() as r:
            return r.list_import_tokens_expired_before(when)

    @guarded
    def list_key_rings(self, tenant: str) -> list[KeyRing]:
        with self._reading() as r:
            return r.list_key_rings(tenant)

    @guarded
    def get_instance_policies(self, tenant: str) -> list[InstancePolicy]:
        with self._reading() as r:
            return r.get_instance_policies(tenant)

    @guarded
    def get_key_policy_records(self, tenant: str, key_id: str) -> list[KeyPolicyRecord]:
        with self._reading() as r:
            return r.get_key_policy_records(tenant, key_id)

    @guarded
    def get_registration(self, tenant: str, key_id: str, resource_crn: str) -> Registration | None:
        with self._reading() as r:
            return r.get_registration(tenant, key_id, resource_crn)

    @guarded
    def list_registrations(self, tenant: str, query: RegistrationQuery) -> list[Registration]:
        with self._reading() as r:
            return r.list_registrations(tenant, query)
