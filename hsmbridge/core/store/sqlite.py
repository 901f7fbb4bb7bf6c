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
aliases come from one snapshot. Every `sqlite3.Error` becomes a domain error here
(`_domain_error`); the constraint violations the services care about are diagnosed with a
follow-up query rather than by parsing SQLite's message text.

Every store operation itself lives once, in `_sql.py`, shared with PostgreSQL; this module holds
only what is SQLite's own: connections, ``BEGIN IMMEDIATE``, and the error mapping.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hsmbridge.core.store import migrate as _migrate
from hsmbridge.core.store._sql import SqlReader, SqlStore, SqlTransaction, store_fault
from hsmbridge.errors import InternalError, StoreUnavailable

__all__ = ["BUSY_TIMEOUT_S", "SqliteStore"]

#: How long a writer waits for another writer's transaction before giving up.
BUSY_TIMEOUT_S = 5.0

MEMORY = ":memory:"


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


def _domain_error(exc: Exception, what: str) -> Exception | None:
    """The one mapping of a driver error: `StoreUnavailable` (503/UNAVAILABLE, retried by clients)
    for the store's own conditions, `InternalError` for everything else (a bug); None for an
    exception that is not SQLite's.

    SQLite's messages name tables and columns, never bound values, so they are safe to keep for
    the operator.
    """
    if not isinstance(exc, sqlite3.Error):
        return None
    return store_fault(what, _unavailable(exc), f"{getattr(exc, 'sqlite_errorname', 'error')}: {exc}")


class _SqliteReader(SqlReader):
    _integrity_error = sqlite3.IntegrityError
    _map_error = staticmethod(_domain_error)

    @staticmethod
    def _any(column: str, name: str, values: Sequence[Any], params: dict[str, Any]) -> str:
        # A JSON array read by json_each (built into SQLite since 3.38).
        params[name] = json.dumps(list(values))
        return f"{column} IN (SELECT value FROM json_each(:{name}))"  # noqa: S608 -- names only


class _SqliteTransaction(_SqliteReader, SqlTransaction):
    """SQLite needs no locking hooks: ``BEGIN IMMEDIATE`` serialises whole write transactions."""

    def _savepoint_usable(self) -> bool:
        # SQLite may already have rolled the whole transaction back by itself (e.g. SQLITE_FULL).
        return bool(self._conn.in_transaction)


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
                raise _domain_error(exc, "opening the SQLite store") or exc from exc
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


class SqliteStore(SqlStore):
    """`Store` on SQLite. Call `migrate()` once at start-up before anything else."""

    _transaction_type = _SqliteTransaction
    _map_error = staticmethod(_domain_error)

    def __init__(self, path: str | Path) -> None:
        super().__init__()
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
            raise _domain_error(exc, "opening the SQLite store") or exc from exc
        if not self._memory and str(mode).lower() != "wal":
            raise InternalError(f"SQLite refused WAL mode (got {mode!r}); the store needs it")

    # engine hooks for SqlStore -----------------------------------------------------------------

    def _connection(self) -> Any:
        return self._conns.acquire()

    def _close(self) -> None:
        self._conns.close()

    _apply_migrations = staticmethod(_migrate.migrate)
    _read_schema_version = staticmethod(_migrate.schema_version)

    def _begin(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE: take the write lock up front (waiting up to the busy timeout); a deferred
        # transaction that later upgrades fails with SQLITE_BUSY at once, half-way through.
        conn.execute("BEGIN IMMEDIATE")

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[_SqliteReader]:
        with self._conns.acquire() as conn:
            conn.execute("BEGIN")
            try:
                yield _SqliteReader(conn)
            except BaseException:
                self._rollback_quietly(conn)
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                # Never leave this thread's connection inside a transaction.
                self._rollback_quietly(conn)
                raise

    @staticmethod
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
