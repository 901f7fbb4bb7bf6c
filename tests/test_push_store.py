"""The push records (migration 005) behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hsmbridge.core.store.postgres import PostgresStore
from hsmbridge.core.store.push_records import CloudKey, PushConnection
from hsmbridge.core.store.sqlite import SqliteStore
from hsmbridge.errors import AlreadyExists, Conflict

pytest_plugins = ("store_fixtures",)

T0 = datetime(2026, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    if request.param == "sqlite":
        opened: object = SqliteStore(tmp_path / "store.db")
    else:
        opened = PostgresStore(request.getfixturevalue("postgres_url"))
    opened.migrate()  # type: ignore[attr-defined]
    yield opened
    opened.close()  # type: ignore[attr-defined]


def _connection(tenant: str = "t1", cid: str = "c1", name: str = "prod-aws") -> PushConnection:
    return PushConnection(
        tenant=tenant,
        id=cid,
        name=name,
        cloud="aws",
        settings={"endpoint": "https://kms.eu-west-1.amazonaws.com", "region": "eu-west-1"},
        sealed_secret=b"\x00sealed\xff",
        created_at=T0,
        created_by="alice",
        updated_at=T0,
    )


def _key(kid: str = "k1", kms_id: str = "1234abcd") -> CloudKey:
    return CloudKey(
        tenant="t1",
        id=kid,
        cloud="aws",
        connection_id="c1",
        kms_id=kms_id,
        created_at=T0,
        updated_at=T0,
        synced_at=T0,
        cloud_params={"KeyState": "PendingImport", "Origin": "EXTERNAL"},
        region="eu-west-1",
    )


def test_connections_by_id_or_name_tenant_scoped_and_unique_names(store) -> None:  # type: ignore[no-untyped-def]
    with store.transaction() as tx:
        tx.insert_push_connection(_connection())
    assert store.get_push_connection("t1", "c1") == _connection()
    assert store.get_push_connection("t1", "prod-aws") == _connection()
    assert store.get_push_connection("t2", "c1") is None
    with pytest.raises(AlreadyExists), store.transaction() as tx:
        tx.insert_push_connection(_connection(cid="c2"))
    with store.transaction() as tx:
        tx.insert_push_connection(_connection(tenant="t2"))
    assert [c.id for c in store.list_push_connections("t1")] == ["c1"]


def test_cloud_keys_round_trip_update_and_block_deleting_their_connection(store) -> None:  # type: ignore[no-untyped-def]
    with store.transaction() as tx:
        tx.insert_push_connection(_connection())
        tx.insert_cloud_key(_key())
    key = store.get_cloud_key("t1", "k1")
    assert key == _key()
    assert store.find_cloud_key("t1", "c1", "1234abcd") == key
    with pytest.raises(AlreadyExists), store.transaction() as tx:
        tx.insert_cloud_key(_key(kid="k2"))
    key.local_key_id, key.local_version_id, key.kcv = "lk", "lv", "a1b2c3"
    key.key_expiration, key.valid_to = True, "2027-01-01T00:00:00.123456789Z"
    key.pushed_at = key.updated_at = T0 + timedelta(minutes=1)
    key.cloud_params = {"KeyState": "Enabled", "ValidTo": "2027-01-01T00:00:00.123456789Z"}
    with store.transaction() as tx:
        tx.update_cloud_key(key)
    assert store.get_cloud_key("t1", "k1") == key
    assert [k.id for k in store.list_cloud_keys("t1", "aws")] == ["k1"]
    assert store.list_cloud_keys("t1", "ibm") == []
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.delete_push_connection("t1", "c1")
    with store.transaction() as tx:
        assert tx.delete_cloud_key("t1", "k1") is True
        assert tx.delete_push_connection("t1", "c1") is True
        assert tx.delete_push_connection("t1", "c1") is False
    assert store.get_push_connection("t1", "c1") is None
