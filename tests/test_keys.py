"""Spec §4: the key lifecycle through `KeyService`, on the fake and on SoftHSM2.

Create (root/standard, generated/imported), read by id or alias, aliases, list and count, rotate,
versions, disable/enable, delete/restore/purge, dual authorization and tenant isolation. Time
only moves through the `FixedClock`.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from fakes import FakeBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from services import build_services, call_context, close_services, new_store

from hsmbridge.core import lifecycle
from hsmbridge.core.clock import FixedClock
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import Key, KeyState
from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import KeyQuery, KeyRing
from hsmbridge.core.validation import MAX_STANDARD_PAYLOAD, RESERVED_ALIASES
from hsmbridge.errors import (
    Conflict,
    Gone,
    HsmBridgeError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Reason,
    TooEarly,
    Unsupported,
)

pytest_plugins = ("services_fixtures",)
pytestmark = pytest.mark.any_hsm


def create(services: Services, ctx: CallContext, name: str = "key", **spec: object) -> Key:
    return services.keys.create(ctx, KeySpec(name=name, **spec))  # type: ignore[arg-type]


def raises(error: type[HsmBridgeError], reason: Reason) -> pytest.RaisesExc[HsmBridgeError]:
    """`pytest.raises` that also insists on the machine-readable reason clients branch on."""
    return pytest.raises(error, check=lambda exc: exc.reason is reason)


def invalid_field(target: str) -> pytest.RaisesExc[HsmBridgeError]:
    return pytest.raises(
        InvalidInput, check=lambda exc: exc.reason is Reason.INVALID_FIELD and exc.target == target
    )


# --- create -----------------------------------------------------------------------------------------


def test_create_a_generated_root_key(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx, "payments", description="for the payments DEKs")
    assert key.is_root and not key.extractable
    assert not key.imported
    assert key.state is KeyState.ACTIVE
    assert key.bit_length == 256
    assert key.current_version_id == key.id  # the first version's id is the key id (§4.5)
    assert key.created_by == "alice"
    assert key.created_at == key.updated_at == key.state_changed_at == clock.now()
    assert key.last_rotated_at is None
    assert key.tenant == ctx.tenant

    stored = services.keys.get(ctx, key.id)
    assert (stored.name, stored.description, stored.state) == ("payments", "for the payments DEKs", key.state)
    [version] = services.keys.versions(ctx, key.id)
    assert (version.id, version.number, version.key_id) == (key.id, 1, key.id)


def test_create_a_generated_standard_key_and_reveal_it(services: Services, ctx: CallContext) -> None:
    key = create(services, ctx, "secret", extractable=True)
    assert key.extractable and not key.is_root
    assert not key.imported
    assert key.bit_length == 256
    payload = services.keys.payload(ctx, key)
    assert len(payload) == 32
    assert services.keys.payload(ctx, services.keys.get(ctx, key.id)) == payload


@pytest.mark.parametrize("size", [16, 24, 32])
def test_import_a_root_key_of_16_24_or_32_bytes(services: Services, ctx: CallContext, size: int) -> None:
    key = create(services, ctx, payload=os.urandom(size))
    assert key.imported
    assert key.bit_length == size * 8
    assert services.keys.get(ctx, key.id).bit_length == size * 8


@pytest.mark.parametrize("size", [0, 1, 8, 15, 20, 31, 33, 64])
def test_import_a_root_key_of_another_size_is_refused(
    services: Services, ctx: CallContext, size: int
) -> None:
    with invalid_field("payload"):
        create(services, ctx, payload=os.urandom(size))
    assert services.keys.count(ctx, KeyQuery()) == 0


@pytest.mark.parametrize("size", [1, 7, 8, 20, 33, 1000, MAX_STANDARD_PAYLOAD])
def test_an_imported_standard_key_reveals_exactly_what_was_imported(
    services: Services, ctx: CallContext, size: int
) -> None:
    """Sizes that are not a multiple of 8 matter: SoftHSM2 keeps RFC 5649 padding on secrets.
    A token that unwraps shorter secrets only (NSS softoken: 256 bytes) refuses longer payloads
    when they are stored, with the limit in the message, and stores nothing."""
    material = os.urandom(size)
    if not services.keys._backend.capabilities().long_secrets and size > 256:
        with pytest.raises(Unsupported, match="at most 256 bytes"):
            create(services, ctx, extractable=True, payload=material)
        assert services.keys.count(ctx, KeyQuery()) == 0
        return
    key = create(services, ctx, extractable=True, payload=material)
    assert key.imported
    assert key.bit_length == size * 8
    assert services.keys.payload(ctx, services.keys.get(ctx, key.id)) == material


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(material=st.binary(min_size=1, max_size=MAX_STANDARD_PAYLOAD))
def test_standard_key_payload_round_trip(services: Services, ctx: CallContext, material: bytes) -> None:
    key = create(services, ctx, extractable=True, payload=material)
    assert services.keys.payload(ctx, key) == material


@pytest.mark.parametrize("size", [0, MAX_STANDARD_PAYLOAD + 1])
def test_standard_key_payload_must_be_1_to_7500_bytes(
    services: Services, ctx: CallContext, size: int
) -> None:
    with invalid_field("payload"):
        create(services, ctx, extractable=True, payload=os.urandom(size))


def test_root_key_material_is_never_revealed(services: Services, ctx: CallContext) -> None:
    for key in (
        create(services, ctx, "generated"),
        create(services, ctx, "imported", payload=os.urandom(32)),
    ):
        with pytest.raises(PermissionDenied):
            services.keys.payload(ctx, key)


def test_a_deleted_standard_keys_payload_is_not_revealed(services: Services, ctx: CallContext) -> None:
    key = services.keys.delete(ctx, create(services, ctx, extractable=True).id)
    with raises(Conflict, Reason.INVALID_STATE):
        services.keys.payload(ctx, key)


@pytest.mark.parametrize(
    ("spec", "target"),
    [
        ({"name": "a"}, "name"),
        ({"name": "x" * 91}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": "ok", "description": "d" * 241}, "description"),
        ({"name": "ok", "description": "new\nline"}, "description"),
    ],
)
def test_names_and_descriptions_are_validated(
    services: Services, ctx: CallContext, spec: dict[str, str], target: str
) -> None:
    with invalid_field(target):
        services.keys.create(ctx, KeySpec(**spec))


def test_names_and_descriptions_at_their_limits(services: Services, ctx: CallContext) -> None:
    for name in ("ab", "n" * 90):
        assert create(services, ctx, name, description="d" * 240).name == name


def test_an_expiration_date_must_be_in_the_future(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    for past in (clock.now(), clock.now() - timedelta(days=1)):
        with invalid_field("expirationDate"):
            create(services, ctx, expires_at=past)
    soon = clock.now() + timedelta(seconds=1)
    assert services.keys.get(ctx, create(services, ctx, expires_at=soon).id).expires_at == soon


def test_keys_go_into_existing_key_rings_only(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    with raises(NotFound, Reason.KEY_RING_NOT_FOUND):
        create(services, ctx, key_ring="ring-a")
    with invalid_field("keyRingID"):
        create(services, ctx, key_ring="bad ring!")
    with services.store.transaction() as tx:
        tx.ensure_tenant(ctx.tenant, clock.now())
        tx.create_key_ring(KeyRing("ring-a", ctx.tenant, clock.now(), "alice"))
    key = create(services, ctx, key_ring="ring-a")
    assert services.keys.get(ctx, key.id).key_ring == "ring-a"


# --- get and aliases ----------------------------------------------------------------------------------


def test_get_by_id_or_alias(services: Services, ctx: CallContext) -> None:
    key = create(services, ctx, aliases=["billing", "billing-v2"])
    assert key.aliases == ["billing", "billing-v2"]
    for ref in (key.id, "billing", "billing-v2"):
        found = services.keys.get(ctx, ref)
        assert found.id == key.id
        assert found.aliases == ["billing", "billing-v2"]


def test_get_of_an_unknown_key_or_alias_is_not_found(services: Services, ctx: CallContext) -> None:
    create(services, ctx, aliases=["known"])
    for ref in (str(uuid.uuid4()), "unknown", "keys"):
        with raises(NotFound, Reason.KEY_NOT_FOUND):
            services.keys.get(ctx, ref)


@pytest.mark.parametrize("alias", sorted(RESERVED_ALIASES))
def test_reserved_words_are_not_aliases(services: Services, ctx: CallContext, alias: str) -> None:
    with invalid_field("aliases"):
        create(services, ctx, aliases=[alias])
    key = create(services, ctx)
    with invalid_field("alias"):
        services.keys.add_alias(ctx, key.id, alias)


@pytest.mark.parametrize(
    "alias",
    [
        str(uuid.uuid4()),
        str(uuid.uuid4()).upper(),
        "00000000-0000-0000-0000-000000000000",
        "a",
        "x" * 91,
        "has space",
        "dot.ted",
        "slash/ed",
        "ümlaut",
        "",
    ],
)
def test_malformed_and_uuid_shaped_aliases_are_refused(
    services: Services, ctx: CallContext, alias: str
) -> None:
    with invalid_field("aliases"):
        create(services, ctx, aliases=[alias])
    key = create(services, ctx)
    with invalid_field("alias"):
        services.keys.add_alias(ctx, key.id, alias)


def test_alias_shapes_at_the_limits(services: Services, ctx: CallContext) -> None:
    aliases = ["ab", "x" * 90, "under_score", "da-sh", "MiXeD123"]
    assert services.keys.get(ctx, create(services, ctx, aliases=aliases).id).aliases == aliases


def test_at_most_five_aliases_per_key(services: Services, ctx: CallContext) -> None:
    six = [f"alias-{i}" for i in range(6)]
    with raises(InvalidInput, Reason.ALIAS_QUOTA):
        create(services, ctx, aliases=six)
    key = create(services, ctx, aliases=six[:5])
    with raises(Conflict, Reason.ALIAS_QUOTA):
        services.keys.add_alias(ctx, key.id, six[5])
    services.keys.remove_alias(ctx, key.id, six[0])
    assert services.keys.add_alias(ctx, key.id, six[5])[1]
    assert services.keys.get(ctx, six[5]).id == key.id


def test_concurrent_alias_additions_respect_the_quota(tmp_path: Path, tenant: str) -> None:
    """Replicas (threads here) adding aliases at once: the quota of five holds however they
    interleave, because the count is checked in the transaction that adds."""
    backend = FakeBackend()
    store = new_store(str(tmp_path / "store.db"))
    services = build_services(backend, store=store)
    ctx = call_context(tenant)
    key = create(services, ctx, aliases=["one", "two", "three", "four"])
    get_key = store.get_key

    def slow_get_key(tenant: str, key_id: str) -> Key | None:  # widens the read-to-write window
        found = get_key(tenant, key_id)
        time.sleep(0.02)
        return found

    store.get_key = slow_get_key  # type: ignore[method-assign]
    barrier = threading.Barrier(6)

    def add(i: int) -> bool | Reason:
        barrier.wait()
        try:
            return services.keys.add_alias(ctx, key.id, f"racer-{i}")[1]
        except Conflict as exc:
            return exc.reason

    try:
        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(add, range(6)))
        del store.get_key
        assert sorted(outcomes, key=str) == [Reason.ALIAS_QUOTA] * 5 + [True]
        assert len(services.keys.get(ctx, key.id).aliases) == 5
    finally:
        close_services(services)
        backend.close()


def test_repeated_aliases_in_one_request_count_once(services: Services, ctx: CallContext) -> None:
    key = create(services, ctx, aliases=["dup", "dup", "other"])
    assert key.aliases == ["dup", "other"]


def test_an_alias_names_one_key_per_tenant(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    first = create(services, ctx, "first", aliases=["shared"])
    second = create(services, ctx, "second")
    with raises(Conflict, Reason.ALIAS_NOT_UNIQUE):
        create(services, ctx, "third", aliases=["fresh", "shared"])
    with raises(Conflict, Reason.ALIAS_NOT_UNIQUE):
        services.keys.add_alias(ctx, second.id, "shared")
    with raises(NotFound, Reason.KEY_NOT_FOUND):  # the refused create left nothing behind
        services.keys.get(ctx, "fresh")
    assert services.keys.get(ctx, "shared").id == first.id
    # another tenant has its own alias namespace
    theirs = create(services, other_tenant, aliases=["shared"])
    assert services.keys.get(other_tenant, "shared").id == theirs.id
    assert services.keys.get(ctx, "shared").id == first.id


def test_aliases_are_case_sensitive(services: Services, ctx: CallContext) -> None:
    upper = create(services, ctx, "upper", aliases=["Billing"])
    lower = create(services, ctx, "lower", aliases=["billing"])
    assert services.keys.get(ctx, "Billing").id == upper.id
    assert services.keys.get(ctx, "billing").id == lower.id
    with raises(NotFound, Reason.KEY_NOT_FOUND):
        services.keys.get(ctx, "BILLING")


def test_add_and_remove_aliases(services: Services, ctx: CallContext) -> None:
    key = create(services, ctx)
    updated, created = services.keys.add_alias(ctx, key.id, "added")
    assert created and updated.aliases == ["added"]
    again, created = services.keys.add_alias(ctx, "added", "added")  # idempotent, by alias too
    assert not created and again.aliases == ["added"]
    assert services.keys.get(ctx, "added").id == key.id

    services.keys.remove_alias(ctx, key.id, "added")
    with raises(NotFound, Reason.KEY_NOT_FOUND):
        services.keys.get(ctx, "added")
    with raises(NotFound, Reason.ALIAS_NOT_FOUND):
        services.keys.remove_alias(ctx, key.id, "added")


def test_an_alias_is_freed_only_by_purge(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx, aliases=["reused"])
    services.keys.delete(ctx, key.id)
    assert services.keys.get(ctx, "reused").state is KeyState.DESTROYED
    with raises(Conflict, Reason.ALIAS_NOT_UNIQUE):
        create(services, ctx, aliases=["reused"])
    clock.advance(hours=4)
    services.keys.purge(ctx, key.id)
    successor = create(services, ctx, aliases=["reused"])
    assert services.keys.get(ctx, "reused").id == successor.id


# --- list and count ------------------------------------------------------------------------------------


def test_list_and_count_with_filters(services: Services, ctx: CallContext, other_tenant: CallContext) -> None:
    active_root = create(services, ctx, "active-root").id
    suspended_root = create(services, ctx, "suspended-root").id
    services.keys.disable(ctx, suspended_root)
    standard = create(services, ctx, "standard", extractable=True).id
    deleted = create(services, ctx, "deleted").id
    services.keys.delete(ctx, deleted)
    create(services, other_tenant, "not-mine")

    everything = {active_root, suspended_root, standard, deleted}
    cases = {
        KeyQuery(): everything,
        KeyQuery(states=(KeyState.ACTIVE,)): {active_root, standard},
        KeyQuery(states=(KeyState.ACTIVE, KeyState.SUSPENDED, KeyState.DEACTIVATED)): everything - {deleted},
        KeyQuery(states=(KeyState.DESTROYED,)): {deleted},
        KeyQuery(states=(KeyState.DEACTIVATED,)): set(),
        KeyQuery(states=()): set(),
        KeyQuery(extractable=True): {standard},
        KeyQuery(extractable=False, states=(KeyState.ACTIVE,)): {active_root},
        KeyQuery(key_ring="default"): everything,
        KeyQuery(key_ring="elsewhere"): set(),
    }
    for query, expected in cases.items():
        assert {k.id for k in services.keys.list(ctx, query)} == expected, query
        assert services.keys.count(ctx, query) == len(expected), query
    states = {k.id: k.state for k in services.keys.list(ctx, KeyQuery())}
    assert states == {
        active_root: KeyState.ACTIVE,
        suspended_root: KeyState.SUSPENDED,
        standard: KeyState.ACTIVE,
        deleted: KeyState.DESTROYED,
    }


def test_list_pages_with_limit_and_offset(services: Services, ctx: CallContext) -> None:
    ids = {create(services, ctx, f"key-{i}").id for i in range(5)}
    pages = [services.keys.list(ctx, KeyQuery(limit=2, offset=offset)) for offset in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 1, 0]
    assert sorted(k.id for p in pages for k in p) == sorted(ids)  # every key once, none twice
    assert services.keys.count(ctx, KeyQuery(limit=2)) == 5  # the count ignores paging
    assert services.keys.list(ctx, KeyQuery(limit=0)) == []


def test_list_presents_an_expired_key_as_deactivated(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx, expires_at=clock.now() + timedelta(minutes=5))
    clock.advance(minutes=5)
    [listed] = services.keys.list(ctx, KeyQuery())
    assert listed.id == key.id
    assert listed.state is KeyState.DEACTIVATED


def test_get_persists_expiry(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx, expires_at=clock.now() + timedelta(minutes=5))
    clock.advance(minutes=5)
    assert services.keys.get(ctx, key.id).state is KeyState.DEACTIVATED
    assert services.keys.count(ctx, KeyQuery(states=(KeyState.DEACTIVATED,))) == 1
    assert services.keys.count(ctx, KeyQuery(states=(KeyState.ACTIVE,))) == 0


# --- rotate and versions --------------------------------------------------------------------------------


def test_rotate_a_generated_key(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx)
    clock.advance(minutes=1)
    rotated = services.keys.rotate(ctx, key.id)
    assert rotated.id == key.id
    assert rotated.current_version_id != key.id
    assert rotated.last_rotated_at == rotated.updated_at == clock.now()
    assert rotated.bit_length == 256
    assert not rotated.imported
    stored = services.keys.get(ctx, key.id)
    assert stored.current_version_id == rotated.current_version_id
    assert stored.last_rotated_at == clock.now()
    clock.advance(hours=1)
    with invalid_field("payload"):  # generated keys rotate without material
        services.keys.rotate(ctx, key.id, payload=os.urandom(32))


def test_rotate_an_imported_key_requires_new_material(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx, payload=os.urandom(16))
    with raises(InvalidInput, Reason.KEY_PAYLOAD_REQUIRED):
        services.keys.rotate(ctx, key.id)
    with invalid_field("payload"):
        services.keys.rotate(ctx, key.id, payload=os.urandom(20))
    assert len(services.keys.versions(ctx, key.id)) == 1  # refused rotations leave no version

    rotated = services.keys.rotate(ctx, key.id, payload=os.urandom(32))
    assert rotated.imported
    assert rotated.bit_length == 256
    assert services.keys.get(ctx, key.id).bit_length == 256
    assert len(services.keys.versions(ctx, key.id)) == 2


def test_one_rotation_per_hour(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx)
    services.keys.rotate(ctx, key.id)  # a new key may rotate at once
    for wait in (timedelta(0), timedelta(minutes=59, seconds=59)):
        clock.advance(seconds=wait.total_seconds())
        with raises(TooEarly, Reason.ROTATION_TOO_SOON):
            services.keys.rotate(ctx, key.id)
    clock.advance(seconds=1)
    services.keys.rotate(ctx, key.id)
    assert [v.number for v in services.keys.versions(ctx, key.id)] == [3, 2, 1]


def test_the_hourly_limit_is_checked_before_material_is_required(
    services: Services, ctx: CallContext
) -> None:
    key = create(services, ctx, payload=os.urandom(32))
    services.keys.rotate(ctx, key.id, payload=os.urandom(32))
    with raises(TooEarly, Reason.ROTATION_TOO_SOON):
        services.keys.rotate(ctx, key.id, payload=os.urandom(32))


def test_versions_are_listed_newest_first(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx)
    current = [key.current_version_id]
    for _ in range(3):
        clock.advance(hours=1)
        current.append(services.keys.rotate(ctx, key.id).current_version_id)
    versions = services.keys.versions(ctx, key.id)
    assert [v.id for v in versions] == current[::-1]
    assert [v.number for v in versions] == [4, 3, 2, 1]
    assert versions[-1].id == key.id
    assert [v.created_at for v in versions] == sorted((v.created_at for v in versions), reverse=True)
    assert services.keys.get(ctx, key.id).current_version_id == versions[0].id
    assert {v.key_id for v in versions} == {key.id}
    assert len({v.wrapped.blob for v in versions}) == 4  # new material every time


@pytest.mark.parametrize(
    ("setup", "error", "reason"),
    [
        ("disable", Conflict, Reason.INVALID_STATE),
        ("delete", Gone, Reason.KEY_DELETED),
        ("standard", InvalidInput, Reason.KEY_ROOT_REQUIRED),
    ],
)
def test_rotation_state_rules(
    services: Services, ctx: CallContext, setup: str, error: type[HsmBridgeError], reason: Reason
) -> None:
    key = create(services, ctx, extractable=setup == "standard")
    if setup == "disable":
        services.keys.disable(ctx, key.id)
    elif setup == "delete":
        services.keys.delete(ctx, key.id)
    with raises(error, reason):
        services.keys.rotate(ctx, key.id)


def test_an_expired_key_can_rotate_and_keeps_its_expiration(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    expiry = clock.now() + timedelta(hours=1)
    key = create(services, ctx, expires_at=expiry)
    clock.advance(hours=2)
    rotated = services.keys.rotate(ctx, key.id)
    assert rotated.state is KeyState.DEACTIVATED
    assert rotated.expires_at == expiry


def test_of_two_racing_rotations_only_one_succeeds(services: Services, ctx: CallContext) -> None:
    """A second replica rotates between our read and our write: ours re-reads, sees the fresh
    rotation and refuses, instead of adding a second version in the same hour."""
    key = create(services, ctx)
    replica = Services.build(services.store, services.backend, clock=services.clock)
    store = services.store
    list_versions = store.list_versions
    raced: list[str] = []

    def list_versions_with_a_race(tenant: str, key_id: str):  # type: ignore[no-untyped-def]
        if not raced:
            raced.append("racing")
            raced[0] = replica.keys.rotate(ctx, key_id).current_version_id
        return list_versions(tenant, key_id)

    store.list_versions = list_versions_with_a_race  # type: ignore[method-assign]
    try:
        with raises(TooEarly, Reason.ROTATION_TOO_SOON):
            services.keys.rotate(ctx, key.id)
    finally:
        del store.list_versions
    versions = services.keys.versions(ctx, key.id)
    assert [v.id for v in versions] == [raced[0], key.id]
    assert services.keys.get(ctx, key.id).current_version_id == raced[0]


def test_a_state_change_that_loses_a_race_is_rechecked_not_applied_blindly(
    services: Services, ctx: CallContext
) -> None:
    """We read the key, a second replica deletes it, then we try to disable our stale copy: the
    write loses on the revision, the retry re-reads and refuses, and the deletion stands."""
    key = create(services, ctx)
    replica = Services.build(services.store, services.backend, clock=services.clock)
    store = services.store
    get_key = store.get_key
    raced: list[bool] = []

    def get_key_then_race(tenant: str, key_id: str) -> Key | None:
        found = get_key(tenant, key_id)
        if not raced:
            raced.append(True)
            replica.keys.delete(ctx, key_id)
        return found

    store.get_key = get_key_then_race  # type: ignore[method-assign]
    try:
        with raises(Gone, Reason.KEY_DELETED):
            services.keys.disable(ctx, key.id)
    finally:
        del store.get_key
    assert raced
    stored = services.keys.get(ctx, key.id)
    assert stored.state is KeyState.DESTROYED
    assert stored.state_before_delete is KeyState.ACTIVE


# --- disable and enable ------------------------------------------------------------------------------


def test_disable_then_enable_after_30_seconds(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    disabled = services.keys.disable(ctx, key.id)
    assert disabled.state is KeyState.SUSPENDED
    assert services.keys.get(ctx, key.id).state is KeyState.SUSPENDED
    with raises(Conflict, Reason.INVALID_STATE):
        services.keys.disable(ctx, key.id)

    clock.advance(seconds=29)
    with raises(TooEarly, Reason.TOO_EARLY):
        services.keys.enable(ctx, key.id)
    clock.advance(seconds=1)
    enabled = services.keys.enable(ctx, key.id)
    assert enabled.state is KeyState.ACTIVE
    assert enabled.state_changed_at == clock.now()
    with raises(Conflict, Reason.INVALID_STATE):
        services.keys.enable(ctx, key.id)


def test_standard_keys_cannot_be_disabled_or_enabled(services: Services, ctx: CallContext) -> None:
    key = create(services, ctx, extractable=True)
    with raises(InvalidInput, Reason.KEY_ROOT_REQUIRED):
        services.keys.disable(ctx, key.id)
    with raises(InvalidInput, Reason.KEY_ROOT_REQUIRED):
        services.keys.enable(ctx, key.id)


def test_an_expired_key_cannot_be_enabled(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx, expires_at=clock.now() + timedelta(hours=1))
    services.keys.disable(ctx, key.id)
    clock.advance(hours=1)
    with raises(Conflict, Reason.INVALID_STATE):
        services.keys.enable(ctx, key.id)
    assert services.keys.get(ctx, key.id).state is KeyState.DEACTIVATED


# --- delete, restore, purge ---------------------------------------------------------------------------


def test_delete_restore_and_purge_timeline(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx, aliases=["doomed"])
    deleted = services.keys.delete(ctx, key.id)
    assert deleted.state is KeyState.DESTROYED
    assert deleted.deleted_at == clock.now()
    assert deleted.deleted_by == "alice"
    # a deleted key can still be read (§4.2: 200 with deleted:true), by id and by alias
    assert services.keys.get(ctx, "doomed").state is KeyState.DESTROYED
    with raises(Gone, Reason.KEY_DELETED):
        services.keys.delete(ctx, key.id)

    clock.advance(seconds=29)
    with raises(TooEarly, Reason.TOO_EARLY):
        services.keys.restore(ctx, key.id)
    clock.advance(seconds=1)
    restored = services.keys.restore(ctx, key.id)
    assert restored.state is KeyState.ACTIVE
    assert (restored.deleted_at, restored.deleted_by) == (None, None)
    assert services.keys.get(ctx, key.id).state is KeyState.ACTIVE
    with raises(Conflict, Reason.INVALID_STATE):
        services.keys.restore(ctx, key.id)
    with raises(Conflict, Reason.INVALID_STATE):
        services.keys.purge(ctx, key.id)

    services.keys.delete(ctx, key.id)
    clock.advance(hours=3, minutes=59, seconds=59)
    with raises(TooEarly, Reason.TOO_EARLY):
        services.keys.purge(ctx, key.id)
    clock.advance(seconds=1)
    services.keys.purge(ctx, key.id)
    for ref in (key.id, "doomed"):
        with raises(NotFound, Reason.KEY_NOT_FOUND):
            services.keys.get(ctx, ref)
    with raises(NotFound, Reason.KEY_NOT_FOUND):
        services.keys.purge(ctx, key.id)
    with raises(NotFound, Reason.KEY_NOT_FOUND):
        services.keys.versions(ctx, key.id)
    assert services.keys.count(ctx, KeyQuery()) == 0


def test_restore_is_refused_after_30_days(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    key = create(services, ctx)
    services.keys.delete(ctx, key.id)
    clock.advance(days=30)
    with raises(InvalidInput, Reason.KEY_RESTORE_EXPIRED):
        services.keys.restore(ctx, key.id)
    services.keys.purge(ctx, key.id)  # purge is still allowed


def test_restore_keeps_versions_and_rotation_history(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    latest = services.keys.rotate(ctx, key.id).current_version_id
    services.keys.delete(ctx, key.id)
    clock.advance(minutes=1)
    restored = services.keys.restore(ctx, key.id)
    assert restored.current_version_id == latest
    assert [v.id for v in services.keys.versions(ctx, key.id)] == [latest, key.id]


def test_a_disabled_key_can_be_deleted_and_comes_back_active(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx)
    services.keys.disable(ctx, key.id)
    services.keys.delete(ctx, key.id)
    clock.advance(seconds=30)
    assert services.keys.restore(ctx, key.id).state is KeyState.ACTIVE


def test_an_expired_deleted_key_cannot_be_restored(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx, expires_at=clock.now() + timedelta(hours=1))
    services.keys.delete(ctx, key.id)
    clock.advance(hours=1)
    with raises(InvalidInput, Reason.KEY_EXPIRED):
        services.keys.restore(ctx, key.id)


def test_standard_keys_delete_and_restore_like_root_keys(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    material = os.urandom(100)
    key = create(services, ctx, extractable=True, payload=material)
    services.keys.delete(ctx, key.id)
    clock.advance(seconds=30)
    restored = services.keys.restore(ctx, key.id)
    assert services.keys.payload(ctx, restored) == material


# --- dual authorization -------------------------------------------------------------------------------


def test_dual_auth_delete_needs_a_prior_authorization_by_another_principal(
    services: Services, ctx: CallContext, bob: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx, dual_auth_delete=True)
    assert key.dual_auth.enabled
    for who in (ctx, bob):
        with raises(Conflict, Reason.AUTHORIZATIONS_NOT_MET):
            services.keys.delete(who, key.id)

    authorized = services.keys.set_key_for_deletion(ctx, key.id)
    assert authorized.dual_auth.set_by == "alice"
    assert authorized.dual_auth.expires_at == clock.now() + lifecycle.DUAL_AUTH_WINDOW
    assert authorized.state is KeyState.ACTIVE  # still fully usable
    with raises(Conflict, Reason.AUTHORIZATIONS_NOT_MET):
        services.keys.delete(ctx, key.id)  # the authorizer cannot be the deleter

    deleted = services.keys.delete(bob, key.id)
    assert deleted.state is KeyState.DESTROYED
    assert deleted.deleted_by == "bob"
    assert deleted.dual_auth.enabled
    assert deleted.dual_auth.set_by is None  # the authorization was used up


def test_dual_auth_authorization_lasts_seven_days(
    services: Services, ctx: CallContext, bob: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx, dual_auth_delete=True)
    services.keys.set_key_for_deletion(ctx, key.id)
    clock.advance(days=7)
    with raises(Conflict, Reason.AUTHORIZATIONS_NOT_MET):
        services.keys.delete(bob, key.id)

    services.keys.set_key_for_deletion(ctx, key.id)
    clock.advance(days=7, seconds=-1)
    assert services.keys.delete(bob, key.id).state is KeyState.DESTROYED


def test_unset_key_for_deletion_cancels_the_authorization(
    services: Services, ctx: CallContext, bob: CallContext
) -> None:
    key = create(services, ctx, dual_auth_delete=True)
    services.keys.set_key_for_deletion(ctx, key.id)
    cancelled = services.keys.unset_key_for_deletion(ctx, key.id)
    assert cancelled.dual_auth.enabled
    assert (cancelled.dual_auth.set_by, cancelled.dual_auth.expires_at) == (None, None)
    with raises(Conflict, Reason.AUTHORIZATIONS_NOT_MET):
        services.keys.delete(bob, key.id)


def test_a_restored_dual_auth_key_needs_a_fresh_authorization(
    services: Services, ctx: CallContext, bob: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx, dual_auth_delete=True)
    services.keys.set_key_for_deletion(ctx, key.id)
    services.keys.delete(bob, key.id)
    clock.advance(seconds=30)
    services.keys.restore(ctx, key.id)
    with raises(Conflict, Reason.AUTHORIZATIONS_NOT_MET):
        services.keys.delete(bob, key.id)


def test_set_key_for_deletion_rules(services: Services, ctx: CallContext) -> None:
    plain = create(services, ctx, "plain")
    for call in (services.keys.set_key_for_deletion, services.keys.unset_key_for_deletion):
        with raises(Conflict, Reason.NOT_DUAL_AUTH):
            call(ctx, plain.id)
    suspended = create(services, ctx, "suspended", dual_auth_delete=True)
    services.keys.disable(ctx, suspended.id)
    with raises(Conflict, Reason.INVALID_STATE):
        services.keys.set_key_for_deletion(ctx, suspended.id)
    services.keys.delete(ctx, plain.id)
    with raises(Gone, Reason.KEY_DELETED):
        services.keys.set_key_for_deletion(ctx, plain.id)


# --- tenant isolation ---------------------------------------------------------------------------------


def test_another_tenant_cannot_see_or_touch_my_keys(
    services: Services, ctx: CallContext, other_tenant: CallContext, clock: FixedClock
) -> None:
    key = create(services, ctx, "mine", aliases=["mine"], dual_auth_delete=True)
    intruder = call_context(other_tenant.tenant, "mallory")

    assert services.keys.list(intruder, KeyQuery()) == []
    assert services.keys.count(intruder, KeyQuery()) == 0
    attempts = [
        lambda ref: services.keys.get(intruder, ref),
        lambda ref: services.keys.versions(intruder, ref),
        lambda ref: services.keys.rotate(intruder, ref),
        lambda ref: services.keys.disable(intruder, ref),
        lambda ref: services.keys.enable(intruder, ref),
        lambda ref: services.keys.delete(intruder, ref),
        lambda ref: services.keys.restore(intruder, ref),
        lambda ref: services.keys.purge(intruder, ref),
        lambda ref: services.keys.set_key_for_deletion(intruder, ref),
        lambda ref: services.keys.add_alias(intruder, ref, "stolen"),
        lambda ref: services.keys.remove_alias(intruder, ref, "mine"),
    ]
    for attempt in attempts:
        for ref in (key.id, "mine"):
            with raises(NotFound, Reason.KEY_NOT_FOUND):
                attempt(ref)

    # the other tenant's own keys live beside mine without affecting them
    theirs = create(services, other_tenant, "theirs", aliases=["mine"])
    clock.advance(hours=5)
    services.keys.rotate(other_tenant, theirs.id)
    services.keys.delete(other_tenant, theirs.id)
    mine = services.keys.get(ctx, "mine")
    assert (mine.id, mine.state, mine.current_version_id) == (key.id, KeyState.ACTIVE, key.id)
    assert mine.dual_auth.set_by is None
    assert [k.id for k in services.keys.list(ctx, KeyQuery())] == [key.id]
    assert services.keys.versions(ctx, key.id)[0].id == key.id
