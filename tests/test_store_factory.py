"""`open_store`: one configuration string picks the backend (hsmbridge/core/store/factory.py)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hsmbridge.core.store import StoreLocation, open_store, parse_store_url
from hsmbridge.core.store.postgres import PostgresStore
from hsmbridge.core.store.sqlite import SqliteStore

pytest_plugins = ("store_fixtures",)


@pytest.mark.parametrize(
    ("given", "backend", "target"),
    [
        ("var/hsmbridge.db", "sqlite", "var/hsmbridge.db"),
        ("/var/lib/hsmbridge/store.db", "sqlite", "/var/lib/hsmbridge/store.db"),
        ("sqlite:///var/lib/hsmbridge/store.db", "sqlite", "/var/lib/hsmbridge/store.db"),
        ("sqlite:////var/lib/hsmbridge/store.db", "sqlite", "/var/lib/hsmbridge/store.db"),
        ("sqlite://localhost/var/my%20store.db", "sqlite", "/var/my store.db"),
        ("sqlite:relative/store.db", "sqlite", "relative/store.db"),
        (":memory:", "sqlite", ":memory:"),
        ("sqlite::memory:", "sqlite", ":memory:"),
        ("sqlite:///:memory:", "sqlite", ":memory:"),
        (
            "postgresql://kms:pw@db:5432/kms?sslmode=require",
            "postgresql",
            "postgresql://kms:pw@db:5432/kms?sslmode=require",
        ),
        ("postgres://db/kms", "postgresql", "postgres://db/kms"),
        ("  var/padded.db  ", "sqlite", "var/padded.db"),
    ],
)
def test_locations_are_classified(given: str, backend: str, target: str) -> None:
    assert parse_store_url(given) == StoreLocation(backend, target)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "given",
    [
        "",
        "   ",
        "mysql://root:pw-in-url@db/kms",
        "sqlite://otherhost/x.db",
        "sqlite:///x.db?mode=ro",
        "postgresql:db",
    ],
)
def test_unusable_locations_are_refused_without_echoing_them(given: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_store_url(given)
    assert "pw-in-url" not in str(err.value)


def test_a_location_prints_without_its_password() -> None:
    location = parse_store_url("postgresql://kms:hunter2@db/kms")
    assert str(location) == "postgresql://kms:***@db/kms"
    assert "hunter2" not in repr(location)
    assert str(parse_store_url("var/x.db")) == "sqlite:var/x.db"


def test_a_sqlite_path_gets_its_directory_and_a_working_store(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    for given in (str(path), f"sqlite://{path}"):
        store = open_store(given)
        try:
            assert isinstance(store, SqliteStore)
            store.migrate()
            store.ping()
        finally:
            store.close()
    assert path.exists()


def test_memory_is_sqlite_in_memory() -> None:
    store = open_store(":memory:")
    try:
        assert isinstance(store, SqliteStore)
        store.migrate()
        with store.transaction() as tx:
            tx.ensure_tenant("t", datetime.now(UTC))
        assert [r.id for r in store.list_key_rings("t")] == ["default"]
    finally:
        store.close()


def test_a_postgres_url_opens_a_postgres_store_with_the_pool_size(postgres_url: str) -> None:
    for url in (postgres_url, postgres_url.replace("postgresql://", "postgres://", 1)):
        store = open_store(url, pool_min_size=1, pool_max_size=2)
        try:
            assert isinstance(store, PostgresStore)
            assert store._pool.max_size == 2
            store.migrate()
            store.ping()
        finally:
            store.close()


def test_sqlite_deployments_never_import_psycopg() -> None:
    code = (
        "import sys\n"
        "from hsmbridge.core.store import open_store\n"
        "s = open_store(':memory:'); s.migrate(); s.close()\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
