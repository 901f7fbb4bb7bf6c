"""Versioned schema migrations: numbered ``NNN_name.sql`` files applied in order, exactly once.

Why plain SQL files and not a migration framework: the schema is small, the files double as the
documentation of the data model, and both backends apply the very same files, so SQLite and
PostgreSQL cannot drift apart (the one source of truth the store test suite checks).

Dialects. The files are written in SQLite's spelling of a portable subset (tables, indexes,
constraints). For PostgreSQL, `render` rewrites exactly two upper-case type names, outside
comments, string literals and quoted identifiers (see `POSTGRES_TYPES`):

* ``BLOB`` → ``BYTEA``: PostgreSQL has no BLOB type.
* ``TEXT`` → ``TEXT COLLATE "C"``: SQLite compares text byte by byte (its BINARY collation);
  PostgreSQL would use the database's locale, where ``ORDER BY id`` puts "default" before
  "Payments" and punctuation is ignored. The "C" collation gives SQLite's order, in every column
  and in the indexes that serve ``ORDER BY`` and ranges, whatever locale the cluster was
  initialised with.

So the SQLite path is byte-for-byte what it always was, and existing SQLite databases are
untouched. Rules for new migration files: type names upper case, identifiers lower case (a column
called ``text`` stays a column), only the portable subset, and each file must work in one
transaction on both engines (so no ``CREATE INDEX CONCURRENTLY``). The `POSTGRES_TYPES` table is
part of the schema: changing an entry would give new PostgreSQL databases a different schema than
migrated ones, so change the schema with a new migration instead.

Concurrency. Two daemons starting at once must not both apply a migration: SQLite takes the
database write lock with ``BEGIN IMMEDIATE``; PostgreSQL takes a transaction-scoped advisory lock
(`MIGRATION_LOCK_KEY`), since there may not be a table to lock yet. Both then re-read the
version inside that transaction, so check-and-apply is atomic. DDL is transactional in both
engines, so a failed migration leaves nothing half-applied.

The files ship as package data (``hsmbridge/core/store/migrations/*.sql``) and are read with
`importlib.resources`, so migrations work from a wheel or a zip, not only from a source checkout.
"""

from __future__ import annotations

import enum
import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from hsmbridge.errors import InternalError

if TYPE_CHECKING:
    import psycopg

_PACKAGE = "hsmbridge.core.store"
_DIRECTORY = "migrations"
_FILENAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")

#: Key of the PostgreSQL advisory lock that serialises migrations (the bytes "hsmbrdg" + 1; any
#: constant works as long as nothing else in the database uses it).
MIGRATION_LOCK_KEY = int.from_bytes(b"hsmbrdg\x01", "big")


class Dialect(enum.Enum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"


#: The migration files' SQLite type names and their PostgreSQL spelling (see the module docstring).
POSTGRES_TYPES: dict[str, str] = {"BLOB": "BYTEA", "TEXT": 'TEXT COLLATE "C"'}

#: One lexical unit of SQL that `render` must not look inside, or a bare word.
_TOKEN = re.compile(
    r"""(?P<skip>--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|"(?:[^"]|"")*")|(?P<word>[A-Za-z_][A-Za-z0-9_$]*)""",
    re.DOTALL,
)


def render(sql: str, dialect: Dialect) -> str:
    """`sql` as `dialect` needs it: unchanged for SQLite, `POSTGRES_TYPES` applied for PostgreSQL.

    Why a scanner rather than ``str.replace``: a type word inside a comment, a string literal or
    a quoted identifier is not a type, and a lower-case ``text`` is a column name.
    """
    if dialect is Dialect.SQLITE:
        return sql

    def substitute(match: re.Match[str]) -> str:
        word = match["word"]
        if word is None:
            return match[0]
        return POSTGRES_TYPES.get(word, word)

    return _TOKEN.sub(substitute, sql)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self, dialect: Dialect = Dialect.SQLITE) -> list[str]:
        """Rendered for `dialect`, split on statement boundaries as SQLite's own parser sees them.

        Why not ``executescript``: on Python 3.11 it COMMITs any open transaction before running,
        which would make a failed migration leave half a schema behind. The same split serves
        PostgreSQL, whose driver sends one statement per call; the portable subset the files
        keep to (no dollar-quoted bodies) splits identically for both.
        """
        statements: list[str] = []
        pending = ""
        for line in render(self.sql, dialect).splitlines(keepends=True):
            pending += line
            if sqlite3.complete_statement(pending):
                statements.append(pending.strip())
                pending = ""
        if _strip_comments(pending):
            raise InternalError(f"migration {self.version:03d}_{self.name}: unterminated statement")
        return statements


def _strip_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--")).strip()


def load_migrations() -> list[Migration]:
    """All shipped migrations, in version order; a gap or a duplicate number is a packaging bug."""
    directory = resources.files(_PACKAGE).joinpath(_DIRECTORY)
    found: dict[int, Migration] = {}
    for entry in directory.iterdir():
        match = _FILENAME.match(entry.name)
        if match is None:
            continue
        version = int(match["version"])
        if version in found:
            raise InternalError(f"two migrations share number {version:03d}")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    ordered = [found[v] for v in sorted(found)]
    if [m.version for m in ordered] != list(range(1, len(ordered) + 1)):
        raise InternalError("migration numbers must run 001, 002, ... without gaps")
    return ordered


def _check_not_newer(current: int, latest: int) -> None:
    if current > latest:
        raise InternalError(
            f"database schema is at version {current}, newer than this build knows ({latest}); "
            "refusing to run an older hsmbridge against it"
        )


def schema_version(conn: sqlite3.Connection) -> int:
    """The highest applied migration, 0 for an empty database."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"  # SQLite-only
    ).fetchone()
    if exists is None:
        return 0
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0)


def migrate(conn: sqlite3.Connection, migrations: list[Migration] | None = None) -> int:
    """Apply every pending migration, each in its own `BEGIN IMMEDIATE` transaction.

    Why re-read the version inside each transaction: two daemons starting against the same file
    must not both apply 002; the write lock taken by BEGIN IMMEDIATE makes the check-and-apply
    atomic. Returns the version the database is at afterwards.

    `conn` must be in autocommit mode (``isolation_level=None``) so this code owns the transaction.
    """
    migrations = load_migrations() if migrations is None else migrations
    latest = migrations[-1].version if migrations else 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            _check_not_newer(current, latest)
            pending = [m for m in migrations if m.version > current]
            if not pending:
                conn.execute("COMMIT")
                return current
            step = pending[0]
            for statement in step.statements():
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, _now_text()),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


def schema_version_postgres(conn: psycopg.Connection[Any]) -> int:
    """The highest applied migration in the schema `conn`'s search_path resolves to, 0 if none."""
    from psycopg.rows import tuple_row

    cur = conn.cursor(row_factory=tuple_row)
    present = cur.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if present is None or not present[0]:
        return 0
    row = cur.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0) if row is not None else 0


def migrate_postgres(conn: psycopg.Connection[Any], migrations: list[Migration] | None = None) -> int:
    """PostgreSQL's `migrate`: each pending migration in its own transaction, under an advisory lock.

    Why an advisory lock (``pg_advisory_xact_lock``) and not a table lock: before 001 there is no
    table to lock, and the lock must also cover creating ``schema_version`` itself. A second
    daemon waits for the first one's transaction, then re-reads the version and finds nothing to
    do. The lock is transaction-scoped, so a crashed migrator cannot leave it held.

    `conn` must be in autocommit mode so that this code owns the transactions.
    """
    from psycopg.rows import tuple_row

    migrations = load_migrations() if migrations is None else migrations
    latest = migrations[-1].version if migrations else 0
    while True:
        with conn.transaction():
            cur = conn.cursor(row_factory=tuple_row)
            # However long another daemon's migration takes: the store's usual lock timeout is
            # for request traffic, and giving up here would fail the daemon's start.
            cur.execute("SET LOCAL lock_timeout = 0")
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            current = schema_version_postgres(conn)
            _check_not_newer(current, latest)
            pending = [m for m in migrations if m.version > current]
            if not pending:
                return current
            step = pending[0]
            for statement in step.statements(Dialect.POSTGRESQL):
                cur.execute(statement)
            cur.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (%s, %s, %s)",
                (step.version, step.name, _now_text()),
            )


def _now_text() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
