"""The 004 store operations (core/store/external.py) on every engine: SQLite (file, memory) and a
real PostgreSQL — one SQL text, so the same expectations hold everywhere."""

# ruff: noqa: F811 -- the engine fixtures of tests/test_store.py are imported by name, then requested.

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from test_store import OTHER, T0, TENANT, backend, make_key, store, unmigrated  # noqa: F401

from hsmbridge.core.store.base import Store
from hsmbridge.core.store.external import ExternalKey, ImportParameters
from hsmbridge.errors import AlreadyExists, NotFound

pytest_plugins = ("store_fixtures",)


def pending_key(s: Store, key_id: str, *, tenant: str = TENANT, alias: str | None = None) -> ExternalKey:
    key, _ = make_key(key_id, tenant=tenant)
    key = replace(key, current_version_id=key_id)
    record = ExternalKey(tenant, key_id, alias or f"alias-{key_id}", "", "external", False, T0, key_id)
    with s.transaction() as tx:
        tx.insert_key(key, None)  # no material yet: a key pending import
        tx.external.put_external_key(record)
    return record


def test_a_key_without_material_round_trips(store: Store) -> None:
    record = pending_key(store, "k1")
    assert store.get_key(TENANT, "k1") is not None and store.list_versions(TENANT, "k1") == []
    with store.transaction() as tx:
        assert tx.external.get_external_key(TENANT, "k1") == record
        assert tx.external.get_external_key(OTHER, "k1") is None
        assert tx.external.get_external_key_by_alias(TENANT, "alias-k1") == record


def test_every_field_is_stored(store: Store) -> None:
    record = pending_key(store, "k1")
    full = record.but(
        material_present=True,
        material_check=b"\x00\x01check\xff",
        material_expires_at=T0 + timedelta(hours=1),
        scheduled_deletion_at=T0 + timedelta(days=7),
        description="d",
    )
    with store.transaction() as tx:
        tx.external.put_external_key(full)
    with store.transaction() as tx:
        assert tx.external.get_external_key(TENANT, "k1") == full


def test_aliases_are_unique_per_tenant(store: Store) -> None:
    pending_key(store, "k1", alias="same")
    pending_key(store, "k1", tenant=OTHER, alias="same")
    with pytest.raises(AlreadyExists):
        pending_key(store, "k2", alias="same")


def test_listing_pages_by_key_id_and_counts(store: Store) -> None:
    for key_id in ("k3", "k1", "k2"):
        pending_key(store, key_id)
    with store.transaction() as tx:
        assert [r.key_id for r in tx.external.list_external_keys(TENANT, after=None, limit=2)] == ["k1", "k2"]
        assert [r.key_id for r in tx.external.list_external_keys(TENANT, after="k2", limit=2)] == ["k3"]
        assert tx.external.count_external_keys(TENANT) == 3
        assert tx.external.count_external_keys(OTHER) == 0


def test_due_keys_are_found_across_tenants(store: Store) -> None:
    expiring = pending_key(store, "k1").but(
        material_present=True, material_expires_at=T0 + timedelta(hours=1)
    )
    doomed = pending_key(store, "k2", tenant=OTHER).but(scheduled_deletion_at=T0 + timedelta(days=7))
    pending_key(store, "k3")
    with store.transaction() as tx:
        tx.external.put_external_key(expiring)
        tx.external.put_external_key(doomed)
    with store.transaction() as tx:
        assert tx.external.list_external_keys_due(T0) == []
        assert [r.key_id for r in tx.external.list_external_keys_due(T0 + timedelta(days=8))] == ["k1", "k2"]


def test_deleting_versions_keeps_the_key(store: Store) -> None:
    key, version = make_key("k1")
    with store.transaction() as tx:
        tx.insert_key(key, version)
    with store.transaction() as tx:
        assert tx.external.delete_key_versions(TENANT, "k1") == 1
    assert store.list_versions(TENANT, "k1") == [] and store.get_key(TENANT, "k1") is not None


def test_import_parameters_are_used_once(store: Store) -> None:
    params = ImportParameters(TENANT, "t1", "k1", "obj1", T0 + timedelta(hours=24))
    with store.transaction() as tx:
        tx.external.insert_import_parameters(params)
    with store.transaction() as tx:
        assert tx.external.consume_import_parameters(TENANT, "t1") == params
    with pytest.raises(NotFound), store.transaction() as tx:
        tx.external.consume_import_parameters(TENANT, "t1")
    with pytest.raises(NotFound), store.transaction() as tx:
        tx.external.consume_import_parameters(OTHER, "t1")


def test_expired_import_parameters_are_listed_and_deleted(store: Store) -> None:
    with store.transaction() as tx:
        tx.external.insert_import_parameters(ImportParameters(TENANT, "t1", "k1", "obj1", T0))
        tx.external.insert_import_parameters(
            ImportParameters(OTHER, "t2", "k2", "obj2", T0 + timedelta(days=1))
        )
    with store.transaction() as tx:
        assert [p.id for p in tx.external.list_import_parameters_expired(T0)] == ["t1"]
        tx.external.delete_import_parameters(TENANT, "t1")
    with store.transaction() as tx:
        assert tx.external.list_import_parameters_expired(T0 + timedelta(days=2))[0].id == "t2"


def test_purging_a_key_removes_its_external_record(store: Store) -> None:
    pending_key(store, "k1")
    with store.transaction() as tx:
        tx.purge_key(TENANT, "k1")
    with store.transaction() as tx:
        assert tx.external.get_external_key(TENANT, "k1") is None
