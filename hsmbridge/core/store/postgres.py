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

Every store operation itself lives once, in `_sql.py`, shared with SQLite; this module holds only
what is PostgreSQL's own: the pool, the locking hooks above (`_lock_tenant`, `_for_update`), the
per-statement savepoint (`_write`), the one-statement key read, placeholders and error mapping.
"""

# ruff: noqa: S608 -- every SQL text here is assembled from this module's constants and
# placeholders; values are always bound parameters, never interpolated.

from __future__ import annotations

import functools
import re
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool, PoolClosed

from hsmbridge.core.model import Key
from hsmbridge.core.store import migrate as _migrate
from hsmbridge.core.store._rows import _KEY_COLUMNS, _row_to_key
from hsmbridge.core.store._sql import SqlReader, SqlStore, SqlTransaction, concurrent_update, store_fault
from hsmbridge.errors import InternalError

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


def _domain_error(exc: Exception, what: str) -> Exception | None:
    """The one mapping of a driver error: `StoreUnavailable` (503/UNAVAILABLE, retried by clients)
    for the database's own conditions, `InternalError` for everything else (a bug), and
    `Conflict(CONCURRENT_UPDATE)` for a deadlock or serialization failure (another transaction
    won: the caller retries from a fresh read); None for an exception that is not psycopg's."""
    if isinstance(exc, (pg_errors.SerializationFailure, pg_errors.DeadlockDetected)):
        return concurrent_update()
    if isinstance(exc, PoolClosed):
        return InternalError("the store is closed")
    if not isinstance(exc, psycopg.Error):
        return None
    return store_fault(what, _unavailable(exc), _describe(exc))


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

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def _pyformat(sql: str) -> str:
    """The shared ``:name`` placeholders as psycopg's ``%(name)s`` (a literal % doubled)."""
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%"))


#: A key with its aliases in one statement (one snapshot, one round trip).
_KEY_READ = (
    "SELECT "
    + ", ".join(f"k.{c}" for c in _KEY_COLUMNS)
    + ", ARRAY(SELECT a.alias FROM key_aliases a WHERE a.tenant = k.tenant AND a.key_id = k.id "
    "ORDER BY a.seq) AS aliases FROM keys k"
)


# --- the engine hooks --------------------------------------------------------------------------


class _PostgresReader(SqlReader):
    """Outside a transaction (`_locking` false) each read is one statement in autocommit. Inside
    a write transaction reads first take the tenant lock and lock the key and token rows they
    return; see the module docstring for why."""

    _integrity_error = psycopg.IntegrityError
    _map_error = staticmethod(_domain_error)
    _translate = staticmethod(_pyformat)
    _locking = False

    def __init__(self, conn: _Conn) -> None:
        super().__init__(conn)
        self._tenants_locked: set[str] = set()

    @staticmethod
    def _any(column: str, name: str, values: Sequence[Any], params: dict[str, Any]) -> str:
        params[name] = list(values)
        return f"{column} = ANY(:{name})"

    def _lock_tenant(self, tenant: str) -> None:
        """Serialise this transaction with every other one that reads this tenant's data."""
        if not self._locking or tenant in self._tenants_locked:
            return
        self._db().execute("SELECT pg_advisory_xact_lock(%s, %s)", (_TENANT_LOCK, _tenant_lock_key(tenant)))
        self._tenants_locked.add(tenant)

    def _for_update(self, strength: str) -> str:
        return f" FOR {strength}" if self._locking else ""

    def _keys(self, tenant: str, where: str, params: dict[str, Any], tail: str = "") -> list[Key]:
        if self._locking:
            # Lock the key rows first, then read their aliases in a new statement (SqlReader).
            return super()._keys(tenant, where, params, tail)
        rows = self._all(f"{_KEY_READ} WHERE {where}{tail}", params)
        return [_row_to_key(row, list(row["aliases"])) for row in rows]


class _PostgresTransaction(_PostgresReader, SqlTransaction):
    _locking = True

    def _write(self, sql: str, params: dict[str, Any]) -> Any:
        """One statement under its own savepoint, so its failure can be diagnosed by more queries."""
        with self._atomic("hsmbridge_stmt"):
            return self._exec(sql, params)

    def _savepoint_usable(self) -> bool:
        status = self._conn.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)


# --- the store ---------------------------------------------------------------------------------


def _configure(conn: _Conn) -> None:
    """Session settings for every pooled connection (autocommit, so they apply at once)."""
    conn.execute(f"SET lock_timeout = {int(LOCK_TIMEOUT_S * 1000)}")


class PostgresStore(SqlStore):
    """`Store` on PostgreSQL. Call `migrate()` once at start-up before anything else.

    `url` is a libpq connection URL (``postgresql://user:password@host:port/dbname?sslmode=…``);
    every libpq parameter works, including the ``PG*`` environment variables for what it omits.
    `min_size`/`max_size` bound the pool: `max_size` is the most connections one daemon opens.
    """

    _transaction_type = _PostgresTransaction
    _map_error = staticmethod(_domain_error)

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = POOL_TIMEOUT_S
    ) -> None:
        super().__init__()
        self._where = redact_url(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise InternalError(f"invalid PostgreSQL URL {self._where}: {self._scrub(exc, url)}") from exc
        kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
        if "application_name" not in params:
            kwargs["application_name"] = "hsmbridge"
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
            raise _domain_error(exc, "getting a database connection") or exc from exc
        try:
            yield conn
        finally:
            self._pool.putconn(conn)

    # engine hooks for SqlStore -----------------------------------------------------------------

    def _close(self) -> None:
        self._pool.close()

    _apply_migrations = staticmethod(_migrate.migrate_postgres)
    _read_schema_version = staticmethod(_migrate.schema_version_postgres)

    def _begin(self, conn: _Conn) -> None:
        # Explicit level: a server default of SERIALIZABLE would change the semantics.
        conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")

    def _commit(self, conn: _Conn) -> None:
        if conn.info.transaction_status == TransactionStatus.INERROR:
            # PostgreSQL would turn this COMMIT into a silent ROLLBACK: say so instead.
            raise InternalError(
                "the transaction was aborted by an earlier database error; nothing was stored"
            )
        conn.execute("COMMIT")

    @contextmanager
    def _snapshot(self) -> Iterator[_PostgresReader]:
        # Each read is one statement (see the module docstring): it is its own snapshot.
        with self._connection() as conn:
            yield _PostgresReader(conn)

    @staticmethod
    def _rollback_quietly(conn: _Conn) -> None:
        """Roll back without masking the exception that got us here; a dead connection is the pool's."""
        try:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
        except psycopg.Error:
            pass
