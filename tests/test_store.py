"""The store contract (hsmbridge/core/store/base.py), written once and run against every backend.

The `store` fixture is parametrised over `BACKENDS`: SQLite in a file, SQLite in memory, and
PostgreSQL in a throwaway cluster the session starts (tests/store_fixtures.py; it fails, rather
than skips, when PostgreSQL is not installed). `replica` is a second store on the same database,
as a second daemon would open it, for the races between replicas. Tests that depend on a
backend's own mechanics (a file surviving reopen, SQLite pragmas, PostgreSQL's migration lock)
say so in their names.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest

from hsmbridge.core.model import (
    DEFAULT_KEY_RING,
    DualAuthDelete,
    ImportToken,
    Key,
    KeyState,
    KeyVersion,
    RotationPolicy,
    WrappedKey,
)
from hsmbridge.core.store import migrate as migrations
from hsmbridge.core.store.base import (
    InstancePolicy,
    KeyPolicyRecord,
    KeyQuery,
    KeyRing,
    Registration,
    RegistrationQuery,
    RegistrationState,
    Store,
)
from hsmbridge.core.store.postgres import PostgresStore, redact_url
from hsmbridge.core.store.sqlite import SqliteStore
from hsmbridge.errors import AlreadyExists, Conflict, InternalError, InvalidInput, NotFound, Reason

pytest_plugins = ("store_fixtures",)

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
TENANT = "tenant-a"
OTHER = "tenant-b"


# --- backends ----------------------------------------------------------------------------------

#: Given the test's request and tmp_path, a function opening a store on that test's database:
#: each call is another daemon on the same data (for ":memory:", the same store: a second
#: in-memory store would be another database).
Opener = Callable[[], Store]


def _sqlite_file(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return lambda: SqliteStore(tmp_path / "store.db")


def _sqlite_memory(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    only = SqliteStore(":memory:")
    return lambda: only


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore(url)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Opener]] = {
    "sqlite-file": _sqlite_file,
    "sqlite-memory": _sqlite_memory,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores on this test's database; every store opened is closed afterwards."""
    opener = BACKENDS[request.param](request, tmp_path)
    opened: list[Store] = []

    def open_store() -> Store:
        s = opener()
        opened.append(s)
        return s

    yield open_store
    for s in opened:
        s.close()


@pytest.fixture
def unmigrated(backend: Opener) -> Store:
    return backend()


@pytest.fixture
def store(unmigrated: Store) -> Store:
    """A migrated, empty store with TENANT and OTHER registered."""
    unmigrated.migrate()
    with unmigrated.transaction() as tx:
        tx.ensure_tenant(TENANT, T0)
        tx.ensure_tenant(OTHER, T0)
    return unmigrated


@pytest.fixture
def replica(store: Store, backend: Opener) -> Store:
    """Another daemon's store on the same database as `store`."""
    other = backend()
    other.migrate()
    return other


# --- builders ----------------------------------------------------------------------------------


def make_key(key_id: str | None = None, *, tenant: str = TENANT, **fields: object) -> tuple[Key, KeyVersion]:
    """A key and its first version, consistent with each other."""
    key_id = key_id or str(uuid.uuid4())
    version = KeyVersion(
        id=f"{key_id}-v1",
        key_id=key_id,
        tenant=tenant,
        number=1,
        created_at=T0,
        wrapped=WrappedKey(blob=b"\x00wrapped\xff" + key_id.encode(), length=32, kek_label="kek-1"),
    )
    key = Key(
        id=key_id,
        tenant=tenant,
        name=f"name-{key_id}",
        extractable=False,
        imported=False,
        state=KeyState.ACTIVE,
        created_at=T0,
        created_by="alice",
        updated_at=T0,
        current_version_id=version.id,
    )
    return replace(key, **fields), version  # type: ignore[arg-type]


def insert(store: Store, key_id: str | None = None, *, tenant: str = TENANT, **fields: object) -> Key:
    key, version = make_key(key_id, tenant=tenant, **fields)
    with store.transaction() as tx:
        tx.insert_key(key, version)
    return key


def make_token(
    tenant: str = TENANT, *, token_id: str | None = None, expires_at: datetime | None = None
) -> ImportToken:
    return ImportToken(
        id=token_id or str(uuid.uuid4()),
        tenant=tenant,
        created_at=T0,
        expires_at=expires_at or T0 + timedelta(minutes=10),
        max_retrievals=3,
        remaining_retrievals=3,
        nonce=b"\x01\x02nonce",
        key_bits=4096,
        public_key_der=b"0\x82\x02\x22der",
        hsm_object_id=f"obj-{tenant}",
        created_by="bob",
    )


# --- round trips -------------------------------------------------------------------------------


def test_a_key_with_every_field_set_round_trips(store: Store) -> None:
    key, version = make_key(
        "k1",
        name="payroll",
        description="wraps payroll DEKs",
        extractable=True,
        imported=True,
        state=KeyState.SUSPENDED,
        bit_length=128,
        aliases=["first", "second"],
        expires_at=T0 + timedelta(days=365),
        last_rotated_at=T0 + timedelta(days=1),
        state_changed_at=T0 + timedelta(days=2),
        deleted_at=T0 + timedelta(days=3),
        deleted_by="carol",
        state_before_delete=KeyState.DEACTIVATED,
        dual_auth=DualAuthDelete(enabled=True, set_by="dave", expires_at=T0 + timedelta(days=7)),
        rotation=RotationPolicy(enabled=True, interval_month=3),
        revision=1,
    )
    with store.transaction() as tx:
        tx.insert_key(key, version)

    assert store.get_key(TENANT, "k1") == key
    assert store.get_version(TENANT, version.id) == version


def test_absent_and_disabled_rotation_policies_stay_distinct(store: Store) -> None:
    insert(store, "none", rotation=None)
    insert(store, "off", rotation=RotationPolicy(enabled=False, interval_month=None))

    assert store.get_key(TENANT, "none").rotation is None  # type: ignore[union-attr]
    assert store.get_key(TENANT, "off").rotation == RotationPolicy(False, None)  # type: ignore[union-attr]


def test_datetimes_come_back_as_the_same_instant_in_utc(store: Store) -> None:
    tokyo = timezone(timedelta(hours=9))
    created = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=tokyo)
    insert(store, "k1", created_at=created, updated_at=created)

    got = store.get_key(TENANT, "k1")
    assert got is not None
    assert got.created_at == created
    assert got.created_at.tzinfo is not None and got.created_at.utcoffset() == timedelta(0)
    assert got.created_at.microsecond == 678901


def test_naive_datetimes_are_refused_rather_than_guessed(store: Store) -> None:
    key, version = make_key("k1", expires_at=datetime(2030, 1, 1))
    with pytest.raises(InternalError), store.transaction() as tx:
        tx.insert_key(key, version)
    assert store.get_key(TENANT, "k1") is None


def test_versions_round_trip_and_list_newest_first(store: Store) -> None:
    key = insert(store, "k1")
    v2 = KeyVersion(
        "k1-v2", "k1", TENANT, 2, T0 + timedelta(hours=2), WrappedKey(b"b2", 24, "kek-2", "AES_KEY_WRAP")
    )
    v3 = KeyVersion("k1-v3", "k1", TENANT, 3, T0 + timedelta(hours=3), WrappedKey(b"b3", 32, "kek-2"))
    with store.transaction() as tx:
        tx.add_version(v3)
        tx.add_version(v2)

    versions = store.list_versions(TENANT, "k1")
    assert [v.number for v in versions] == [3, 2, 1]
    assert versions[0] == v3 and versions[1] == v2
    assert versions[2].id == key.current_version_id
    assert store.get_version(TENANT, "k1-v2") == v2
    assert store.get_version(TENANT, "missing") is None


def test_a_rotation_is_a_new_version_plus_a_key_update(store: Store) -> None:
    key = insert(store, "k1")
    v2 = KeyVersion("k1-v2", "k1", TENANT, 2, T0 + timedelta(hours=2), WrappedKey(b"b2", 32, "kek-1"))
    with store.transaction() as tx:
        tx.add_version(v2)
        key.current_version_id = v2.id
        key.last_rotated_at = v2.created_at
        tx.update_key(key)

    got = store.get_key(TENANT, "k1")
    assert got is not None
    assert got.current_version_id == "k1-v2"
    assert got.last_rotated_at == v2.created_at


def test_a_version_number_taken_concurrently_is_a_conflict(store: Store) -> None:
    insert(store, "k1")
    racer = KeyVersion("k1-other", "k1", TENANT, 1, T0, WrappedKey(b"x", 32, "kek-1"))
    with pytest.raises(Conflict) as err, store.transaction() as tx:
        tx.add_version(racer)
    assert err.value.reason == Reason.CONCURRENT_UPDATE


def test_a_version_for_a_missing_key_is_not_found(store: Store) -> None:
    orphan = KeyVersion("v", "nope", TENANT, 1, T0, WrappedKey(b"x", 32, "kek-1"))
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.add_version(orphan)
    assert err.value.reason == Reason.KEY_NOT_FOUND


def test_import_token_round_trips_and_updates(store: Store) -> None:
    token = make_token()
    with store.transaction() as tx:
        assert tx.put_import_token(token) is None
    assert store.get_import_token(TENANT) == token

    token.remaining_retrievals = 2
    with store.transaction() as tx:
        tx.update_import_token(token)
    assert store.get_import_token(TENANT) == token

    with store.transaction() as tx:
        tx.delete_import_token(TENANT, token.id)
    assert store.get_import_token(TENANT) is None


def test_updating_a_missing_import_token_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.update_import_token(make_token())
    assert err.value.reason == Reason.IMPORT_TOKEN_NOT_FOUND


def test_deleting_a_token_that_was_already_replaced_leaves_the_new_one(store: Store) -> None:
    old, new = make_token(token_id="old"), make_token(token_id="new")
    with store.transaction() as tx:
        tx.put_import_token(old)
        tx.put_import_token(new)
    with store.transaction() as tx:
        tx.delete_import_token(TENANT, "old")  # the sweeper, late
    assert store.get_import_token(TENANT) == new


def test_a_new_import_token_replaces_and_returns_the_old_one(store: Store) -> None:
    first, second = make_token(token_id="first"), make_token(token_id="second")
    with store.transaction() as tx:
        assert tx.put_import_token(first) is None
    with store.transaction() as tx:
        assert tx.put_import_token(second) == first
    assert store.get_import_token(TENANT) == second


def test_a_rolled_back_token_replacement_keeps_the_old_token(store: Store) -> None:
    first = make_token(token_id="first")
    with store.transaction() as tx:
        tx.put_import_token(first)
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.put_import_token(make_token(token_id="second"))
        raise RuntimeError("HSM keypair generation failed")
    assert store.get_import_token(TENANT) == first


def test_expired_tokens_are_listed_across_tenants_strictly_before_the_cutoff(store: Store) -> None:
    cutoff = T0 + timedelta(hours=1)
    with store.transaction() as tx:
        tx.put_import_token(make_token(TENANT, token_id="a", expires_at=cutoff - timedelta(minutes=5)))
        tx.put_import_token(make_token(OTHER, token_id="b", expires_at=cutoff - timedelta(minutes=10)))
        tx.ensure_tenant("tenant-c", T0)
        tx.put_import_token(make_token("tenant-c", token_id="c", expires_at=cutoff))

    expired = store.list_import_tokens_expired_before(cutoff)
    assert [t.id for t in expired] == ["b", "a"]
    assert store.list_import_tokens_expired_before(T0) == []


def test_key_rings_round_trip_and_every_tenant_starts_with_the_default_ring(store: Store) -> None:
    ring = KeyRing(id="payments", tenant=TENANT, created_at=T0, created_by="erin")
    with store.transaction() as tx:
        tx.create_key_ring(ring)

    rings = store.list_key_rings(TENANT)
    assert [r.id for r in rings] == [DEFAULT_KEY_RING, "payments"]
    assert rings[0] == KeyRing(id=DEFAULT_KEY_RING, tenant=TENANT, created_at=T0, created_by=None)
    assert rings[1] == ring
    assert [r.id for r in store.list_key_rings(OTHER)] == [DEFAULT_KEY_RING]


def test_a_duplicate_key_ring_already_exists(store: Store) -> None:
    ring = KeyRing(id="payments", tenant=TENANT, created_at=T0, created_by="erin")
    with store.transaction() as tx:
        tx.create_key_ring(ring)
    with pytest.raises(AlreadyExists), store.transaction() as tx:
        tx.create_key_ring(ring)
    with store.transaction() as tx:  # same id in another tenant is fine
        tx.create_key_ring(replace(ring, tenant=OTHER))


def test_a_key_ring_holding_keys_cannot_be_deleted(store: Store) -> None:
    with store.transaction() as tx:
        tx.create_key_ring(KeyRing(id="payments", tenant=TENANT, created_at=T0, created_by="erin"))
    insert(store, "k1", key_ring="payments")

    with pytest.raises(Conflict) as err, store.transaction() as tx:
        tx.delete_key_ring(TENANT, "payments")
    assert err.value.reason == Reason.KEY_RING_NOT_EMPTY

    with store.transaction() as tx:
        tx.purge_key(TENANT, "k1")
        tx.delete_key_ring(TENANT, "payments")
    assert [r.id for r in store.list_key_rings(TENANT)] == [DEFAULT_KEY_RING]

    with pytest.raises(NotFound) as err2, store.transaction() as tx:
        tx.delete_key_ring(TENANT, "payments")
    assert err2.value.reason == Reason.KEY_RING_NOT_FOUND


def test_a_key_needs_an_existing_key_ring(store: Store) -> None:
    key, version = make_key("k1", key_ring="nope")
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.insert_key(key, version)
    assert err.value.reason == Reason.KEY_RING_NOT_FOUND

    key = insert(store, "k2")
    key.key_ring = "nope"
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.update_key(key)
    assert err.value.reason == Reason.KEY_RING_NOT_FOUND


def test_instance_policies_round_trip_and_replacing_keeps_creation(store: Store) -> None:
    first = InstancePolicy("dualAuthDelete", {"enabled": True}, T0, "frank", T0, "frank")
    other = InstancePolicy(
        "allowedNetwork",
        {"enabled": True, "attributes": {"allowed_network": "private-only"}},
        T0,
        "frank",
        T0,
        "frank",
    )
    later = T0 + timedelta(days=1)
    with store.transaction() as tx:
        tx.put_instance_policy(TENANT, first)
        tx.put_instance_policy(TENANT, other)
    with store.transaction() as tx:
        tx.put_instance_policy(
            TENANT, InstancePolicy("dualAuthDelete", {"enabled": False}, later, "gina", later, "gina")
        )

    assert store.get_instance_policies(TENANT) == [
        other,
        InstancePolicy("dualAuthDelete", {"enabled": False}, T0, "frank", later, "gina"),
    ]
    assert store.get_instance_policies(OTHER) == []


def test_ensure_tenant_is_idempotent(store: Store) -> None:
    with store.transaction() as tx:
        tx.ensure_tenant(TENANT, T0 + timedelta(days=1))
        tx.ensure_tenant(TENANT, T0 + timedelta(days=2))
    assert [r.id for r in store.list_key_rings(TENANT)] == [DEFAULT_KEY_RING]


def test_writing_for_an_unregistered_tenant_is_a_bug_not_a_user_error(store: Store) -> None:
    with pytest.raises(InternalError), store.transaction() as tx:
        tx.put_import_token(make_token("never-ensured"))


# --- tenant isolation --------------------------------------------------------------------------


def test_the_same_key_id_lives_independently_in_two_tenants(store: Store) -> None:
    a = insert(store, "shared", tenant=TENANT, name="in-a")
    b = insert(store, "shared", tenant=OTHER, name="in-b")

    assert store.get_key(TENANT, "shared") == a
    assert store.get_key(OTHER, "shared") == b

    a.description = "changed in a"
    with store.transaction() as tx:
        tx.update_key(a)
    assert store.get_key(OTHER, "shared") == b

    with store.transaction() as tx:
        tx.purge_key(TENANT, "shared")
    assert store.get_key(TENANT, "shared") is None
    assert store.get_key(OTHER, "shared") == b
    assert [v.id for v in store.list_versions(OTHER, "shared")] == [b.current_version_id]


def test_lookups_never_cross_tenants(store: Store) -> None:
    key = insert(store, "k1", aliases=["mine"])
    with store.transaction() as tx:
        tx.put_import_token(make_token(TENANT))

    assert store.get_key(OTHER, "k1") is None
    assert store.get_key_by_alias(OTHER, "mine") is None
    assert store.get_key_by_alias(TENANT, "mine") == key
    assert store.get_version(OTHER, key.current_version_id) is None
    assert store.list_versions(OTHER, "k1") == []
    assert store.list_keys(OTHER, KeyQuery()) == []
    assert store.count_keys(OTHER, KeyQuery()) == 0
    assert store.get_import_token(OTHER) is None
    with store.transaction() as tx:
        assert tx.remove_alias(OTHER, "k1", "mine") is False
        with pytest.raises(NotFound):
            tx.purge_key(OTHER, "k1")
    assert store.get_key_by_alias(TENANT, "mine") == key


def test_the_same_alias_may_exist_in_two_tenants(store: Store) -> None:
    a = insert(store, "ka", tenant=TENANT, aliases=["payroll"])
    b = insert(store, "kb", tenant=OTHER, aliases=["payroll"])
    assert store.get_key_by_alias(TENANT, "payroll") == a
    assert store.get_key_by_alias(OTHER, "payroll") == b


# --- aliases -----------------------------------------------------------------------------------


def test_aliases_are_unique_per_tenant(store: Store) -> None:
    insert(store, "k1", aliases=["payroll"])
    insert(store, "k2")

    with pytest.raises(AlreadyExists) as err, store.transaction() as tx:
        tx.add_alias(TENANT, "k2", "payroll")
    assert err.value.reason == Reason.ALIAS_NOT_UNIQUE

    key, version = make_key("k3", aliases=["payroll"])
    with pytest.raises(AlreadyExists) as err, store.transaction() as tx:
        tx.insert_key(key, version)
    assert err.value.reason == Reason.ALIAS_NOT_UNIQUE


def test_insert_key_is_all_or_nothing_even_when_the_caller_swallows_the_error(store: Store) -> None:
    insert(store, "k1", aliases=["taken"])
    key, version = make_key("k2", aliases=["fresh", "taken"])
    with store.transaction() as tx:
        with pytest.raises(AlreadyExists):
            tx.insert_key(key, version)
        tx.add_alias(TENANT, "k1", "later")  # the caller carries on, and commits

    assert store.get_key_by_alias(TENANT, "later") is not None
    assert store.get_key(TENANT, "k2") is None
    assert store.get_version(TENANT, version.id) is None
    assert store.get_key_by_alias(TENANT, "fresh") is None


def test_a_duplicate_key_id_already_exists(store: Store) -> None:
    insert(store, "k1")
    key, version = make_key("k1")
    with pytest.raises(AlreadyExists), store.transaction() as tx:
        tx.insert_key(key, version)


def test_aliases_come_back_in_creation_order(store: Store) -> None:
    insert(store, "k1", aliases=["zulu", "alpha"])
    with store.transaction() as tx:
        tx.add_alias(TENANT, "k1", "mike")
        tx.add_alias(TENANT, "k1", "bravo")

    key = store.get_key(TENANT, "k1")
    assert key is not None and key.aliases == ["zulu", "alpha", "mike", "bravo"]
    assert store.list_keys(TENANT, KeyQuery())[0].aliases == ["zulu", "alpha", "mike", "bravo"]


def test_removing_aliases(store: Store) -> None:
    insert(store, "k1", aliases=["a", "b"])
    with store.transaction() as tx:
        assert tx.remove_alias(TENANT, "k1", "a") is True
        assert tx.remove_alias(TENANT, "k1", "a") is False
        tx.add_alias(TENANT, "k1", "c")
    key = store.get_key(TENANT, "k1")
    assert key is not None and key.aliases == ["b", "c"]
    assert store.get_key_by_alias(TENANT, "a") is None


def test_an_alias_for_a_missing_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.add_alias(TENANT, "nope", "alias")
    assert err.value.reason == Reason.KEY_NOT_FOUND


def test_update_key_leaves_aliases_alone(store: Store) -> None:
    key = insert(store, "k1", aliases=["keep"])
    key.aliases = []
    key.name = "renamed"
    with store.transaction() as tx:
        tx.update_key(key)
    got = store.get_key(TENANT, "k1")
    assert got is not None and got.aliases == ["keep"] and got.name == "renamed"


def test_purge_removes_the_key_its_versions_and_its_aliases(store: Store) -> None:
    key = insert(store, "k1", aliases=["gone"])
    with store.transaction() as tx:
        tx.add_version(KeyVersion("k1-v2", "k1", TENANT, 2, T0, WrappedKey(b"x", 32, "kek-1")))
        tx.purge_key(TENANT, "k1")

    assert store.get_key(TENANT, "k1") is None
    assert store.list_versions(TENANT, "k1") == []
    assert store.get_version(TENANT, key.current_version_id) is None
    assert store.get_key_by_alias(TENANT, "gone") is None
    insert(store, "k2", aliases=["gone"])  # the alias is free again


# --- optimistic concurrency --------------------------------------------------------------------


def test_update_key_bumps_the_revision(store: Store) -> None:
    key = insert(store, "k1")
    key.state = KeyState.SUSPENDED
    with store.transaction() as tx:
        tx.update_key(key)
    assert key.revision == 2
    got = store.get_key(TENANT, "k1")
    assert got is not None and got.revision == 2 and got.state == KeyState.SUSPENDED


def test_two_updates_from_the_same_revision_the_second_conflicts(store: Store) -> None:
    insert(store, "k1")
    first, second = store.get_key(TENANT, "k1"), store.get_key(TENANT, "k1")
    assert first is not None and second is not None

    first.description = "first wins"
    with store.transaction() as tx:
        tx.update_key(first)

    second.description = "second loses"
    with pytest.raises(Conflict) as err, store.transaction() as tx:
        tx.update_key(second)
    assert err.value.reason == Reason.CONCURRENT_UPDATE

    got = store.get_key(TENANT, "k1")
    assert got is not None and got.description == "first wins" and got.revision == 2


def test_updating_a_missing_key_is_not_found(store: Store) -> None:
    key, _ = make_key("ghost")
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.update_key(key)
    assert err.value.reason == Reason.KEY_NOT_FOUND


# --- transactions ------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_an_exception_inside_a_transaction_leaves_nothing_behind(store: Store) -> None:
    key, version = make_key("k1", aliases=["a1"])
    with pytest.raises(Boom), store.transaction() as tx:
        tx.insert_key(key, version)
        assert tx.get_key(TENANT, "k1") is not None  # visible inside
        raise Boom

    assert store.get_key(TENANT, "k1") is None
    assert store.get_version(TENANT, version.id) is None
    assert store.get_key_by_alias(TENANT, "a1") is None
    assert store.count_keys(TENANT, KeyQuery()) == 0


def test_a_failed_rotation_keeps_the_old_current_version(store: Store) -> None:
    key = insert(store, "k1")
    with pytest.raises(Boom), store.transaction() as tx:
        tx.add_version(KeyVersion("k1-v2", "k1", TENANT, 2, T0, WrappedKey(b"x", 32, "kek-1")))
        key.current_version_id = "k1-v2"
        tx.update_key(key)
        raise Boom
    got = store.get_key(TENANT, "k1")
    assert got is not None and got.current_version_id == "k1-v1" and got.revision == 1
    assert [v.number for v in store.list_versions(TENANT, "k1")] == [1]


def test_reads_outside_a_transaction_see_only_committed_data(store: Store) -> None:
    seen: list[Key | None] = []
    reader = threading.Thread(target=lambda: seen.append(store.get_key(TENANT, "k1")))
    with store.transaction() as tx:
        key, version = make_key("k1")
        tx.insert_key(key, version)
        reader.start()
        reader.join(timeout=0.5)
        # A backend may either answer from the last committed state (WAL) or make the reader
        # wait for the commit (a single serialised connection); it must never show the
        # uncommitted key to another thread.
        read_during_transaction = not reader.is_alive()
    reader.join(timeout=10)
    assert seen == ([None] if read_during_transaction else [key])
    assert store.get_key(TENANT, "k1") == key


def test_a_transaction_object_is_dead_after_its_block(store: Store) -> None:
    with store.transaction() as tx:
        pass
    with pytest.raises(InternalError):
        tx.get_key(TENANT, "k1")


# --- listing -----------------------------------------------------------------------------------


@pytest.fixture
def catalogue(store: Store) -> Store:
    """k01..k12 in TENANT: mixed states, root/standard, two rings; plus noise in OTHER."""
    with store.transaction() as tx:
        tx.create_key_ring(KeyRing(id="ring2", tenant=TENANT, created_at=T0, created_by="x"))
    states = [KeyState.ACTIVE, KeyState.SUSPENDED, KeyState.DEACTIVATED, KeyState.DESTROYED]
    # Insert out of order to prove the listing sorts by id.
    for n in [7, 3, 12, 1, 9, 5, 11, 2, 8, 4, 10, 6]:
        insert(
            store,
            f"k{n:02d}",
            state=states[n % 4],
            extractable=n % 2 == 0,
            key_ring="ring2" if n > 8 else DEFAULT_KEY_RING,
        )
    insert(store, "k00", tenant=OTHER)
    return store


def ids(keys: list[Key]) -> list[str]:
    return [k.id for k in keys]


def test_list_keys_sorts_by_id_within_the_tenant(catalogue: Store) -> None:
    assert ids(catalogue.list_keys(TENANT, KeyQuery())) == [f"k{n:02d}" for n in range(1, 13)]
    assert catalogue.count_keys(TENANT, KeyQuery()) == 12


def test_list_keys_filters_by_state(catalogue: Store) -> None:
    q = KeyQuery(states=[KeyState.ACTIVE, KeyState.DESTROYED])
    assert ids(catalogue.list_keys(TENANT, q)) == ["k03", "k04", "k07", "k08", "k11", "k12"]
    assert catalogue.count_keys(TENANT, q) == 6
    assert catalogue.list_keys(TENANT, KeyQuery(states=[])) == []
    assert catalogue.count_keys(TENANT, KeyQuery(states=[])) == 0


def test_list_keys_filters_by_extractable(catalogue: Store) -> None:
    roots = KeyQuery(extractable=False)
    assert ids(catalogue.list_keys(TENANT, roots)) == ["k01", "k03", "k05", "k07", "k09", "k11"]
    assert catalogue.count_keys(TENANT, KeyQuery(extractable=True)) == 6


def test_list_keys_filters_by_key_ring(catalogue: Store) -> None:
    q = KeyQuery(key_ring="ring2")
    assert ids(catalogue.list_keys(TENANT, q)) == ["k09", "k10", "k11", "k12"]
    assert catalogue.count_keys(TENANT, KeyQuery(key_ring="nope")) == 0


def test_list_keys_combines_filters(catalogue: Store) -> None:
    q = KeyQuery(states=[KeyState.ACTIVE, KeyState.DEACTIVATED], extractable=True, key_ring="ring2")
    assert ids(catalogue.list_keys(TENANT, q)) == ["k10", "k12"]
    assert catalogue.count_keys(TENANT, q) == 2


def test_list_keys_refuses_negative_paging_instead_of_listing_everything(catalogue: Store) -> None:
    with pytest.raises(InvalidInput):
        catalogue.list_keys(TENANT, KeyQuery(limit=-1))
    with pytest.raises(InvalidInput):
        catalogue.list_keys(TENANT, KeyQuery(offset=-1))


def test_list_keys_pages_with_limit_and_offset_while_count_ignores_them(catalogue: Store) -> None:
    assert ids(catalogue.list_keys(TENANT, KeyQuery(limit=5))) == ["k01", "k02", "k03", "k04", "k05"]
    assert ids(catalogue.list_keys(TENANT, KeyQuery(limit=5, offset=10))) == ["k11", "k12"]
    assert catalogue.list_keys(TENANT, KeyQuery(offset=12)) == []
    assert catalogue.list_keys(TENANT, KeyQuery(limit=0)) == []
    q = KeyQuery(extractable=False, limit=2, offset=1)
    assert ids(catalogue.list_keys(TENANT, q)) == ["k03", "k05"]
    assert catalogue.count_keys(TENANT, q) == 6


# --- key policy records (migration 002) --------------------------------------------------------


def policy_record(key_id: str = "k1", policy_type: str = "rotation", **fields: object) -> KeyPolicyRecord:
    record = KeyPolicyRecord(
        tenant=TENANT,
        key_id=key_id,
        policy_type=policy_type,
        id=f"pol-{key_id}-{policy_type}",
        created_at=T0,
        created_by="alice",
        updated_at=T0,
        updated_by="alice",
    )
    return replace(record, **fields)  # type: ignore[arg-type]


def test_key_policy_records_round_trip_in_type_order(store: Store) -> None:
    insert(store, "k1")
    rotation, dual = policy_record(), policy_record(policy_type="dualAuthDelete")
    with store.transaction() as tx:
        tx.put_key_policy_record(rotation)
        tx.put_key_policy_record(dual)
    assert store.get_key_policy_records(TENANT, "k1") == [dual, rotation]
    assert store.get_key_policy_records(TENANT, "k2") == []


def test_replacing_a_key_policy_record_keeps_its_id_and_creation(store: Store) -> None:
    insert(store, "k1")
    later = T0 + timedelta(hours=3)
    with store.transaction() as tx:
        tx.put_key_policy_record(policy_record())
    with store.transaction() as tx:
        tx.put_key_policy_record(
            policy_record(id="other", created_at=later, created_by="bob", updated_at=later, updated_by="bob")
        )
    assert store.get_key_policy_records(TENANT, "k1") == [policy_record(updated_at=later, updated_by="bob")]


def test_a_key_policy_record_needs_its_key_in_the_same_tenant(store: Store) -> None:
    insert(store, "k1", tenant=OTHER)
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.put_key_policy_record(policy_record())
    assert err.value.reason == Reason.KEY_NOT_FOUND
    with store.transaction() as tx:
        tx.put_key_policy_record(policy_record(tenant=OTHER))
    assert store.get_key_policy_records(TENANT, "k1") == []
    assert len(store.get_key_policy_records(OTHER, "k1")) == 1


# --- registrations (migration 002) -------------------------------------------------------------

CRN = "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:inst-1:bucket:b1"


def registration(key_id: str = "k1", crn: str = CRN, **fields: object) -> Registration:
    reg = Registration(
        tenant=TENANT,
        key_id=key_id,
        resource_crn=crn,
        prevent_key_deletion=False,
        key_version_id=f"{key_id}-v1",
        key_version_created_at=T0,
        created_at=T0,
        created_by="svc",
        updated_at=T0,
        updated_by="svc",
    )
    return replace(reg, **fields)  # type: ignore[arg-type]


def add_registrations(store: Store, *regs: Registration) -> None:
    with store.transaction() as tx:
        for reg in regs:
            tx.insert_registration(reg)


def test_a_registration_with_every_field_round_trips(store: Store) -> None:
    insert(store, "k1")
    reg = registration(
        description="bucket b1",
        registration_metadata='{"any": "thing"}',
        prevent_key_deletion=True,
        state=RegistrationState.SUSPENDED,
    )
    add_registrations(store, reg)
    assert store.get_registration(TENANT, "k1", CRN) == reg
    assert store.get_registration(TENANT, "k1", CRN + "x") is None
    assert store.get_registration(OTHER, "k1", CRN) is None


def test_a_duplicate_registration_already_exists_and_a_missing_key_is_not_found(store: Store) -> None:
    insert(store, "k1")
    insert(store, "k2")
    add_registrations(store, registration())
    with pytest.raises(AlreadyExists), store.transaction() as tx:
        tx.insert_registration(registration(description="different"))
    add_registrations(store, registration("k2"))  # the same resource with another key is fine
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.insert_registration(registration("nope"))
    assert err.value.reason == Reason.KEY_NOT_FOUND
    with pytest.raises(NotFound), store.transaction() as tx:  # the key lives in TENANT only
        tx.insert_registration(registration(tenant=OTHER))


def test_updating_a_registration_keeps_its_identity_and_creation(store: Store) -> None:
    insert(store, "k1")
    add_registrations(store, registration())
    later = T0 + timedelta(days=1)
    changed = registration(
        description="now described",
        prevent_key_deletion=True,
        key_version_id="k1-v2",
        key_version_created_at=later,
        state=RegistrationState.DEACTIVATED,
        updated_at=later,
        updated_by="other-svc",
    )
    with store.transaction() as tx:
        tx.update_registration(replace(changed, created_at=later, created_by="intruder"))
    assert store.get_registration(TENANT, "k1", CRN) == changed


def test_updating_a_missing_registration_is_not_found(store: Store) -> None:
    insert(store, "k1")
    with pytest.raises(NotFound) as err, store.transaction() as tx:
        tx.update_registration(registration())
    assert err.value.reason == Reason.REGISTRATION_NOT_FOUND


def test_deleting_a_registration_says_whether_it_existed(store: Store) -> None:
    insert(store, "k1")
    add_registrations(store, registration())
    with store.transaction() as tx:
        assert tx.delete_registration(OTHER, "k1", CRN) is False
        assert tx.delete_registration(TENANT, "k1", CRN) is True
        assert tx.delete_registration(TENANT, "k1", CRN) is False
    assert store.get_registration(TENANT, "k1", CRN) is None


@pytest.fixture
def registered(store: Store) -> Store:
    """k1 (default ring) and k2 (ring2) in TENANT with registrations in creation order; noise in OTHER."""
    with store.transaction() as tx:
        tx.create_key_ring(KeyRing(id="ring2", tenant=TENANT, created_at=T0, created_by="x"))
    insert(store, "k1")
    insert(store, "k2", key_ring="ring2")
    insert(store, "k1", tenant=OTHER)
    base = "crn:v1:bluemix:public:cos:global:a/acct:"
    add_registrations(
        store,
        registration("k2", base + "inst-1:bucket:b2", created_at=T0 + timedelta(seconds=1)),
        registration("k1", base + "inst-1:bucket:b1", prevent_key_deletion=True),
        registration("k1", base + "INST-1:bucket:b3", created_at=T0 + timedelta(seconds=2)),
        registration(
            "k1",
            base + "inst-2:bucket:b4",
            created_at=T0 + timedelta(seconds=3),
            state=RegistrationState.SUSPENDED,
        ),
        registration("k1", base + "inst-1:bucket:b1", tenant=OTHER),
    )
    return store


def crns(regs: list[Registration]) -> list[str]:
    return [r.resource_crn.rsplit(":", 1)[1] for r in regs]


def test_list_registrations_shows_active_ones_oldest_first_within_the_tenant(registered: Store) -> None:
    assert crns(registered.list_registrations(TENANT, RegistrationQuery())) == ["b1", "b2", "b3"]
    assert crns(registered.list_registrations(OTHER, RegistrationQuery())) == ["b1"]
    everything = RegistrationQuery(states=None)
    assert crns(registered.list_registrations(TENANT, everything)) == ["b1", "b2", "b3", "b4"]
    suspended = RegistrationQuery(states=[RegistrationState.SUSPENDED])
    assert crns(registered.list_registrations(TENANT, suspended)) == ["b4"]
    assert registered.list_registrations(TENANT, RegistrationQuery(states=[])) == []


def test_list_registrations_filters_by_key_ring_prefix_and_retention(registered: Store) -> None:
    def listed(**query: object) -> list[str]:
        return crns(registered.list_registrations(TENANT, RegistrationQuery(**query)))  # type: ignore[arg-type]

    assert listed(key_id="k1") == ["b1", "b3"]
    assert listed(key_ring="ring2") == ["b2"]
    assert listed(key_ring=DEFAULT_KEY_RING) == ["b1", "b3"]
    assert listed(prevent_key_deletion=True) == ["b1"]
    assert listed(prevent_key_deletion=False) == ["b2", "b3"]
    # A literal, case-sensitive prefix: % and _ mean nothing, INST-1 is not inst-1.
    assert listed(crn_prefix="crn:v1:bluemix:public:cos:global:a/acct:inst-1") == ["b1", "b2"]
    assert listed(crn_prefix="crn:v1:bluemix:public:cos:global:a/acct:INST") == ["b3"]
    assert listed(crn_prefix="crn:v1:bluemix:public:cos:global:a/acct:inst%") == []
    assert listed(crn_prefix="crn:v1:bluemix:public:cos:global:a_acct") == []
    assert listed(key_id="k1", crn_prefix="crn:v1:bluemix:public:cos:global:a/acct:inst-1") == ["b1"]


def test_purge_takes_policy_records_and_registrations_with_the_key(registered: Store) -> None:
    with registered.transaction() as tx:
        tx.put_key_policy_record(policy_record())
        tx.purge_key(TENANT, "k1")
    assert registered.get_key_policy_records(TENANT, "k1") == []
    assert crns(registered.list_registrations(TENANT, RegistrationQuery(states=None))) == ["b2"]
    assert crns(registered.list_registrations(OTHER, RegistrationQuery())) == ["b1"]


# --- migrations and lifecycle ------------------------------------------------------------------


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    found = migrations.load_migrations()
    assert found[0].version == 1 and found[0].name == "initial"
    assert [m.version for m in found] == list(range(1, len(found) + 1))


def test_migrate_is_idempotent_and_reports_the_schema_version(unmigrated: Store) -> None:
    assert unmigrated.schema_version() == 0
    unmigrated.migrate()
    latest = migrations.load_migrations()[-1].version
    assert unmigrated.schema_version() == latest
    unmigrated.migrate()
    assert unmigrated.schema_version() == latest


def test_migrate_refuses_a_database_newer_than_the_code(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "m.db")
    s.migrate()
    raw = sqlite3.connect(tmp_path / "m.db")
    raw.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (999, 'future', 'x')")
    raw.commit()
    raw.close()
    with pytest.raises(InternalError):
        s.migrate()
    s.close()


def test_a_file_backed_store_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "persist.db"
    s = SqliteStore(path)
    s.migrate()
    with s.transaction() as tx:
        tx.ensure_tenant(TENANT, T0)
    key = insert(s, "k1", aliases=["kept"])
    s.close()

    reopened = SqliteStore(path)
    reopened.migrate()
    assert reopened.schema_version() == migrations.load_migrations()[-1].version
    assert reopened.get_key(TENANT, "k1") == key
    assert reopened.get_key_by_alias(TENANT, "kept") == key
    reopened.close()


def test_sqlite_file_store_uses_wal(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "wal.db")
    s.migrate()
    raw = sqlite3.connect(tmp_path / "wal.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    s.close()


def test_a_closed_store_raises_domain_errors_only(store: Store) -> None:
    store.ping()
    store.close()
    with pytest.raises(InternalError):
        store.get_key(TENANT, "k1")
    with pytest.raises(InternalError), store.transaction():
        pass
    with pytest.raises(InternalError):
        store.ping()
    store.close()  # twice is fine


def test_an_unmigrated_store_raises_domain_errors_only(unmigrated: Store) -> None:
    with pytest.raises(InternalError):
        unmigrated.get_key(TENANT, "k1")
    with pytest.raises(InternalError), unmigrated.transaction() as tx:
        tx.ensure_tenant(TENANT, T0)


def test_database_errors_never_quote_row_values(store: Store) -> None:
    """PostgreSQL's DETAIL ("Failing row contains (...)") would; the store keeps only the gist."""
    key, version = make_key("k1", name=None, description="row-value-marker")
    with pytest.raises(InternalError) as err, store.transaction() as tx:
        tx.insert_key(key, version)
    assert "row-value-marker" not in str(err.value)
    assert "wrapped" not in str(err.value)


def test_store_reads_inside_a_transaction_see_its_own_writes(store: Store) -> None:
    with store.transaction() as tx:
        key, version = make_key("k1", aliases=["a1"])
        tx.insert_key(key, version)
        assert store.get_key(TENANT, "k1") == key
        assert store.get_key_by_alias(TENANT, "a1") == key
    assert store.get_key(TENANT, "k1") == key


def test_nested_transactions_are_refused(store: Store) -> None:
    with store.transaction() as tx:
        tx.ensure_tenant("tenant-c", T0)
        with pytest.raises(InternalError), store.transaction():
            pass
    assert [r.id for r in store.list_key_rings("tenant-c")] == [DEFAULT_KEY_RING]


def test_text_sorts_byte_by_byte_whatever_the_database_locale(store: Store) -> None:
    """SQLite compares text bytewise; PostgreSQL must too (the test databases use ICU en-US)."""
    with store.transaction() as tx:
        for ring in ("Zeta", "alpha", "_x", "b-1", "b1"):
            tx.create_key_ring(KeyRing(id=ring, tenant=TENANT, created_at=T0, created_by="x"))
    assert [r.id for r in store.list_key_rings(TENANT)] == sorted(
        ["Zeta", "alpha", "_x", "b-1", "b1", DEFAULT_KEY_RING], key=lambda text: text.encode()
    )
    for key_id in ("b", "B", "a-2", "a1", "_"):
        insert(store, key_id)
    assert [k.id for k in store.list_keys(TENANT, KeyQuery())] == ["B", "_", "a-2", "a1", "b"]
    assert [k.id for k in store.list_keys(TENANT, KeyQuery(limit=2, offset=1))] == ["_", "a-2"]


# --- migrations: dialects and PostgreSQL's migration lock --------------------------------------


def test_migrations_render_unchanged_for_sqlite() -> None:
    for migration in migrations.load_migrations():
        assert migrations.render(migration.sql, migrations.Dialect.SQLITE) == migration.sql


def test_postgres_rendering_renames_types_only_outside_comments_literals_and_identifiers() -> None:
    sql = (
        "-- a TEXT column and a BLOB\n"
        "CREATE TABLE t (text TEXT NOT NULL, b BLOB, c TEXT DEFAULT 'TEXT and BLOB', \"TEXT\" INTEGER);"
        " /* BLOB */"
    )
    assert migrations.render(sql, migrations.Dialect.POSTGRESQL) == (
        "-- a TEXT column and a BLOB\n"
        'CREATE TABLE t (text TEXT COLLATE "C" NOT NULL, b BYTEA, c TEXT COLLATE "C" '
        "DEFAULT 'TEXT and BLOB', \"TEXT\" INTEGER); /* BLOB */"
    )
    for migration in migrations.load_migrations():
        sqlite_statements = migration.statements(migrations.Dialect.SQLITE)
        postgres_statements = migration.statements(migrations.Dialect.POSTGRESQL)
        assert len(sqlite_statements) == len(postgres_statements)


def test_postgres_two_daemons_migrating_at_once_both_succeed(postgres_url: str) -> None:
    """Without the advisory lock the second CREATE TABLE would fail (or apply 001 twice)."""
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    try:
        _run_threads(len(stores), lambda i: stores[i].migrate())
        latest = migrations.load_migrations()[-1].version
        assert all(s.schema_version() == latest for s in stores)
        with psycopg.connect(postgres_url) as conn:
            applied = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [row[0] for row in applied] == list(range(1, latest + 1))
    finally:
        for s in stores:
            s.close()


def test_postgres_migrate_refuses_a_database_newer_than_the_code(postgres_url: str) -> None:
    s = PostgresStore(postgres_url)
    try:
        s.migrate()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (999, 'future', 'x')")
        with pytest.raises(InternalError):
            s.migrate()
    finally:
        s.close()


def test_postgres_schema_uses_bytea_and_byte_order_text(postgres_url: str) -> None:
    s = PostgresStore(postgres_url)
    try:
        s.migrate()
        with psycopg.connect(postgres_url) as conn:
            rows = conn.execute(
                "SELECT table_name, column_name, data_type, collation_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND data_type IN ('bytea', 'text')"
            ).fetchall()
    finally:
        s.close()
    assert {(t, c) for t, c, kind, _ in rows if kind == "bytea"} == {
        ("key_versions", "wrapped_blob"),
        ("import_tokens", "nonce"),
        ("import_tokens", "public_key_der"),
        ("external_keys", "material_check"),
        ("push_connections", "sealed_secret"),  # 005
    }
    assert {collation for _, _, kind, collation in rows if kind == "text"} == {"C"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:s3cret@db:5432/kms", "postgresql://u:***@db:5432/kms"),
        (
            "postgres://u@db/kms?sslmode=require&password=s3cret",
            "postgres://u@db/kms?sslmode=require&password=***",
        ),
        ("postgresql://u:s3cret@db1:5432,db2:5432/kms", "postgresql://u:***@db1:5432,db2:5432/kms"),
        ("host=db password='s3 cret' user=u", "host=db password=*** user=u"),
        ("postgresql://db/kms", "postgresql://db/kms"),
    ],
)
def test_postgres_urls_are_redacted_for_messages(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_postgres_connection_errors_never_show_the_password() -> None:
    with pytest.raises(InternalError) as err:
        PostgresStore("postgresql://someone:hunter2-secret@127.0.0.1:1/nowhere?connect_timeout=2", timeout=1)
    assert "hunter2-secret" not in str(err.value)
    assert "someone:***@127.0.0.1:1" in str(err.value)


# --- threads -----------------------------------------------------------------------------------


def _run_threads(n: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def runner(i: int) -> None:
        try:
            start.wait()
            work(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_eight_threads_inserting_and_reading_concurrently(store: Store) -> None:
    per_thread = 25

    def work(i: int) -> None:
        for j in range(per_thread):
            key = insert(store, f"t{i}-k{j:02d}", aliases=[f"t{i}-a{j}"])
            assert store.get_key(TENANT, key.id) == key
            assert store.get_key_by_alias(TENANT, f"t{i}-a{j}") == key
            store.list_keys(TENANT, KeyQuery(limit=10))
            store.count_keys(TENANT, KeyQuery())

    _run_threads(8, work)
    assert store.count_keys(TENANT, KeyQuery()) == 8 * per_thread


def test_concurrent_optimistic_updates_lose_nothing_when_callers_retry(store: Store) -> None:
    insert(store, "counter", description="0")
    per_thread = 10

    def work(_: int) -> None:
        for _ in range(per_thread):
            while True:
                key = store.get_key(TENANT, "counter")
                assert key is not None
                key.description = str(int(key.description or "0") + 1)
                try:
                    with store.transaction() as tx:
                        tx.update_key(key)
                    break
                except Conflict:
                    continue

    _run_threads(8, work)
    final = store.get_key(TENANT, "counter")
    assert final is not None
    assert final.description == str(8 * per_thread)
    assert final.revision == 1 + 8 * per_thread


# --- races between replicas --------------------------------------------------------------------
# Each of these has two "daemons" (`store` and `replica`, separate connections or pools on one
# database) collide on purpose: the first holds its transaction open until the second is
# provably waiting on it (PostgreSQL: a session in this database waits on a lock; SQLite: the
# second writer waits for the write lock), then commits.


@pytest.fixture
def lock_waiter(request: pytest.FixtureRequest, backend: Opener) -> Callable[[], None]:
    """Returns once another transaction is blocked behind the caller's open one."""
    if request.node.callspec.params.get("backend") != "postgres":
        return lambda: time.sleep(0.3)
    url: str = request.getfixturevalue("postgres_url")

    def wait() -> None:
        deadline = time.monotonic() + 10
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                if row is not None and row[0]:
                    return
                time.sleep(0.005)
        raise AssertionError("no session ever waited for a lock: the race did not happen")

    return wait


def _next_version(key: Key, number: int) -> KeyVersion:
    return KeyVersion(
        str(uuid.uuid4()),
        key.id,
        key.tenant,
        number,
        T0 + timedelta(hours=number),
        WrappedKey(b"w", 32, "kek"),
    )


def _race(first: Callable[[threading.Event], None], second: Callable[[], None]) -> None:
    """`first` sets the event once it holds what `second` will collide with."""
    holding = threading.Event()

    def work(i: int) -> None:
        if i == 0:
            first(holding)
        else:
            assert holding.wait(10), "the first transaction never got going"
            second()

    _run_threads(2, work)


def test_two_replicas_rotating_one_key_at_once_one_wins_and_the_other_conflicts(
    store: Store, replica: Store, lock_waiter: Callable[[], None]
) -> None:
    insert(store, "k1")
    mine, theirs = store.get_key(TENANT, "k1"), replica.get_key(TENANT, "k1")
    assert mine is not None and theirs is not None
    winner, loser = _next_version(mine, 2), _next_version(theirs, 2)
    lost: list[Conflict] = []

    def first(holding: threading.Event) -> None:
        with store.transaction() as tx:
            tx.add_version(winner)
            mine.current_version_id = winner.id
            tx.update_key(mine)
            holding.set()
            lock_waiter()

    def second() -> None:
        theirs.current_version_id = loser.id
        with pytest.raises(Conflict) as err, replica.transaction() as tx:
            tx.add_version(loser)
            tx.update_key(theirs)
        lost.append(err.value)

    _race(first, second)
    assert [e.reason for e in lost] == [Reason.CONCURRENT_UPDATE]
    assert [v.id for v in store.list_versions(TENANT, "k1")] == [winner.id, "k1-v1"]
    got = replica.get_key(TENANT, "k1")
    assert got is not None and got.current_version_id == winner.id and got.revision == 2


def test_two_replicas_updating_one_key_at_once_the_later_one_conflicts(
    store: Store, replica: Store, lock_waiter: Callable[[], None]
) -> None:
    insert(store, "k1")
    mine, theirs = store.get_key(TENANT, "k1"), replica.get_key(TENANT, "k1")
    assert mine is not None and theirs is not None
    lost: list[Conflict] = []

    def first(holding: threading.Event) -> None:
        with store.transaction() as tx:
            mine.state = KeyState.SUSPENDED
            tx.update_key(mine)
            holding.set()
            lock_waiter()

    def second() -> None:
        theirs.state = KeyState.DESTROYED
        with pytest.raises(Conflict) as err, replica.transaction() as tx:
            tx.update_key(theirs)
        lost.append(err.value)

    _race(first, second)
    assert [e.reason for e in lost] == [Reason.CONCURRENT_UPDATE]
    got = store.get_key(TENANT, "k1")
    assert got is not None and got.state == KeyState.SUSPENDED and got.revision == 2


def test_a_rotation_racing_a_purge_finds_the_key_gone_and_leaves_no_orphan(
    store: Store, replica: Store, lock_waiter: Callable[[], None]
) -> None:
    insert(store, "k1", aliases=["a1"])
    theirs = replica.get_key(TENANT, "k1")
    assert theirs is not None
    orphan = _next_version(theirs, 2)
    lost: list[NotFound] = []

    def first(holding: threading.Event) -> None:
        with store.transaction() as tx:
            tx.purge_key(TENANT, "k1")
            holding.set()
            lock_waiter()

    def second() -> None:
        with pytest.raises(NotFound) as err, replica.transaction() as tx:
            tx.add_version(orphan)
            tx.add_alias(TENANT, "k1", "a2")
        lost.append(err.value)

    _race(first, second)
    assert [e.reason for e in lost] == [Reason.KEY_NOT_FOUND]
    assert store.get_key(TENANT, "k1") is None
    assert store.get_version(TENANT, orphan.id) is None
    assert store.list_versions(TENANT, "k1") == []


def test_a_key_read_inside_a_transaction_cannot_change_before_that_transaction_writes(
    store: Store, replica: Store, lock_waiter: Callable[[], None]
) -> None:
    """What services rely on when they read and then update in one transaction (moving a key
    ring's keys): a blind writer elsewhere must wait and then lose, not make the update fail."""
    insert(store, "k1")
    stale = replica.get_key(TENANT, "k1")
    assert stale is not None
    lost: list[Conflict] = []

    def first(holding: threading.Event) -> None:
        with store.transaction() as tx:
            key = tx.get_key(TENANT, "k1")
            assert key is not None
            holding.set()
            lock_waiter()
            key.description = "read, then written"
            tx.update_key(key)

    def second() -> None:
        stale.description = "blind"
        with pytest.raises(Conflict) as err, replica.transaction() as tx:
            tx.update_key(stale)
        lost.append(err.value)

    _race(first, second)
    assert [e.reason for e in lost] == [Reason.CONCURRENT_UPDATE]
    got = store.get_key(TENANT, "k1")
    assert got is not None and got.description == "read, then written"


def test_replicas_rotating_one_key_with_retries_lose_no_version_and_duplicate_none(
    store: Store, replica: Store
) -> None:
    insert(store, "k1")
    stores, threads, per_thread = (store, replica), 6, 5
    conflicts: list[int] = []

    def work(i: int) -> None:
        s = stores[i % 2]
        for _ in range(per_thread):
            while True:
                key = s.get_key(TENANT, "k1")
                assert key is not None
                version = _next_version(key, s.list_versions(TENANT, "k1")[0].number + 1)
                key.current_version_id = version.id
                try:
                    with s.transaction() as tx:
                        tx.add_version(version)
                        tx.update_key(key)
                    break
                except Conflict as exc:
                    assert exc.reason == Reason.CONCURRENT_UPDATE
                    conflicts.append(i)

    _run_threads(threads, work)
    versions = store.list_versions(TENANT, "k1")
    total = threads * per_thread
    assert [v.number for v in versions] == list(range(total + 1, 0, -1))
    final = replica.get_key(TENANT, "k1")
    assert final is not None
    assert final.current_version_id == versions[0].id and final.revision == 1 + total


def test_read_check_write_transactions_are_serialised_across_replicas(store: Store, replica: Store) -> None:
    """An import token's retrievals: read, check, decrement. Nobody may overspend (SQLite gets
    this from BEGIN IMMEDIATE, PostgreSQL from the tenant lock every in-transaction read takes)."""
    with store.transaction() as tx:
        tx.put_import_token(make_token())
    spent: list[int] = []

    def work(i: int) -> None:
        s = (store, replica)[i % 2]
        with s.transaction() as tx:
            token = tx.get_import_token(TENANT)
            assert token is not None
            if token.remaining_retrievals <= 0:
                return
            time.sleep(0.01)  # widen the window between the read and the write
            token.remaining_retrievals -= 1
            tx.update_import_token(token)
        spent.append(i)

    _run_threads(8, work)
    assert len(spent) == 3
    token = replica.get_import_token(TENANT)
    assert token is not None and token.remaining_retrievals == 0


def test_concurrent_token_replacements_each_return_the_token_they_replaced(
    store: Store, replica: Store
) -> None:
    """Every token but the last must come back exactly once, or its HSM keypair would leak."""
    tokens = [make_token(token_id=f"t{i}") for i in range(8)]
    returned: list[str] = []

    def work(i: int) -> None:
        s = (store, replica)[i % 2]
        with s.transaction() as tx:
            previous = tx.put_import_token(tokens[i])
        if previous is not None:
            returned.append(previous.id)

    _run_threads(len(tokens), work)
    current = store.get_import_token(TENANT)
    assert current is not None
    assert sorted([*returned, current.id]) == sorted(t.id for t in tokens)


def test_a_quota_checked_inside_a_transaction_holds_across_replicas(store: Store, replica: Store) -> None:
    """Count, then insert (the key ring quota): no row to lock, so only serialising the
    transactions (the tenant lock on PostgreSQL) stops both replicas from taking the last slot."""
    quota = 4  # the default ring and three more

    def work(i: int) -> None:
        s = (store, replica)[i % 2]
        with s.transaction() as tx:
            if len(tx.list_key_rings(TENANT)) >= quota:
                return
            time.sleep(0.01)
            tx.create_key_ring(KeyRing(id=f"ring-{i}", tenant=TENANT, created_at=T0, created_by="x"))

    _run_threads(8, work)
    assert len(store.list_key_rings(TENANT)) == quota


# --- master KEK rotation: listing across tenants and the per-version compare-and-swap ------------


def test_versions_not_under_a_kek_are_listed_across_tenants_in_pages(store: Store) -> None:
    for tenant, key_id in ((TENANT, "a"), (TENANT, "b"), (OTHER, "c")):
        insert(store, key_id, tenant=tenant)
    with store.transaction() as tx:
        tx.add_version(KeyVersion("a-v2", "a", TENANT, 2, T0, WrappedKey(b"new", 32, "kek-2")))
    assert store.count_versions_by_kek() == {"kek-1": 3, "kek-2": 1}

    first = store.list_versions_not_under_kek("kek-2", limit=2)
    assert [(v.tenant, v.id) for v in first] == [(TENANT, "a-v1"), (TENANT, "b-v1")]
    rest = store.list_versions_not_under_kek("kek-2", after=(first[-1].tenant, first[-1].id), limit=2)
    assert [(v.tenant, v.id) for v in rest] == [(OTHER, "c-v1")]
    assert [v.id for v in store.list_versions_not_under_kek("kek-1")] == ["a-v2"]


def test_replace_wrapped_swaps_only_the_wrapping_and_only_once(store: Store, replica: Store) -> None:
    insert(store, "k1")
    old = store.get_version(TENANT, "k1-v1")
    assert old is not None
    new = WrappedKey(b"rewrapped", old.wrapped.length, "kek-2", kind=old.wrapped.kind)
    with store.transaction() as tx:
        assert tx.replace_wrapped(TENANT, "k1-v1", old.wrapped, new)
    # Another rotation run that read the old wrapping loses quietly; so does a purged version.
    with replica.transaction() as tx:
        assert not tx.replace_wrapped(TENANT, "k1-v1", old.wrapped, WrappedKey(b"x", 32, "kek-3"))
        assert not tx.replace_wrapped(TENANT, "missing", old.wrapped, new)
    got = store.get_version(TENANT, "k1-v1")
    assert got is not None and got.wrapped == new
    assert (got.number, got.created_at, got.key_id) == (old.number, old.created_at, old.key_id)
    assert [v.id for v in store.list_versions_not_under_kek("kek-2")] == []


def test_a_rewrap_may_not_change_the_materials_length_or_kind(store: Store) -> None:
    insert(store, "k1")
    old = store.get_version(TENANT, "k1-v1")
    assert old is not None
    for bad in (WrappedKey(b"x", 16, "kek-2"), WrappedKey(b"x", 32, "kek-2", kind="secret")):
        with pytest.raises(InternalError), store.transaction() as tx:
            tx.replace_wrapped(TENANT, "k1-v1", old.wrapped, bad)
    assert store.get_version(TENANT, "k1-v1") == old
