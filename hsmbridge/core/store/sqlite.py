"""The SQLite store: a single file in WAL mode, safe to call from the daemon's worker threads.

Thread-safety, and why it differs between a file and ``":memory:"``:

* **File-backed: one connection per thread** (`threading.local`). WAL lets a reader on its own
  connection proceed while another thread holds the write lock, so GETs and readiness probes never
  queue behind a rotation, and no Python lock is held while SQLite waits. Writers serialise on
  SQLite's own lock: every write transaction starts with ``BEGIN IMMEDIATE`` (taking the lock up
  front, waiting up to `BUSY_TIMEOUT_S`) because a deferred transaction that later upgrades to
  write fails with SQLITE_BUSY at once, with no busy-wait, half-way through the caller's work.
* **":memory:": one connection behind an `RLock`**. A plain in-memory database is private to the
  connection that opened it, and a shared-cache URI uses table locks that fail with SQLITE_LOCKED
  immediately instead of honouring busy_timeout, so per-thread connections would see spurious
  errors. Serialising through one connection is correct and plenty for tests and throwaway
  instances. The lock is re-entrant so a thread inside `transaction()` can still call the store's
  own read methods (they then see its uncommitted writes, exactly as in file mode).

Reads outside a transaction run inside a short deferred ``BEGIN``…``COMMIT`` so a key and its
aliases come from one snapshot. Every `sqlite3.Error` becomes a domain error here; the constraint
violations the services care about are diagnosed with a follow-up query rather than by parsing
SQLite's message text, so the logic carries over to other backends.
"""

# ruff: noqa: S608 -- every SQL text here is assembled from this module's constants and
# placeholders; values are always bound parameters, never interpolated.

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from hsmbridge.core.model import (
    DEFAULT_KEY_RING,
    ImportToken,
    Key,
    KeyVersion,
    WrappedKey,
)
from hsmbridge.core.store import migrate as _migrate
from hsmbridge.core.store._rows import (
    _IMPORT_COLUMNS,
    _KEY_COLUMNS,
    _KEY_POLICY_COLUMNS,
    _KEY_UPDATABLE,
    _REGISTRATION_COLUMNS,
    _REGISTRATION_SELECT,
    _VERSION_COLUMNS,
    ROTATION_CANDIDATES_SQL,
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
    rotation_candidates_params,
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
from hsmbridge.core.store.migrate import Dialect
from hsmbridge.core.store.push_records import PushRecordReads, PushRecordWrites, PushStoreReads
from hsmbridge.errors import (
    AlreadyExists,
    Conflict,
    HsmBridgeError,
    InternalError,
    InvalidInput,
    NotFound,
    Reason,
    StoreUnavailable,
)

__all__ = ["BUSY_TIMEOUT_S", "SqliteStore"]

#: How long a writer waits for another writer's transaction before giving up.
BUSY_TIMEOUT_S = 5.0

MEMORY = ":memory:"

#: Older SQLite builds cap bound parameters at 999; stay well below when expanding IN (...).
_MAX_IN_PARAMS = 500

_P = ParamSpec("_P")
_R = TypeVar("_R")


#: Primary result codes that describe the store's condition, not the request or a bug: the disk
#: is full, the file system read-only, an I/O error, the file cannot be opened, another writer held
#: the lock past the busy timeout, memory ran out. Retrying after the condition clears works.
_UNAVAILABLE_CODES = frozenset(
    {
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def _unavailable(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _UNAVAILABLE_CODES


def _domain_error(exc: sqlite3.Error, what: str) -> HsmBridgeError:
    """The one mapping of a driver error: `StoreUnavailable` (503/UNAVAILABLE, retried by clients)
    for the store's own conditions, `InternalError` for everything else (a bug)."""
    if _unavailable(exc):
        return StoreUnavailable(
            f"the store is unavailable ({getattr(exc, 'sqlite_errorname', 'error')} in {what})",
            metadata={"retry_after": "1"},
        )
    return InternalError(f"database error in {what}: {exc}")


def _guarded(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn any driver error into a domain error so no sqlite3 type ever reaches a caller.

    SQLite's messages name tables and columns, never bound values, so they are safe to keep for
    the operator.
    """

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise _domain_error(exc, fn.__name__) from exc

    return wrapper


# --- SQL text (value conversions and row mapping live in _rows, shared with PostgreSQL) --------

_KEY_SELECT = "SELECT " + ", ".join(_KEY_COLUMNS) + " FROM keys"
_KEY_INSERT = (
    "INSERT INTO keys ("
    + ", ".join(_KEY_COLUMNS)
    + ") VALUES ("
    + ", ".join(f":{c}" for c in _KEY_COLUMNS)
    + ")"
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

_IMPORT_PLACEHOLDERS = (
    ":tenant, :id, :created_at, :created_by, :expires_at, :max_retrievals, :remaining_retrievals, "
    ":nonce, :key_bits, :public_key_der, :hsm_object_id"
)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _key_filter(tenant: str, query: KeyQuery) -> tuple[str, list[Any]] | None:
    """WHERE clause and parameters for `query`; None when it can match nothing (``states=[]``)."""
    clauses = ["tenant = ?"]
    params: list[Any] = [tenant]
    if query.states is not None:
        states = sorted({int(s) for s in query.states})
        if not states:
            return None
        clauses.append("state IN (" + ", ".join("?" for _ in states) + ")")
        params.extend(states)
    if query.extractable is not None:
        clauses.append("extractable = ?")
        params.append(bool(query.extractable))
    if query.key_ring is not None:
        clauses.append("key_ring = ?")
        params.append(query.key_ring)
    return " AND ".join(clauses), params


# --- reads and writes on one connection --------------------------------------------------------


class _SqliteReader(PushRecordReads):
    """Every read, bound to one connection: used by transactions and by the store's own reads."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        return self._conn

    def _one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self._db().execute(sql, params).fetchone()
        return row

    def _all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        return list(self._db().execute(sql, params).fetchall())

    # push records (migration 004): the SQL lives in core/store/push_records.py
    _push_dialect = Dialect.SQLITE
    _push_guard = staticmethod(_guarded)

    def _aliases(self, tenant: str, key_ids: Sequence[str]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {k: [] for k in key_ids}
        for chunk in _chunks(list(dict.fromkeys(key_ids)), _MAX_IN_PARAMS):
            marks = ", ".join("?" for _ in chunk)
            rows = self._all(
                "SELECT key_id, alias FROM key_aliases "
                f"WHERE tenant = ? AND key_id IN ({marks}) ORDER BY key_id, seq",
                [tenant, *chunk],
            )
            for row in rows:
                found[row["key_id"]].append(row["alias"])
        return found

    def _keys_from_rows(self, tenant: str, rows: list[sqlite3.Row]) -> list[Key]:
        aliases = self._aliases(tenant, [row["id"] for row in rows])
        return [_row_to_key(row, aliases[row["id"]]) for row in rows]

    def _key_exists(self, tenant: str, key_id: str) -> bool:
        return self._one("SELECT 1 FROM keys WHERE tenant = ? AND id = ?", (tenant, key_id)) is not None

    def _ring_exists(self, tenant: str, ring_id: str) -> bool:
        row = self._one("SELECT 1 FROM key_rings WHERE tenant = ? AND id = ?", (tenant, ring_id))
        return row is not None

    def _tenant_exists(self, tenant: str) -> bool:
        return self._one("SELECT 1 FROM tenants WHERE id = ?", (tenant,)) is not None

    @_guarded
    def get_key(self, tenant: str, key_id: str) -> Key | None:
        row = self._one(_KEY_SELECT + " WHERE tenant = ? AND id = ?", (tenant, key_id))
        return None if row is None else self._keys_from_rows(tenant, [row])[0]

    @_guarded
    def get_key_by_alias(self, tenant: str, alias: str) -> Key | None:
        row = self._one(
            _KEY_SELECT + " WHERE tenant = ? AND id = "
            "(SELECT key_id FROM key_aliases WHERE tenant = ? AND alias = ?)",
            (tenant, tenant, alias),
        )
        return None if row is None else self._keys_from_rows(tenant, [row])[0]

    @_guarded
    def list_keys(self, tenant: str, query: KeyQuery) -> list[Key]:
        if query.limit < 0 or query.offset < 0:
            # SQLite reads LIMIT -1 as "no limit"; refuse rather than return everything.
            raise InvalidInput("limit and offset must not be negative", reason=Reason.INVALID_FIELD)
        where = _key_filter(tenant, query)
        if where is None or query.limit == 0:
            return []
        clause, params = where
        rows = self._all(
            f"{_KEY_SELECT} WHERE {clause} ORDER BY id LIMIT ? OFFSET ?",
            [*params, query.limit, query.offset],
        )
        return self._keys_from_rows(tenant, rows)

    @_guarded
    def count_keys(self, tenant: str, query: KeyQuery) -> int:
        where = _key_filter(tenant, query)
        if where is None:
            return 0
        clause, params = where
        row = self._one(f"SELECT COUNT(*) FROM keys WHERE {clause}", params)
        return 0 if row is None else int(row[0])

    @_guarded
    def get_version(self, tenant: str, version_id: str) -> KeyVersion | None:
        row = self._one(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions WHERE tenant = ? AND id = ?",
            (tenant, version_id),
        )
        return None if row is None else _row_to_version(row)

    @_guarded
    def list_versions(self, tenant: str, key_id: str) -> list[KeyVersion]:
        rows = self._all(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions "
            "WHERE tenant = ? AND key_id = ? ORDER BY number DESC",
            (tenant, key_id),
        )
        return [_row_to_version(row) for row in rows]

    @_guarded
    def list_versions_not_under_kek(
        self, kek_label: str, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[KeyVersion]:
        tenant, version_id = after or ("", "")
        rows = self._all(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions "
            "WHERE kek_label <> ? AND (tenant, id) > (?, ?) ORDER BY tenant, id LIMIT ?",
            (kek_label, tenant, version_id, limit),
        )
        return [_row_to_version(row) for row in rows]

    @_guarded
    def count_versions_by_kek(self) -> dict[str, int]:
        rows = self._all("SELECT kek_label, COUNT(*) AS n FROM key_versions GROUP BY kek_label")
        return {row["kek_label"]: int(row["n"]) for row in rows}

    @_guarded
    def list_rotation_candidates(
        self, rotated_before: datetime, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[tuple[str, str]]:
        rows = self._all(
            ROTATION_CANDIDATES_SQL.format(p="?"),
            rotation_candidates_params(rotated_before, after, limit),
        )
        return [(row["tenant"], row["id"]) for row in rows]

    @_guarded
    def get_import_token(self, tenant: str) -> ImportToken | None:
        row = self._one(f"SELECT {_IMPORT_COLUMNS} FROM import_tokens WHERE tenant = ?", (tenant,))
        return None if row is None else _row_to_token(row)

    @_guarded
    def list_import_tokens_expired_before(self, when: datetime) -> list[ImportToken]:
        rows = self._all(
            f"SELECT {_IMPORT_COLUMNS} FROM import_tokens WHERE expires_at < ? ORDER BY expires_at, tenant",
            (_ts(when),),
        )
        return [_row_to_token(row) for row in rows]

    @_guarded
    def list_key_rings(self, tenant: str) -> list[KeyRing]:
        rows = self._all(
            "SELECT tenant, id, created_at, created_by FROM key_rings WHERE tenant = ? ORDER BY id",
            (tenant,),
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

    @_guarded
    def get_instance_policies(self, tenant: str) -> list[InstancePolicy]:
        rows = self._all(
            "SELECT policy_type, data, created_at, created_by, updated_at, updated_by "
            "FROM instance_policies WHERE tenant = ? ORDER BY policy_type",
            (tenant,),
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

    @_guarded
    def get_key_policy_records(self, tenant: str, key_id: str) -> list[KeyPolicyRecord]:
        rows = self._all(
            f"SELECT {_KEY_POLICY_COLUMNS} FROM key_policies "
            "WHERE tenant = ? AND key_id = ? ORDER BY policy_type",
            (tenant, key_id),
        )
        return [_row_to_key_policy(row) for row in rows]

    @_guarded
    def get_registration(self, tenant: str, key_id: str, resource_crn: str) -> Registration | None:
        row = self._one(
            _REGISTRATION_SELECT + " WHERE r.tenant = ? AND r.key_id = ? AND r.resource_crn = ?",
            (tenant, key_id, resource_crn),
        )
        return None if row is None else _row_to_registration(row)

    @_guarded
    def list_registrations(self, tenant: str, query: RegistrationQuery) -> list[Registration]:
        clauses = ["r.tenant = ?"]
        params: list[Any] = [tenant]
        join = ""
        if query.states is not None:
            states = sorted({int(s) for s in query.states})
            if not states:
                return []
            clauses.append("r.state IN (" + ", ".join("?" for _ in states) + ")")
            params.extend(states)
        if query.key_id is not None:
            clauses.append("r.key_id = ?")
            params.append(query.key_id)
        if query.key_ring is not None:
            join = " JOIN keys k ON k.tenant = r.tenant AND k.id = r.key_id"
            clauses.append("k.key_ring = ?")
            params.append(query.key_ring)
        if query.crn_prefix:
            # substr, not LIKE: SQLite's LIKE folds ASCII case, and CRNs are case-sensitive.
            clauses.append("substr(r.resource_crn, 1, length(?)) = ?")
            params.extend([query.crn_prefix, query.crn_prefix])
        if query.prevent_key_deletion is not None:
            clauses.append("r.prevent_key_deletion = ?")
            params.append(bool(query.prevent_key_deletion))
        rows = self._all(
            f"{_REGISTRATION_SELECT}{join} WHERE {' AND '.join(clauses)} "
            "ORDER BY r.created_at, r.key_id, r.resource_crn",
            params,
        )
        return [_row_to_registration(row) for row in rows]


class _SqliteTransaction(_SqliteReader, PushRecordWrites):
    """The writer handed out by `SqliteStore.transaction()`; dead once the `with` block ends.

    Why multi-statement writes (`insert_key`, `purge_key`) use a SAVEPOINT: a caller may catch
    `AlreadyExists` from a taken alias and carry on; without the savepoint the key and its version
    would already be written and get committed without the alias.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        self._open = True

    def _db(self) -> sqlite3.Connection:
        if not self._open:
            raise InternalError("store transaction used after its `with` block ended")
        return self._conn

    def _finish(self) -> None:
        self._open = False

    @contextmanager
    def _atomic(self, name: str) -> Iterator[None]:
        db = self._db()
        db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            if db.in_transaction:
                db.execute(f"ROLLBACK TO SAVEPOINT {name}")
                db.execute(f"RELEASE SAVEPOINT {name}")
            raise
        db.execute(f"RELEASE SAVEPOINT {name}")

    def _require_tenant(self, tenant: str) -> None:
        if not self._tenant_exists(tenant):
            raise InternalError(f"tenant {tenant!r} is not registered; call ensure_tenant() first")

    @_guarded
    def ensure_tenant(self, tenant: str, now: datetime) -> None:
        cur = self._db().execute(
            "INSERT INTO tenants (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING",
            (tenant, _ts(now)),
        )
        if cur.rowcount == 1:
            # Only for a brand-new tenant: if the default ring were re-created on every call, a
            # ring the service had deleted on purpose would come back.
            # Nobody created it, hence no created_by; it came into being with the tenant.
            self._db().execute(
                "INSERT INTO key_rings (tenant, id, created_at, created_by) VALUES (?, ?, ?, NULL)",
                (tenant, DEFAULT_KEY_RING, _ts(now)),
            )

    @_guarded
    def insert_key(self, key: Key, first_version: KeyVersion | None) -> None:
        if first_version is not None:
            if (first_version.tenant, first_version.key_id) != (key.tenant, key.id):
                raise InternalError("first version belongs to another key")
            if key.current_version_id != first_version.id:
                raise InternalError("a new key's current version must be its first version")
        with self._atomic("insert_key"):
            try:
                self._db().execute(_KEY_INSERT, _key_params(key))
            except sqlite3.IntegrityError as exc:
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
        """External keys and bound import parameters (migration 003; SQL shared with the other engine)."""
        return ExternalRows(self._db().execute, pyformat=False)

    @_guarded
    def update_key(self, key: Key) -> None:
        try:
            cur = self._db().execute(_KEY_UPDATE, _key_params(key))
        except sqlite3.IntegrityError as exc:
            # The only foreign key an update can break: moving the key to a ring that does not exist.
            if not self._ring_exists(key.tenant, key.key_ring):
                raise NotFound("key ring not found", reason=Reason.KEY_RING_NOT_FOUND) from exc
            raise
        if cur.rowcount == 1:
            key.revision += 1
            return
        if not self._key_exists(key.tenant, key.id):
            raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND)
        raise Conflict(
            "the key was changed by another request; read it again and retry",
            reason=Reason.CONCURRENT_UPDATE,
        )

    @_guarded
    def add_version(self, version: KeyVersion) -> None:
        self._insert_version(version)

    @_guarded
    def replace_wrapped(self, tenant: str, version_id: str, expected: WrappedKey, new: WrappedKey) -> bool:
        _check_rewrap(expected, new)
        cur = self._db().execute(_REWRAP, _rewrap_params(tenant, version_id, expected, new))
        return cur.rowcount == 1

    def _insert_version(self, version: KeyVersion) -> None:
        try:
            self._db().execute(
                f"INSERT INTO key_versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    version.tenant,
                    version.id,
                    version.key_id,
                    version.number,
                    _ts(version.created_at),
                    bytes(version.wrapped.blob),
                    version.wrapped.length,
                    version.wrapped.kek_label,
                    version.wrapped.mechanism,
                    version.wrapped.kind,
                ),
            )
        except sqlite3.IntegrityError as exc:
            if not self._key_exists(version.tenant, version.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            if self._one(
                "SELECT 1 FROM key_versions WHERE tenant = ? AND id = ?", (version.tenant, version.id)
            ):
                raise AlreadyExists("a key version with this id already exists") from exc
            # The number is taken: another rotation got there first.
            raise Conflict(
                "another version with this number was stored concurrently",
                reason=Reason.CONCURRENT_UPDATE,
            ) from exc

    @_guarded
    def add_alias(self, tenant: str, key_id: str, alias: str) -> None:
        self._insert_alias(tenant, key_id, alias)

    def _insert_alias(self, tenant: str, key_id: str, alias: str) -> None:
        try:
            self._db().execute(
                "INSERT INTO key_aliases (tenant, alias, key_id, seq, created_at) "
                "SELECT ?, ?, ?, COALESCE(MAX(seq), 0) + 1, ? FROM key_aliases "
                "WHERE tenant = ? AND key_id = ?",
                (tenant, alias, key_id, _ts(datetime.now(UTC)), tenant, key_id),
            )
        except sqlite3.IntegrityError as exc:
            if not self._key_exists(tenant, key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            raise AlreadyExists(
                "the alias is already in use in this instance", reason=Reason.ALIAS_NOT_UNIQUE
            ) from exc

    @_guarded
    def remove_alias(self, tenant: str, key_id: str, alias: str) -> bool:
        cur = self._db().execute(
            "DELETE FROM key_aliases WHERE tenant = ? AND key_id = ? AND alias = ?",
            (tenant, key_id, alias),
        )
        return cur.rowcount > 0

    @_guarded
    def purge_key(self, tenant: str, key_id: str) -> None:
        # Explicit deletes rather than relying on ON DELETE CASCADE: correct even on a
        # connection where someone forgot PRAGMA foreign_keys.
        with self._atomic("purge_key"):
            db = self._db()
            db.execute("DELETE FROM key_aliases WHERE tenant = ? AND key_id = ?", (tenant, key_id))
            db.execute("DELETE FROM key_policies WHERE tenant = ? AND key_id = ?", (tenant, key_id))
            db.execute("DELETE FROM registrations WHERE tenant = ? AND key_id = ?", (tenant, key_id))
            db.execute("DELETE FROM external_keys WHERE tenant = ? AND key_id = ?", (tenant, key_id))
            db.execute("DELETE FROM key_versions WHERE tenant = ? AND key_id = ?", (tenant, key_id))
            cur = db.execute("DELETE FROM keys WHERE tenant = ? AND id = ?", (tenant, key_id))
            if cur.rowcount == 0:
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND)

    @_guarded
    def put_import_token(self, token: ImportToken) -> ImportToken | None:
        previous = self.get_import_token(token.tenant)
        params = _token_params(token)
        try:
            self._db().execute(
                f"INSERT INTO import_tokens ({_IMPORT_COLUMNS}) VALUES ({_IMPORT_PLACEHOLDERS}) "
                "ON CONFLICT (tenant) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in params if c != "tenant"),
                params,
            )
        except sqlite3.IntegrityError as exc:
            self._require_tenant(token.tenant)
            raise InternalError("could not store the import token") from exc
        return previous

    @_guarded
    def update_import_token(self, token: ImportToken) -> None:
        params = _token_params(token)
        cur = self._db().execute(
            "UPDATE import_tokens SET "
            + ", ".join(f"{c} = :{c}" for c in params if c not in ("tenant", "id"))
            + " WHERE tenant = :tenant AND id = :id",
            params,
        )
        if cur.rowcount == 0:
            raise NotFound("import token not found", reason=Reason.IMPORT_TOKEN_NOT_FOUND)

    @_guarded
    def delete_import_token(self, tenant: str, token_id: str) -> None:
        # Deliberately silent when absent: the expiry sweeper may race with a replacement, and
        # the replaced token's keypair is already the replacer's to destroy.
        self._db().execute("DELETE FROM import_tokens WHERE tenant = ? AND id = ?", (tenant, token_id))

    @_guarded
    def create_key_ring(self, ring: KeyRing) -> None:
        try:
            self._db().execute(
                "INSERT INTO key_rings (tenant, id, created_at, created_by) VALUES (?, ?, ?, ?)",
                (ring.tenant, ring.id, _ts_opt(ring.created_at), ring.created_by),
            )
        except sqlite3.IntegrityError as exc:
            self._require_tenant(ring.tenant)
            raise AlreadyExists("a key ring with this id already exists") from exc

    @_guarded
    def delete_key_ring(self, tenant: str, ring_id: str) -> None:
        try:
            cur = self._db().execute("DELETE FROM key_rings WHERE tenant = ? AND id = ?", (tenant, ring_id))
        except sqlite3.IntegrityError as exc:
            raise Conflict("the key ring still holds keys", reason=Reason.KEY_RING_NOT_EMPTY) from exc
        if cur.rowcount == 0:
            raise NotFound("key ring not found", reason=Reason.KEY_RING_NOT_FOUND)

    @_guarded
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
            self._db().execute(
                "INSERT INTO instance_policies "
                "(tenant, policy_type, data, created_at, created_by, updated_at, updated_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, policy_type) DO UPDATE SET "
                "data = excluded.data, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (
                    tenant,
                    policy.policy_type,
                    data,
                    _ts(policy.created_at),
                    policy.created_by,
                    _ts(policy.updated_at),
                    policy.updated_by,
                ),
            )
        except sqlite3.IntegrityError as exc:
            self._require_tenant(tenant)
            raise InternalError("could not store the instance policy") from exc

    @_guarded
    def put_key_policy_record(self, record: KeyPolicyRecord) -> None:
        """Upsert keeping `id`, `created_at`, `created_by` (see `put_instance_policy` for why)."""
        try:
            self._db().execute(
                f"INSERT INTO key_policies ({_KEY_POLICY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (tenant, key_id, policy_type) DO UPDATE SET "
                "updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                (
                    record.tenant,
                    record.key_id,
                    record.policy_type,
                    record.id,
                    _ts(record.created_at),
                    record.created_by,
                    _ts(record.updated_at),
                    record.updated_by,
                ),
            )
        except sqlite3.IntegrityError as exc:
            if not self._key_exists(record.tenant, record.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            raise InternalError("could not store the key policy") from exc

    @_guarded
    def insert_registration(self, registration: Registration) -> None:
        params = _registration_params(registration)
        try:
            self._db().execute(
                "INSERT INTO registrations ("
                + ", ".join(_REGISTRATION_COLUMNS)
                + ") VALUES ("
                + ", ".join(f":{c}" for c in _REGISTRATION_COLUMNS)
                + ")",
                params,
            )
        except sqlite3.IntegrityError as exc:
            if not self._key_exists(registration.tenant, registration.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            raise AlreadyExists("a registration for this key and resource already exists") from exc

    @_guarded
    def update_registration(self, registration: Registration) -> None:
        identity = ("tenant", "key_id", "resource_crn", "created_at", "created_by")
        cur = self._db().execute(
            "UPDATE registrations SET "
            + ", ".join(f"{c} = :{c}" for c in _REGISTRATION_COLUMNS if c not in identity)
            + " WHERE tenant = :tenant AND key_id = :key_id AND resource_crn = :resource_crn",
            _registration_params(registration),
        )
        if cur.rowcount == 0:
            raise NotFound("registration not found", reason=Reason.REGISTRATION_NOT_FOUND)

    @_guarded
    def delete_registration(self, tenant: str, key_id: str, resource_crn: str) -> bool:
        cur = self._db().execute(
            "DELETE FROM registrations WHERE tenant = ? AND key_id = ? AND resource_crn = ?",
            (tenant, key_id, resource_crn),
        )
        return cur.rowcount > 0


# --- connection management ---------------------------------------------------------------------


def _open(target: str) -> sqlite3.Connection:
    # isolation_level=None: this module issues BEGIN/COMMIT itself; the sqlite3 module's implicit
    # transactions would otherwise open deferred transactions behind our back.
    conn = sqlite3.connect(
        target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=False
    )
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


class _ConnectionHolder:
    """Weak-referenceable box (sqlite3.Connection is not) so a thread's exit closes its connection."""

    __slots__ = ("__weakref__", "conn", "depth")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        #: nested `acquire`s in progress on this thread (a read inside a transaction)
        self.depth = 0


class _PerThreadConnections:
    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._finalizers: list[weakref.finalize[Any, Any]] = []
        self._closed = False

    @contextmanager
    def acquire(self) -> Iterator[sqlite3.Connection]:
        if self._closed:
            raise InternalError("the store is closed")
        holder: _ConnectionHolder | None = getattr(self._local, "holder", None)
        if holder is None:
            try:
                holder = _ConnectionHolder(_open(self._path))
            except sqlite3.Error as exc:
                raise _domain_error(exc, "opening the SQLite store") from exc
            finalizer = weakref.finalize(holder, holder.conn.close)
            with self._lock:
                self._finalizers = [f for f in self._finalizers if f.alive]
                self._finalizers.append(finalizer)
            self._local.holder = holder
        holder.depth += 1
        try:
            yield holder.conn
        except BaseException as exc:
            # A connection that met a full disk, a read-only or failing file system may keep
            # stale state (a half-open transaction whose ROLLBACK failed too, a WAL index it can
            # no longer map): the outermost user drops it, and the thread's next call opens a
            # fresh one, so service resumes as soon as the file system does instead of failing
            # on this thread for good.
            cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
            if holder.depth == 1 and (_unavailable(cause or exc) or holder.conn.in_transaction):
                self._discard(holder)
            raise
        finally:
            holder.depth -= 1

    def _discard(self, holder: _ConnectionHolder) -> None:
        if getattr(self._local, "holder", None) is holder:
            self._local.holder = None
        with contextlib.suppress(sqlite3.Error):
            holder.conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            finalizers, self._finalizers = self._finalizers, []
        for finalizer in finalizers:
            finalizer()


class _SharedConnection:
    def __init__(self) -> None:
        self._conn = _open(MEMORY)
        self._lock = threading.RLock()
        self._closed = False

    @contextmanager
    def acquire(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._closed:
                raise InternalError("the store is closed")
            yield self._conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()


# --- the store ---------------------------------------------------------------------------------


class SqliteStore(PushStoreReads):
    """`Store` on SQLite. Call `migrate()` once at start-up before anything else."""

    def __init__(self, path: str | Path) -> None:
        self._memory = isinstance(path, str) and path == MEMORY
        self._conns: _PerThreadConnections | _SharedConnection
        try:
            if self._memory:
                self._conns = _SharedConnection()
            else:
                self._conns = _PerThreadConnections(str(path))
            with self._conns.acquire() as conn:
                # WAL is a property of the database file, so setting it once here is enough; doing
                # it per connection would make every new thread briefly contend for the write lock.
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.Error as exc:
            raise _domain_error(exc, "opening the SQLite store") from exc
        if not self._memory and str(mode).lower() != "wal":
            raise InternalError(f"SQLite refused WAL mode (got {mode!r}); the store needs it")

    # lifecycle ---------------------------------------------------------------------------------

    @_guarded
    def migrate(self) -> None:
        with self._conns.acquire() as conn:
            _migrate.migrate(conn)

    @_guarded
    def schema_version(self) -> int:
        with self._conns.acquire() as conn:
            return _migrate.schema_version(conn)

    @_guarded
    def ping(self) -> None:
        with self._conns.acquire() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close every connection; later calls raise `InternalError`. Safe to call twice."""
        try:
            self._conns.close()
        except sqlite3.Error as exc:
            raise InternalError(f"error while closing the SQLite store: {exc}") from exc

    def transaction(self) -> AbstractContextManager[_SqliteTransaction]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; any exception rolls back and propagates unchanged."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[_SqliteTransaction]:
        with self._conns.acquire() as conn:
            if conn.in_transaction:
                raise InternalError("nested store transactions are not supported")
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _domain_error(exc, "starting a write transaction") from exc
            tx = _SqliteTransaction(conn)
            try:
                yield tx
            except BaseException:
                tx._finish()
                _rollback_quietly(conn)
                raise
            tx._finish()
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback_quietly(conn)
                raise _domain_error(exc, "commit") from exc

    @contextmanager
    def _reading(self) -> Iterator[_SqliteReader]:
        """One snapshot for a multi-query read; inside this thread's transaction, that transaction."""
        with self._conns.acquire() as conn:
            if conn.in_transaction:
                yield _SqliteReader(conn)
                return
            conn.execute("BEGIN")
            try:
                yield _SqliteReader(conn)
            except BaseException:
                _rollback_quietly(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                # Never leave this thread's connection inside a transaction.
                _rollback_quietly(conn)
                raise

    # reads -------------------------------------------------------------------------------------

    @_guarded
    def get_key(self, tenant: str, key_id: str) -> Key | None:
        with self._reading() as r:
            return r.get_key(tenant, key_id)

    @_guarded
    def get_key_by_alias(self, tenant: str, alias: str) -> Key | None:
        with self._reading() as r:
            return r.get_key_by_alias(tenant, alias)

    @_guarded
    def list_keys(self, tenant: str, query: KeyQuery) -> list[Key]:
        with self._reading() as r:
            return r.list_keys(tenant, query)

    @_guarded
    def count_keys(self, tenant: str, query: KeyQuery) -> int:
        with self._reading() as r:
            return r.count_keys(tenant, query)

    @_guarded
    def get_version(self, tenant: str, version_id: str) -> KeyVersion | None:
        with self._reading() as r:
            return r.get_version(tenant, version_id)

    @_guarded
    def list_versions(self, tenant: str, key_id: str) -> list[KeyVersion]:
        with self._reading() as r:
            return r.list_versions(tenant, key_id)

    @_guarded
    def list_versions_not_under_kek(
        self, kek_label: str, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[KeyVersion]:
        with self._reading() as r:
            return r.list_versions_not_under_kek(kek_label, after=after, limit=limit)

    @_guarded
    def count_versions_by_kek(self) -> dict[str, int]:
        with self._reading() as r:
            return r.count_versions_by_kek()

    @_guarded
    def list_rotation_candidates(
        self, rotated_before: datetime, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[tuple[str, str]]:
        with self._reading() as r:
            return r.list_rotation_candidates(rotated_before, after=after, limit=limit)

    @_guarded
    def get_import_token(self, tenant: str) -> ImportToken | None:
        with self._reading() as r:
            return r.get_import_token(tenant)

    @_guarded
    def list_import_tokens_expired_before(self, when: datetime) -> list[ImportToken]:
        with self._reading() as r:
            return r.list_import_tokens_expired_before(when)

    @_guarded
    def list_key_rings(self, tenant: str) -> list[KeyRing]:
        with self._reading() as r:
            return r.list_key_rings(tenant)

    @_guarded
    def get_instance_policies(self, tenant: str) -> list[InstancePolicy]:
        with self._reading() as r:
            return r.get_instance_policies(tenant)

    @_guarded
    def get_key_policy_records(self, tenant: str, key_id: str) -> list[KeyPolicyRecord]:
        with self._reading() as r:
            return r.get_key_policy_records(tenant, key_id)

    @_guarded
    def get_registration(self, tenant: str, key_id: str, resource_crn: str) -> Registration | None:
        with self._reading() as r:
            return r.get_registration(tenant, key_id, resource_crn)

    @_guarded
    def list_registrations(self, tenant: str, query: RegistrationQuery) -> list[Registration]:
        with self._reading() as r:
            return r.list_registrations(tenant, query)


def _rollback_quietly(conn: sqlite3.Connection) -> None:
    """Roll back without masking the exception that got us here.

    SQLite may already have rolled back by itself (e.g. after SQLITE_FULL), hence the check, and
    a failing ROLLBACK must not replace the caller's original exception.
    """
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass
