"""The PostgreSQL store: the `Store` contract on psycopg 3 with a connection pool, for replicas.

Behaviour mirrors `SqliteStore` exactly (same schema from the same migration files, same domain
errors, same test suite); what differs is how each guarantee is obtained, because several daemons
may now write one database at the same time.

Connections. A `psycopg_pool.ConnectionPool` of autocommit connections; this module issues
``BEGIN``/``COMMIT`` itself. A thread inside `transaction()` keeps its connection until the block
ends, and the store's own read methods called from that thread use it too (they then see its
uncommitted writes, as in SQLite). Everything else borrows a connection per call, so the store is
thread-safe without any Python lock, and `max_size` bounds the connections per daemon.

Reads outside a transaction are each a single statement (a key and its aliases come back in one
query, aliases as an ``ARRAY(...)`` subquery), so every read sees one snapshot without a
transaction around it: one round trip per read.

Isolation: write transactions run at READ COMMITTED, with explicit locks where a transaction reads
before it writes. Why not REPEATABLE READ (or SERIALIZABLE):

* The two guarantees rotations and deletions depend on already hold at READ COMMITTED under real
  concurrency. ``UPDATE keys … WHERE revision = n`` waits for a concurrent writer's row lock and
  then re-checks the condition against the newly committed row, so of two updates from the same
  revision exactly one matches (the loser gets 0 rows → `Conflict(CONCURRENT_UPDATE)`). The
  unique (tenant, key_id, number) index makes a second insert of the same version number wait
  for the first transaction and then fail → `Conflict(CONCURRENT_UPDATE)`. No lost version, no
  duplicate latest version.
* At REPEATABLE READ the same races surface as serialization failures that abort the whole
  transaction instead, and the follow-up queries that diagnose a constraint violation (does the
  key exist? is it the version id or the number?) would read the transaction's old snapshot and
  misreport a row committed meanwhile. SERIALIZABLE adds false-positive aborts on top.
* What READ COMMITTED alone does not give is SQLite's other property: ``BEGIN IMMEDIATE``
  serialises whole write transactions, and services rely on it for read-check-write sequences
  (spend an import-token retrieval, count aliases or key rings against a quota, move a ring's
  keys, suspend a key's registrations). So inside a write transaction, **every read first takes a
  per-tenant transaction-scoped advisory lock** (`_TENANT_LOCK`), and reads of keys and import
  tokens also lock the rows they return (``FOR NO KEY UPDATE`` / ``FOR UPDATE``) so a concurrent
  blind writer cannot change them between the read and the write. Transactions that read before
  writing are therefore serialised per tenant, as in SQLite; blind writes (a rotation, a state
  change) are not, and rely on the optimistic revision and the unique indexes above.
* Writes that derive a value from other rows lock what they derive from: adding an alias locks
  the key row (its ``seq`` is MAX+1); replacing an import token takes the tenant lock (so the token
  it returns is really the one it replaced); purging locks the key row ``FOR UPDATE`` first, so a
  concurrent rotation or alias insert waits and then fails its foreign key check (`NotFound`)
  instead of leaving an orphan.

Lock waits are bounded by `LOCK_TIMEOUT_S` (SQLite's busy timeout), and a deadlock or
serialization failure, should one happen, is reported as `Conflict(CONCURRENT_UPDATE)`: a lost
race the caller retries from a fresh read.

Errors. As in SQLite, each write that can violate a constraint runs under its own SAVEPOINT, so
a caller may catch `AlreadyExists` and carry on, and so the diagnosis queries can run (PostgreSQL
aborts the whole transaction on an error otherwise). Every psycopg error becomes a domain error;
messages keep the SQLSTATE and PostgreSQL's primary message but never its DETAIL, which can quote
whole rows (wrapped key material, nonces). Connection URLs are never put in messages with their
password.
"""

# ruff: noqa: S608 -- every SQL text here is assembled from this module's constants and
# placeholders; values are always bound parameters, never interpolated.

from __future__ import annotations

import functools
import json
import re
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolClosed

from hsmbridge.core.model import DEFAULT_KEY_RING, ImportToken, Key, KeyVersion, WrappedKey
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
    InternalError,
    InvalidInput,
    NotFound,
    Reason,
    StoreUnavailable,
)

__all__ = ["LOCK_TIMEOUT_S", "POOL_TIMEOUT_S", "PostgresStore", "redact_url"]

#: How long a statement waits for another transaction's lock before giving up (SQLite's
#: busy timeout plays the same role there).
LOCK_TIMEOUT_S = 5.0
#: How long a caller waits for a free pooled connection (and the constructor for the first one).
POOL_TIMEOUT_S = 10.0

#: How long the pool retries one lost connection before it gives that attempt up. psycopg_pool
#: doubles the delay between attempts without a cap (default: for 5 minutes), so after a long
#: outage the next attempt could be a minute away though the database is back; giving up after a
#: few seconds lets the next request start a fresh attempt (1 s delay), so service resumes within
#: seconds of the database's return (measured 15 s before, after a one-minute outage).
RECONNECT_TIMEOUT_S = 5.0

#: First key of the per-tenant advisory lock (the second is a hash of the tenant): "hsmb".
_TENANT_LOCK = int.from_bytes(b"hsmb", "big")

_Conn = psycopg.Connection[DictRow]

_P = ParamSpec("_P")
_R = TypeVar("_R")


def redact_url(url: str) -> str:
    """`url` fit for a log line or an error message: every password replaced by ``***``.

    libpq takes a password in the URL's user info, as a ``password=`` query parameter, or in a
    ``key=value`` connection string; all three are covered.
    """
    if "://" not in url:
        return _CONNINFO_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "<unparseable PostgreSQL URL>"
    netloc = parts.netloc
    if has_password:
        userinfo, hosts = netloc.rsplit("@", 1)
        netloc = userinfo.split(":", 1)[0] + ":***@" + hosts
    query = _QUERY_PASSWORD.sub(r"\1***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")
_QUERY_PASSWORD = re.compile(r"((?:^|&)password=)[^&]*")


def _describe(exc: BaseException) -> str:
    """SQLSTATE and primary message only: PostgreSQL's DETAIL may quote row values."""
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return f"[{exc.sqlstate}] {exc.diag.message_primary}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _lost_race() -> Conflict:
    """A deadlock or serialization failure: another transaction won; the caller retries."""
    return Conflict(
        "the key was changed by another request; read it again and retry",
        reason=Reason.CONCURRENT_UPDATE,
    )


def _guarded(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn any driver error into a domain error so no psycopg type ever reaches a caller."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as exc:
            raise _lost_race() from exc
        except PoolClosed as exc:
            raise InternalError("the store is closed") from exc
        except psycopg.Error as exc:
            raise _domain_error(exc, f"database error in {fn.__name__}") from exc

    return wrapper


def _domain_error(exc: psycopg.Error, what: str) -> InternalError | StoreUnavailable:
    """The one mapping of a driver error: `StoreUnavailable` (503/UNAVAILABLE, retried by clients)
    for the database's own conditions, `InternalError` for everything else (a bug)."""
    if _unavailable(exc):
        return StoreUnavailable(
            f"the store is unavailable ({what}: {_describe(exc)})", metadata={"retry_after": "1"}
        )
    return InternalError(f"{what}: {_describe(exc)}")


#: SQLSTATE classes of the server's condition, not the request's: connection exception (08),
#: insufficient resources such as a full disk (53), operator intervention such as a shutdown (57),
#: system error (58); and a read-only transaction (25006: a replica, or default_transaction_read_only).
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
_READ_ONLY = "25006"


def _unavailable(exc: psycopg.Error) -> bool:
    """The database is down, unreachable, full or read-only: retrying later works. A dropped
    connection (no SQLSTATE, OperationalError) and a pool that cannot get one (PoolTimeout is an
    OperationalError) are this too; the pool replaces broken connections by itself."""
    state = exc.sqlstate or ""
    if state:
        return state.startswith(_UNAVAILABLE_CLASSES) or state == _READ_ONLY
    return isinstance(exc, psycopg.OperationalError)


def _tenant_lock_key(tenant: str) -> int:
    """A stable signed 32-bit hash: a collision only makes two tenants share a lock."""
    value = zlib.crc32(tenant.encode("utf-8"))
    return value - (1 << 32) if value >= 1 << 31 else value


# --- SQL text ----------------------------------------------------------------------------------

_KEY_COLS = ", ".join(f"k.{c}" for c in _KEY_COLUMNS)
_ALIASES = (
    "ARRAY(SELECT a.alias FROM key_aliases a WHERE a.tenant = k.tenant AND a.key_id = k.id "
    "ORDER BY a.seq) AS aliases"
)
#: A key with its aliases in one statement (one snapshot, one round trip).
_KEY_READ = f"SELECT {_KEY_COLS}, {_ALIASES} FROM keys k"
#: Keys only, for locking reads inside a transaction: aliases are read after the lock is held.
_KEY_LOCKED = f"SELECT {_KEY_COLS} FROM keys k"
_KEY_INSERT = (
    "INSERT INTO keys ("
    + ", ".join(_KEY_COLUMNS)
    + ") VALUES ("
    + ", ".join(f"%({c})s" for c in _KEY_COLUMNS)
    + ")"
)
_KEY_UPDATE = (
    "UPDATE keys SET "
    + ", ".join(f"{c} = %({c})s" for c in _KEY_UPDATABLE)
    + ", revision = revision + 1 WHERE tenant = %(tenant)s AND id = %(id)s AND revision = %(revision)s"
)
#: Master KEK rotation's compare-and-swap (see the SQLite store's twin).
_REWRAP = (
    "UPDATE key_versions SET wrapped_blob = %(blob)s, kek_label = %(kek_label)s, "
    "wrap_mechanism = %(mechanism)s WHERE tenant = %(tenant)s AND id = %(id)s "
    "AND kek_label = %(old_kek_label)s AND wrapped_blob = %(old_blob)s AND wrap_mechanism = %(old_mechanism)s"
)
_IMPORT_PLACEHOLDERS = ", ".join(f"%({c.strip()})s" for c in _IMPORT_COLUMNS.split(","))


def _key_filter(tenant: str, query: KeyQuery) -> tuple[str, list[Any]] | None:
    """WHERE clause and parameters for `query`; None when it can match nothing (``states=[]``)."""
    clauses = ["k.tenant = %s"]
    params: list[Any] = [tenant]
    if query.states is not None:
        states = sorted({int(s) for s in query.states})
        if not states:
            return None
        clauses.append("k.state = ANY(%s)")
        params.append(states)
    if query.extractable is not None:
        clauses.append("k.extractable = %s")
        params.append(bool(query.extractable))
    if query.key_ring is not None:
        clauses.append("k.key_ring = %s")
        params.append(query.key_ring)
    return " AND ".join(clauses), params


# --- reads and writes on one connection --------------------------------------------------------


class _PostgresReader(PushRecordReads):
    """Every read, bound to one connection.

    Outside a transaction (`locking` false) each method is one statement in autocommit. Inside a
    write transaction (`locking` true) reads first take the tenant lock and lock the key and
    token rows they return; see the module docstring for why.
    """

    def __init__(self, conn: _Conn, *, locking: bool = False) -> None:
        self._conn = conn
        self._locking = locking
        self._tenants_locked: set[str] = set()

    def _db(self) -> _Conn:
        return self._conn

    def _one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> DictRow | None:
        return self._db().execute(sql, params).fetchone()  # type: ignore[arg-type]

    def _all(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[DictRow]:
        return self._db().execute(sql, params).fetchall()  # type: ignore[arg-type]

    # push records (migration 004): the SQL lives in core/store/push_records.py
    _push_dialect = Dialect.POSTGRESQL
    _push_guard = staticmethod(_guarded)

    def _lock_tenant(self, tenant: str) -> None:
        """Serialise this transaction with every other one that reads this tenant's data."""
        if not self._locking or tenant in self._tenants_locked:
            return
        self._db().execute("SELECT pg_advisory_xact_lock(%s, %s)", (_TENANT_LOCK, _tenant_lock_key(tenant)))
        self._tenants_locked.add(tenant)

    def _keys(self, tenant: str, where: str, params: Sequence[Any], tail: str = "") -> list[Key]:
        if not self._locking:
            rows = self._all(f"{_KEY_READ} WHERE {where}{tail}", params)
            return [_row_to_key(row, list(row["aliases"])) for row in rows]
        self._lock_tenant(tenant)
        rows = self._all(f"{_KEY_LOCKED} WHERE {where}{tail} FOR NO KEY UPDATE OF k", params)
        if not rows:
            return []
        # A new statement, so a new snapshot: it sees every alias committed before our row locks
        # were granted (a subquery in the locking statement would use the older snapshot).
        found: dict[str, list[str]] = {row["id"]: [] for row in rows}
        for alias in self._all(
            "SELECT key_id, alias FROM key_aliases "
            "WHERE tenant = %s AND key_id = ANY(%s) ORDER BY key_id, seq",
            (tenant, list(found)),
        ):
            found[alias["key_id"]].append(alias["alias"])
        return [_row_to_key(row, found[row["id"]]) for row in rows]

    def _key_exists(self, tenant: str, key_id: str) -> bool:
        return self._one("SELECT 1 FROM keys WHERE tenant = %s AND id = %s", (tenant, key_id)) is not None

    def _ring_exists(self, tenant: str, ring_id: str) -> bool:
        row = self._one("SELECT 1 FROM key_rings WHERE tenant = %s AND id = %s", (tenant, ring_id))
        return row is not None

    def _tenant_exists(self, tenant: str) -> bool:
        return self._one("SELECT 1 FROM tenants WHERE id = %s", (tenant,)) is not None

    @_guarded
    def get_key(self, tenant: str, key_id: str) -> Key | None:
        keys = self._keys(tenant, "k.tenant = %s AND k.id = %s", (tenant, key_id))
        return keys[0] if keys else None

    @_guarded
    def get_key_by_alias(self, tenant: str, alias: str) -> Key | None:
        keys = self._keys(
            tenant,
            "k.tenant = %s AND k.id = (SELECT key_id FROM key_aliases WHERE tenant = %s AND alias = %s)",
            (tenant, tenant, alias),
        )
        return keys[0] if keys else None

    @_guarded
    def list_keys(self, tenant: str, query: KeyQuery) -> list[Key]:
        if query.limit < 0 or query.offset < 0:
            raise InvalidInput("limit and offset must not be negative", reason=Reason.INVALID_FIELD)
        where = _key_filter(tenant, query)
        if where is None or query.limit == 0:
            return []
        clause, params = where
        paging = " ORDER BY k.id LIMIT %s OFFSET %s"
        return self._keys(tenant, clause, [*params, query.limit, query.offset], paging)

    @_guarded
    def count_keys(self, tenant: str, query: KeyQuery) -> int:
        where = _key_filter(tenant, query)
        if where is None:
            return 0
        clause, params = where
        self._lock_tenant(tenant)
        row = self._one(f"SELECT COUNT(*) AS n FROM keys k WHERE {clause}", params)
        return 0 if row is None else int(row["n"])

    @_guarded
    def get_version(self, tenant: str, version_id: str) -> KeyVersion | None:
        self._lock_tenant(tenant)
        row = self._one(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions WHERE tenant = %s AND id = %s",
            (tenant, version_id),
        )
        return None if row is None else _row_to_version(row)

    @_guarded
    def list_versions(self, tenant: str, key_id: str) -> list[KeyVersion]:
        self._lock_tenant(tenant)
        rows = self._all(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions "
            "WHERE tenant = %s AND key_id = %s ORDER BY number DESC",
            (tenant, key_id),
        )
        return [_row_to_version(row) for row in rows]

    @_guarded
    def list_versions_not_under_kek(
        self, kek_label: str, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[KeyVersion]:
        # Across tenants, for master KEK rotation: no tenant lock (each rewrap is a blind
        # compare-and-swap in its own transaction).
        tenant, version_id = after or ("", "")
        rows = self._all(
            f"SELECT {_VERSION_COLUMNS} FROM key_versions "
            "WHERE kek_label <> %s AND (tenant, id) > (%s, %s) ORDER BY tenant, id LIMIT %s",
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
        # Across tenants, for the rotation scheduler: no tenant lock (each rotation is a
        # compare-and-swap on the key revision in its own transaction).
        rows = self._all(
            ROTATION_CANDIDATES_SQL.format(p="%s"),
            rotation_candidates_params(rotated_before, after, limit),
        )
        return [(row["tenant"], row["id"]) for row in rows]

    @_guarded
    def get_import_token(self, tenant: str) -> ImportToken | None:
        self._lock_tenant(tenant)
        lock = " FOR UPDATE" if self._locking else ""
        row = self._one(f"SELECT {_IMPORT_COLUMNS} FROM import_tokens WHERE tenant = %s{lock}", (tenant,))
        return None if row is None else _row_to_token(row)

    @_guarded
    def list_import_tokens_expired_before(self, when: datetime) -> list[ImportToken]:
        # Across tenants, for the sweeper: no tenant lock (it deletes each token in its own transaction).
        rows = self._all(
            f"SELECT {_IMPORT_COLUMNS} FROM import_tokens WHERE expires_at < %s ORDER BY expires_at, tenant",
            (_ts(when),),
        )
        return [_row_to_token(row) for row in rows]

    @_guarded
    def list_key_rings(self, tenant: str) -> list[KeyRing]:
        self._lock_tenant(tenant)
        rows = self._all(
            "SELECT tenant, id, created_at, created_by FROM key_rings WHERE tenant = %s ORDER BY id",
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
        self._lock_tenant(tenant)
        rows = self._all(
            "SELECT policy_type, data, created_at, created_by, updated_at, updated_by "
            "FROM instance_policies WHERE tenant = %s ORDER BY policy_type",
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
        self._lock_tenant(tenant)
        rows = self._all(
            f"SELECT {_KEY_POLICY_COLUMNS} FROM key_policies "
            "WHERE tenant = %s AND key_id = %s ORDER BY policy_type",
            (tenant, key_id),
        )
        return [_row_to_key_policy(row) for row in rows]

    @_guarded
    def get_registration(self, tenant: str, key_id: str, resource_crn: str) -> Registration | None:
        self._lock_tenant(tenant)
        row = self._one(
            _REGISTRATION_SELECT + " WHERE r.tenant = %s AND r.key_id = %s AND r.resource_crn = %s",
            (tenant, key_id, resource_crn),
        )
        return None if row is None else _row_to_registration(row)

    @_guarded
    def list_registrations(self, tenant: str, query: RegistrationQuery) -> list[Registration]:
        clauses = ["r.tenant = %s"]
        params: list[Any] = [tenant]
        join = ""
        if query.states is not None:
            states = sorted({int(s) for s in query.states})
            if not states:
                return []
            clauses.append("r.state = ANY(%s)")
            params.append(states)
        if query.key_id is not None:
            clauses.append("r.key_id = %s")
            params.append(query.key_id)
        if query.key_ring is not None:
            join = " JOIN keys k ON k.tenant = r.tenant AND k.id = r.key_id"
            clauses.append("k.key_ring = %s")
            params.append(query.key_ring)
        if query.crn_prefix:
            # A literal, case-sensitive prefix, as in SQLite: LIKE would give % and _ a meaning.
            clauses.append("starts_with(r.resource_crn, %s)")
            params.append(query.crn_prefix)
        if query.prevent_key_deletion is not None:
            clauses.append("r.prevent_key_deletion = %s")
            params.append(bool(query.prevent_key_deletion))
        self._lock_tenant(tenant)
        rows = self._all(
            f"{_REGISTRATION_SELECT}{join} WHERE {' AND '.join(clauses)} "
            "ORDER BY r.created_at, r.key_id, r.resource_crn",
            params,
        )
        return [_row_to_registration(row) for row in rows]


class _PostgresTransaction(_PostgresReader, PushRecordWrites):
    """The writer handed out by `PostgresStore.transaction()`; dead once the `with` block ends."""

    def __init__(self, conn: _Conn) -> None:
        super().__init__(conn, locking=True)
        self._open = True

    def _db(self) -> _Conn:
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
                if db.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
                    db.execute(f"ROLLBACK TO SAVEPOINT {name}")
                    db.execute(f"RELEASE SAVEPOINT {name}")
            except psycopg.Error:
                pass  # a lost connection: keep the original error; the commit check refuses later
            raise
        db.execute(f"RELEASE SAVEPOINT {name}")

    def _write(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> psycopg.Cursor[DictRow]:
        """One statement under its own savepoint, so its failure can be diagnosed by more queries."""
        with self._atomic("hsmbridge_stmt"):
            return self._db().execute(sql, params)  # type: ignore[arg-type]

    def _require_tenant(self, tenant: str) -> None:
        if not self._tenant_exists(tenant):
            raise InternalError(f"tenant {tenant!r} is not registered; call ensure_tenant() first")

    @_guarded
    def ensure_tenant(self, tenant: str, now: datetime) -> None:
        cur = self._db().execute(
            "INSERT INTO tenants (id, created_at) VALUES (%s, %s) ON CONFLICT (id) DO NOTHING",
            (tenant, _ts(now)),
        )
        if cur.rowcount == 1:
            # Only for a brand-new tenant (see SqliteStore): a deleted default ring stays deleted.
            self._db().execute(
                "INSERT INTO key_rings (tenant, id, created_at, created_by) VALUES (%s, %s, %s, NULL)",
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
                self._write(_KEY_INSERT, _key_params(key))
            except psycopg.IntegrityError as exc:
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
        return ExternalRows(self._write, pyformat=True)

    @_guarded
    def update_key(self, key: Key) -> None:
        try:
            cur = self._write(_KEY_UPDATE, _key_params(key))
        except psycopg.IntegrityError as exc:
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
        # READ COMMITTED: a concurrent rewrap of the same row makes this one wait, then re-check
        # the WHERE against the committed row and match nothing (False), as in `update_key`.
        _check_rewrap(expected, new)
        cur = self._write(_REWRAP, _rewrap_params(tenant, version_id, expected, new))
        return cur.rowcount == 1

    def _insert_version(self, version: KeyVersion) -> None:
        try:
            self._write(
                f"INSERT INTO key_versions ({_VERSION_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
        except psycopg.IntegrityError as exc:
            # READ COMMITTED: these queries see what the racing transaction has just committed.
            if not self._key_exists(version.tenant, version.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            if self._one(
                "SELECT 1 FROM key_versions WHERE tenant = %s AND id = %s", (version.tenant, version.id)
            ):
                raise AlreadyExists("a key version with this id already exists") from exc
            raise Conflict(
                "another version with this number was stored concurrently",
                reason=Reason.CONCURRENT_UPDATE,
            ) from exc

    @_guarded
    def add_alias(self, tenant: str, key_id: str, alias: str) -> None:
        self._insert_alias(tenant, key_id, alias)

    def _insert_alias(self, tenant: str, key_id: str, alias: str) -> None:
        with self._atomic("add_alias"):
            # The key row lock makes MAX(seq) + 1 safe: every alias insert for this key holds it.
            locked = self._one(
                "SELECT 1 FROM keys WHERE tenant = %s AND id = %s FOR NO KEY UPDATE", (tenant, key_id)
            )
            if locked is None:
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND)
            try:
                self._write(
                    "INSERT INTO key_aliases (tenant, alias, key_id, seq, created_at) "
                    "SELECT %s, %s, %s, COALESCE(MAX(seq), 0) + 1, %s FROM key_aliases "
                    "WHERE tenant = %s AND key_id = %s",
                    (tenant, alias, key_id, _ts(datetime.now(UTC)), tenant, key_id),
                )
            except psycopg.IntegrityError as exc:
                raise AlreadyExists(
                    "the alias is already in use in this instance", reason=Reason.ALIAS_NOT_UNIQUE
                ) from exc

    @_guarded
    def remove_alias(self, tenant: str, key_id: str, alias: str) -> bool:
        cur = self._db().execute(
            "DELETE FROM key_aliases WHERE tenant = %s AND key_id = %s AND alias = %s",
            (tenant, key_id, alias),
        )
        return cur.rowcount > 0

    @_guarded
    def purge_key(self, tenant: str, key_id: str) -> None:
        with self._atomic("purge_key"):
            db = self._db()
            # FOR UPDATE first: a concurrent rotation or alias insert (whose foreign key check
            # needs a share lock on this row) waits for us, then finds the key gone.
            if (
                db.execute(
                    "SELECT 1 FROM keys WHERE tenant = %s AND id = %s FOR UPDATE", (tenant, key_id)
                ).fetchone()
                is None
            ):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND)
            # Explicit deletes, as in SQLite, though PostgreSQL's ON DELETE CASCADE would do it.
            db.execute("DELETE FROM key_aliases WHERE tenant = %s AND key_id = %s", (tenant, key_id))
            db.execute("DELETE FROM key_policies WHERE tenant = %s AND key_id = %s", (tenant, key_id))
            db.execute("DELETE FROM registrations WHERE tenant = %s AND key_id = %s", (tenant, key_id))
            db.execute("DELETE FROM external_keys WHERE tenant = %s AND key_id = %s", (tenant, key_id))
            db.execute("DELETE FROM key_versions WHERE tenant = %s AND key_id = %s", (tenant, key_id))
            db.execute("DELETE FROM keys WHERE tenant = %s AND id = %s", (tenant, key_id))

    @_guarded
    def put_import_token(self, token: ImportToken) -> ImportToken | None:
        # get_import_token takes the tenant lock: two replacements cannot both return the same
        # previous token (one of the new tokens' keypairs would never be destroyed).
        previous = self.get_import_token(token.tenant)
        params = _token_params(token)
        try:
            self._write(
                f"INSERT INTO import_tokens ({_IMPORT_COLUMNS}) VALUES ({_IMPORT_PLACEHOLDERS}) "
                "ON CONFLICT (tenant) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in params if c != "tenant"),
                params,
            )
        except psycopg.IntegrityError as exc:
            self._require_tenant(token.tenant)
            raise InternalError("could not store the import token") from exc
        return previous

    @_guarded
    def update_import_token(self, token: ImportToken) -> None:
        params = _token_params(token)
        cur = self._db().execute(
            "UPDATE import_tokens SET "
            + ", ".join(f"{c} = %({c})s" for c in params if c not in ("tenant", "id"))
            + " WHERE tenant = %(tenant)s AND id = %(id)s",
            params,
        )
        if cur.rowcount == 0:
            raise NotFound("import token not found", reason=Reason.IMPORT_TOKEN_NOT_FOUND)

    @_guarded
    def delete_import_token(self, tenant: str, token_id: str) -> None:
        # Silent when absent, as in SQLite: the sweeper may race with a replacement.
        self._db().execute("DELETE FROM import_tokens WHERE tenant = %s AND id = %s", (tenant, token_id))

    @_guarded
    def create_key_ring(self, ring: KeyRing) -> None:
        try:
            self._write(
                "INSERT INTO key_rings (tenant, id, created_at, created_by) VALUES (%s, %s, %s, %s)",
                (ring.tenant, ring.id, _ts_opt(ring.created_at), ring.created_by),
            )
        except psycopg.IntegrityError as exc:
            self._require_tenant(ring.tenant)
            raise AlreadyExists("a key ring with this id already exists") from exc

    @_guarded
    def delete_key_ring(self, tenant: str, ring_id: str) -> None:
        try:
            cur = self._write("DELETE FROM key_rings WHERE tenant = %s AND id = %s", (tenant, ring_id))
        except psycopg.IntegrityError as exc:
            raise Conflict("the key ring still holds keys", reason=Reason.KEY_RING_NOT_EMPTY) from exc
        if cur.rowcount == 0:
            raise NotFound("key ring not found", reason=Reason.KEY_RING_NOT_FOUND)

    @_guarded
    def put_instance_policy(self, tenant: str, policy: InstancePolicy) -> None:
        """Upsert keeping the original `created_at`/`created_by` (see `SqliteStore`)."""
        try:
            data = json.dumps(policy.data, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise InternalError("instance policy data is not JSON-serialisable") from exc
        try:
            self._write(
                "INSERT INTO instance_policies "
                "(tenant, policy_type, data, created_at, created_by, updated_at, updated_by) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
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
        except psycopg.IntegrityError as exc:
            self._require_tenant(tenant)
            raise InternalError("could not store the instance policy") from exc

    @_guarded
    def put_key_policy_record(self, record: KeyPolicyRecord) -> None:
        """Upsert keeping `id`, `created_at`, `created_by`."""
        try:
            self._write(
                f"INSERT INTO key_policies ({_KEY_POLICY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
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
        except psycopg.IntegrityError as exc:
            if not self._key_exists(record.tenant, record.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            raise InternalError("could not store the key policy") from exc

    @_guarded
    def insert_registration(self, registration: Registration) -> None:
        try:
            self._write(
                "INSERT INTO registrations ("
                + ", ".join(_REGISTRATION_COLUMNS)
                + ") VALUES ("
                + ", ".join(f"%({c})s" for c in _REGISTRATION_COLUMNS)
                + ")",
                _registration_params(registration),
            )
        except psycopg.IntegrityError as exc:
            if not self._key_exists(registration.tenant, registration.key_id):
                raise NotFound("key not found", reason=Reason.KEY_NOT_FOUND) from exc
            raise AlreadyExists("a registration for this key and resource already exists") from exc

    @_guarded
    def update_registration(self, registration: Registration) -> None:
        identity = ("tenant", "key_id", "resource_crn", "created_at", "created_by")
        cur = self._db().execute(
            "UPDATE registrations SET "
            + ", ".join(f"{c} = %({c})s" for c in _REGISTRATION_COLUMNS if c not in identity)
            + " WHERE tenant = %(tenant)s AND key_id = %(key_id)s AND resource_crn = %(resource_crn)s",
            _registration_params(registration),
        )
        if cur.rowcount == 0:
            raise NotFound("registration not found", reason=Reason.REGISTRATION_NOT_FOUND)

    @_guarded
    def delete_registration(self, tenant: str, key_id: str, resource_crn: str) -> bool:
        cur = self._db().execute(
            "DELETE FROM registrations WHERE tenant = %s AND key_id = %s AND resource_crn = %s",
            (tenant, key_id, resource_crn),
        )
        return cur.rowcount > 0


# --- the store ---------------------------------------------------------------------------------


def _configure(conn: _Conn) -> None:
    """Session settings for every pooled connection (autocommit, so they apply at once)."""
    conn.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_S * 1000)}")


def _rollback_quietly(conn: _Conn) -> None:
    """Roll back without masking the exception that got us here; a dead connection is the pool's."""
    try:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
    except psycopg.Error:
        pass


class PostgresStore(PushStoreReads):
    """`Store` on PostgreSQL. Call `migrate()` once at start-up before anything else.

    `url` is a libpq connection URL (``postgresql://user:password@host:port/dbname?sslmode=…``);
    every libpq parameter works, including the ``PG*`` environment variables for what it omits.
    `min_size`/`max_size` bound the pool: `max_size` is the most connections one daemon opens.
    """

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = POOL_TIMEOUT_S
    ) -> None:
        self._where = redact_url(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise InternalError(f"invalid PostgreSQL URL {self._where}: {self._scrub(exc, url)}") from exc
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if "application_name" not in params:
            kwargs["application_name"] = "hsmbridge"
        self._local = threading.local()
        self._pool: ConnectionPool[_Conn] = ConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            kwargs=kwargs,
            configure=_configure,
            open=False,
            name="hsmbridge-store",
            timeout=timeout,
            reconnect_timeout=RECONNECT_TIMEOUT_S,
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except psycopg.Error as exc:
            reason = self._probe(url, kwargs)
            self._pool.close()
            raise InternalError(f"cannot connect to PostgreSQL at {self._where}: {reason}") from exc

    @staticmethod
    def _scrub(exc: BaseException, url: str) -> str:
        """`_describe(exc)` without the password, should libpq ever echo the connection string."""
        text = _describe(exc)
        try:
            password = conninfo_to_dict(url).get("password")
        except psycopg.Error:
            return redact_url(text)
        return text.replace(str(password), "***") if password else text

    def _probe(self, url: str, kwargs: dict[str, Any]) -> str:
        """Why the pool could not connect: the pool itself only says that it timed out."""
        try:
            psycopg.connect(url, connect_timeout=5, **kwargs).close()
        except psycopg.Error as exc:
            return self._scrub(exc, url)
        return "timed out waiting for the first connection"

    # connections -------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[_Conn]:
        try:
            conn = self._pool.getconn()
        except PoolClosed as exc:
            raise InternalError("the store is closed") from exc
        except psycopg.Error as exc:
            raise _domain_error(exc, "no database connection available") from exc
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    # lifecycle ---------------------------------------------------------------------------------

    @_guarded
    def migrate(self) -> None:
        with self._connection() as conn:
            _migrate.migrate_postgres(conn)

    @_guarded
    def schema_version(self) -> int:
        with self._connection() as conn:
            return _migrate.schema_version_postgres(conn)

    @_guarded
    def ping(self) -> None:
        with self._connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the pool; later calls raise `InternalError`. Safe to call twice."""
        try:
            self._pool.close()
        except psycopg.Error as exc:
            raise InternalError(f"error while closing the PostgreSQL store: {_describe(exc)}") from exc

    def transaction(self) -> AbstractContextManager[_PostgresTransaction]:
        """``BEGIN`` (READ COMMITTED) … ``COMMIT``; any exception rolls back and propagates unchanged."""
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[_PostgresTransaction]:
        if getattr(self._local, "tx", None) is not None:
            raise InternalError("nested store transactions are not supported")
        with self._connection() as conn:
            try:
                # Explicit level: a server default of SERIALIZABLE would change the semantics.
                conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            except psycopg.Error as exc:
                _rollback_quietly(conn)
                raise _domain_error(exc, "cannot start a write transaction") from exc
            tx = _PostgresTransaction(conn)
            self._local.tx = tx
            try:
                yield tx
            except BaseException:
                tx._finish()
                self._local.tx = None
                _rollback_quietly(conn)
                raise
            tx._finish()
            self._local.tx = None
            if conn.info.transaction_status == TransactionStatus.INERROR:
                # PostgreSQL would turn this COMMIT into a silent ROLLBACK: say so instead.
                _rollback_quietly(conn)
                raise InternalError(
                    "the transaction was aborted by an earlier database error; nothing was stored"
                )
            try:
                conn.execute("COMMIT")
            except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as exc:
                _rollback_quietly(conn)
                raise _lost_race() from exc
            except psycopg.Error as exc:
                _rollback_quietly(conn)
                raise _domain_error(exc, "commit failed") from exc

    @contextmanager
    def _reading(self) -> Iterator[_PostgresReader]:
        """This thread's open transaction if there is one (see the module docstring), else autocommit."""
        tx: _PostgresTransaction | None = getattr(self._local, "tx", None)
        if tx is not None:
            yield tx
            return
        with self._connection() as conn:
            yield _PostgresReader(conn)

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
