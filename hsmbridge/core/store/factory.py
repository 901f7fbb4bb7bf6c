"""Pick the store backend from one configuration string: a URL, or a bare path for SQLite.

Accepted spellings:

* a bare path (``var/hsmbridge.db``, ``/var/lib/hsmbridge/store.db``): SQLite, today's default;
* ``sqlite:///var/lib/hsmbridge/store.db``: SQLite at the **absolute** path ``/var/lib/…`` (the
  path part of the URL, as with ``file:///`` URLs; ``sqlite:////abs`` means the same);
  ``sqlite:relative/store.db`` for a relative path;
* ``:memory:``, ``sqlite::memory:``, ``sqlite:///:memory:``: a throwaway in-memory SQLite store;
* ``postgresql://…`` or ``postgres://…``: PostgreSQL, the URL handed to libpq unchanged (so
  ``sslmode``, several hosts, ``PG*`` environment variables… all work).

Why the parsing is separate from opening (`parse_store_url`): configuration can reject a bad
value when it is loaded, and log where the store is (`StoreLocation.__str__` hides passwords),
before anything connects. The PostgreSQL module (and psycopg) is imported only when a
PostgreSQL URL is opened, so SQLite-only deployments and tools never load it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from hsmbridge.core.store.base import Store

__all__ = ["StoreLocation", "open_store", "parse_store_url"]

MEMORY = ":memory:"
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?P<rest>.*)$", re.DOTALL)
_POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where the store lives: a SQLite path (or ``:memory:``) or a PostgreSQL URL."""

    backend: Literal["sqlite", "postgresql"]
    #: The SQLite path, or the PostgreSQL URL exactly as configured (password included).
    target: str

    def __str__(self) -> str:
        """Safe for logs and error messages: a PostgreSQL password is replaced by ``***``."""
        if self.backend == "sqlite":
            return f"sqlite:{self.target}"
        from hsmbridge.core.store.postgres import redact_url

        return redact_url(self.target)

    def __repr__(self) -> str:
        return f"StoreLocation({self.backend!r}, {str(self)!r})"


def parse_store_url(url_or_path: str) -> StoreLocation:
    """Classify `url_or_path`; `ValueError` (naming at most the scheme, never the URL) if unusable."""
    value = url_or_path.strip()
    if not value:
        raise ValueError("the store location is empty; give a SQLite path or a postgresql:// URL")
    if value == MEMORY:
        return StoreLocation("sqlite", MEMORY)
    match = _SCHEME.match(value)
    # A one-letter "scheme" is a Windows drive (C:\...), and no scheme at all is a plain path.
    if match is None or len(match["scheme"]) == 1:
        return StoreLocation("sqlite", value)
    scheme = match["scheme"].lower()
    if scheme in _POSTGRES_SCHEMES:
        if not match["rest"].startswith("//"):
            raise ValueError(f"a {scheme} store URL must look like {scheme}://user@host/dbname")
        return StoreLocation("postgresql", value)
    if scheme == "sqlite":
        return StoreLocation("sqlite", _sqlite_path(match["rest"]))
    raise ValueError(
        f"unsupported store URL scheme {scheme!r}: use a SQLite path, sqlite:///path or postgresql://…"
    )


def _sqlite_path(rest: str) -> str:
    if rest in (MEMORY, "///" + MEMORY, "//" + MEMORY):
        return MEMORY
    if not rest.startswith("//"):
        path = unquote(rest)  # sqlite:relative/path.db
    else:
        parts = urlsplit("sqlite:" + rest)
        if parts.netloc not in ("", "localhost"):
            raise ValueError("a sqlite URL names a local file: sqlite:///absolute/path (no host)")
        if parts.query or parts.fragment:
            raise ValueError("a sqlite URL takes no query or fragment")
        path = unquote(parts.path)
        if path.startswith("//"):
            path = "/" + path.lstrip("/")  # sqlite:////abs, the SQLAlchemy spelling, is /abs too
    if not path:
        raise ValueError("the sqlite URL has no path")
    return path


def open_store(url_or_path: str, *, pool_min_size: int = 1, pool_max_size: int = 10) -> Store:
    """Open (not migrate) the store `url_or_path` names; see the module docstring for spellings.

    For SQLite the file's directory is created if missing (the file itself SQLite creates). The
    pool sizes apply to PostgreSQL only: `pool_max_size` is the most connections this process
    opens. Call `Store.migrate()` next, before serving.
    """
    location = parse_store_url(url_or_path)
    if location.backend == "postgresql":
        from hsmbridge.core.store.postgres import PostgresStore

        return PostgresStore(location.target, min_size=pool_min_size, max_size=pool_max_size)
    from hsmbridge.core.store.sqlite import SqliteStore

    if location.target == MEMORY:
        return SqliteStore(MEMORY)
    path = Path(location.target)
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path)
