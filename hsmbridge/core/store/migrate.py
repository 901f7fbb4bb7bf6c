"""Versioned schema migrations: numbered ``NNN_name.sql`` files applied in order, exactly once.

Why plain SQL files and not a migration framework: the schema is small, the files double as the
documentation of the data model, and a PostgreSQL backend can load the very same files through
`load_migrations()` (only the apply step below is SQLite-specific).

The files ship as package data (``hsmbridge/core/store/migrations/*.sql``) and are read with
`importlib.resources`, so migrations work from a wheel or a zip, not only from a source checkout.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources

from hsmbridge.errors import InternalError

_PACKAGE = "hsmbridge.core.store"
_DIRECTORY = "migrations"
_FILENAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """Split on statement boundaries as SQLite's own parser sees them.

        Why not ``executescript``: on Python 3.11 it COMMITs any open transaction before running,
        which would make a failed migration leave half a schema behind.
        """
        statements: list[str] = []
        pending = ""
        for line in self.sql.splitlines(keepends=True):
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
            if current > latest:
                raise InternalError(
                    f"database schema is at version {current}, newer than this build knows ({latest}); "
                    "refusing to run an older hsmbridge against it"
                )
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


def _now_text() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
