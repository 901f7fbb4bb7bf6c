"""The import-token keypair pool on a real SoftHSM2 token: it fills in the background under a
lease, token creation takes (and claims) from it, a cleaner destroys only pooled keypairs whose
owner is provably gone and that no stored token refers to, an owner whose lease lapsed starts
over, expired tokens' pooled keypairs are destroyed like any other, and a graceful close leaves
no pool object behind.

RSA-2048 keeps these quick (≈0.3 s per keygen); the daemon's default is RSA-4096. No timing is
asserted: waits are bounded only so a broken pool fails instead of hanging. "Other processes"
are other owners writing leases on the same token; "gone" processes are owners without a
lease, with an old one, or (same host) whose pid has exited.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from services import build_services, call_context, clock_of, close_services, encrypt_for_import, new_tenant

from hsmbridge.core.keypair_pool import (
    CLOCK_SKEW,
    LEASE_SECONDS,
    KeypairPool,
    locally_gone,
    new_owner,
    owner_of,
    owner_prefix,
)
from hsmbridge.core.services import Services
from hsmbridge.hsm.backend import Pkcs11Backend

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]

BITS = 2048


def pool_ids(backend: Pkcs11Backend) -> set[str]:
    return set(backend.find_import_keypairs("pool-"))


def exists(backend: Pkcs11Backend, object_id: str) -> bool:
    from pkcs11 import Attribute

    with backend.pool.checkout() as pooled:
        return bool(list(pooled.session.get_objects({Attribute.ID: object_id.encode()})))


@pytest.fixture
def hsm(hsm_backend: Pkcs11Backend) -> Iterator[Services]:
    """Services over the shared token; afterwards, the pool keypairs its tokens took are destroyed
    too (the in-memory store that referred to them is gone), so no other test finds them."""
    services = build_services(hsm_backend)
    yield services
    services.import_tokens.close()
    for token in services.store.list_import_tokens_expired_before(
        clock_of(services).now().replace(year=9999)
    ):
        hsm_backend.destroy_import_keypair(token.hsm_object_id)
    close_services(services)


def make(backend: Pkcs11Backend, owner: str) -> str:
    object_id = f"{owner_prefix(owner)}{uuid.uuid4().hex}"
    backend.create_import_keypair(object_id, BITS)
    return object_id


def test_pool_fills_under_a_lease_and_token_creation_claims_from_it(
    hsm: Services, hsm_backend: Pkcs11Backend
) -> None:
    pool = KeypairPool(hsm_backend, size=2, bits=BITS)
    hsm.import_tokens.attach_pool(pool)
    assert pool.wait_ready(timeout=60)
    assert pool.owner in hsm_backend.pool_leases()  # written before the first keypair
    ready = {i for i in pool_ids(hsm_backend) if pool.owns(i)}
    assert len(ready) == 2

    ctx = call_context(new_tenant())
    token = hsm.import_tokens.create(ctx, key_bits=BITS)
    assert token.hsm_object_id in ready and pool.owns(token.hsm_object_id)
    assert pool.stats().taken == 1 and pool.stats().misses == 0
    # claimed: no pool cleanup anywhere counts it as a pooled keypair any more; its id still works
    assert token.hsm_object_id not in pool_ids(hsm_backend)
    assert exists(hsm_backend, token.hsm_object_id)

    # a claimed pooled keypair is a working import token: the documented secure-import flow succeeds
    hsm.import_tokens.retrieve(ctx)
    sent = encrypt_for_import(token)
    wrapped = hsm.import_tokens.unwrap(ctx, sent.request)
    assert wrapped.length == len(sent.material)

    # another size is generated inline, without touching the pool
    other = hsm.import_tokens.create(call_context(new_tenant()), key_bits=3072)
    assert owner_of(other.hsm_object_id) is None
    assert pool.stats().misses == 1

    assert pool.wait_ready(timeout=60)  # refilled in the background
    assert pool.stats().generated == 3


def test_a_cleaner_destroys_only_keypairs_whose_owner_is_provably_gone(
    hsm: Services, hsm_backend: Pkcs11Backend
) -> None:
    """Owners: a live one on another host (fresh lease), one whose lease ran out just now (within
    the clock-skew allowance: not provably gone), one whose lease ran out long ago, one that never
    had a lease, a process of this host that has exited (its lease is still fresh), and keypairs
    from before owners (`pool-w0-…`). One keypair of a gone owner is referenced by a stored token."""
    now = int(time.time())
    live, recent, expired, unleased = (new_owner() + f"x{n}" for n in range(4))
    exited = subprocess.run(
        [sys.executable, "-c", "from hsmbridge.core.keypair_pool import new_owner; print(new_owner())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert locally_gone(exited) and not locally_gone(new_owner())
    hsm_backend.renew_pool_lease(live, now + int(LEASE_SECONDS))
    hsm_backend.renew_pool_lease(recent, now - int(CLOCK_SKEW) // 2)
    hsm_backend.renew_pool_lease(expired, now - 3600)
    hsm_backend.renew_pool_lease(exited, now + int(LEASE_SECONDS))
    kept = {make(hsm_backend, live), make(hsm_backend, recent)}
    doomed = {make(hsm_backend, expired), make(hsm_backend, unleased), make(hsm_backend, exited)}
    legacy = f"pool-w0-{uuid.uuid4().hex}"
    hsm_backend.create_import_keypair(legacy, BITS)
    referenced = make(hsm_backend, expired)

    cleaner = KeypairPool(hsm_backend, size=0, bits=BITS)
    assert cleaner.destroy_orphans([referenced]) == len(doomed)
    remaining = pool_ids(hsm_backend)
    assert kept | {legacy, referenced} <= remaining
    assert not doomed & remaining
    leases = hsm_backend.pool_leases()
    assert live in leases and recent in leases and exited not in leases
    assert expired in leases  # still needed: `referenced` is its keypair
    for object_id in kept | {legacy, referenced}:
        hsm_backend.destroy_import_keypair(object_id)
    for owner in (live, recent, expired):
        hsm_backend.release_pool_lease(owner)


def test_two_live_pools_on_one_token_never_destroy_each_others_keypairs(
    hsm: Services, hsm_backend: Pkcs11Backend
) -> None:
    """Two daemons (or replicas) start and sweep while the other's pool is full; neither loses a
    keypair, and the first one's close destroys only its own."""
    first = KeypairPool(hsm_backend, size=1, bits=BITS)
    hsm.import_tokens.attach_pool(first)
    assert first.wait_ready(timeout=60)
    mine = {i for i in pool_ids(hsm_backend) if first.owns(i)}
    other_services = build_services(hsm_backend)
    second = KeypairPool(hsm_backend, size=1, bits=BITS)
    other_services.import_tokens.attach_pool(second)  # sweeps at start-up
    assert second.wait_ready(timeout=60)
    assert second.destroy_orphans([]) == 0 and first.destroy_orphans([]) == 0
    assert mine <= pool_ids(hsm_backend)
    theirs = {i for i in pool_ids(hsm_backend) if second.owns(i)}
    other_services.import_tokens.close()
    close_services(other_services)
    assert not theirs & pool_ids(hsm_backend) and mine <= pool_ids(hsm_backend)
    token = hsm.import_tokens.create(call_context(new_tenant()), key_bits=BITS)
    assert token.hsm_object_id in mine


def test_an_owner_whose_lease_lapsed_starts_over_and_hands_out_nothing_meanwhile(
    hsm_backend: Pkcs11Backend,
) -> None:
    wall = [time.time()]
    pool = KeypairPool(hsm_backend, size=1, bits=BITS, wall_clock=lambda: wall[0], renew_every=3600)
    pool.start()
    try:
        assert pool.wait_ready(timeout=60)
        (first,) = (i for i in pool_ids(hsm_backend) if pool.owns(i))
        wall[0] += LEASE_SECONDS - 10  # the lease (not renewed: say the HSM was down) nearly ran out
        assert pool.take(BITS) is None  # a cleaner elsewhere may soon judge this owner gone
        wall[0] += 20  # lapsed
        pool.renew()  # renewing after the lapse: the ready keypairs may be gone, start over
        assert pool.stats().ready == 0 or first not in {k.object_id for k in pool._ready}
        assert not exists(hsm_backend, first)
        assert pool.wait_ready(timeout=60)
        assert pool.take(BITS) is not None
    finally:
        pool.close()
    assert pool.owner not in hsm_backend.pool_leases()


def test_expired_tokens_pooled_keypairs_are_destroyed(hsm: Services, hsm_backend: Pkcs11Backend) -> None:
    pool = KeypairPool(hsm_backend, size=1, bits=BITS)
    hsm.import_tokens.attach_pool(pool)
    assert pool.wait_ready(timeout=60)
    token = hsm.import_tokens.create(call_context(new_tenant()), expiration_seconds=300, key_bits=BITS)
    assert pool.owns(token.hsm_object_id) and exists(hsm_backend, token.hsm_object_id)
    clock_of(hsm).advance(seconds=301)
    assert hsm.import_tokens.sweep_expired() >= 1
    assert not exists(hsm_backend, token.hsm_object_id)


def test_replacing_a_token_destroys_the_pooled_keypair_it_used(
    hsm: Services, hsm_backend: Pkcs11Backend
) -> None:
    pool = KeypairPool(hsm_backend, size=1, bits=BITS)
    hsm.import_tokens.attach_pool(pool)
    ctx = call_context(new_tenant())
    assert pool.wait_ready(timeout=60)
    first = hsm.import_tokens.create(ctx, key_bits=BITS)
    second = hsm.import_tokens.create(ctx, key_bits=BITS)  # pool empty or refilled: either way
    assert not exists(hsm_backend, first.hsm_object_id)
    assert second.hsm_object_id != first.hsm_object_id


def test_close_destroys_unused_keypairs_and_stale_ones_are_not_handed_out(
    hsm_backend: Pkcs11Backend,
) -> None:
    now = [0.0]
    pool = KeypairPool(hsm_backend, size=2, bits=BITS, max_age=60, clock=lambda: now[0])
    pool.start()
    assert pool.wait_ready(timeout=60)
    mine = {i for i in pool_ids(hsm_backend) if pool.owns(i)}
    assert len(mine) == 2
    now[0] = 61.0  # both are now older than max_age
    assert pool.take(BITS) is None
    assert not mine & pool_ids(hsm_backend)
    assert pool.wait_ready(timeout=60)
    pool.close()
    assert not {i for i in pool_ids(hsm_backend) if pool.owns(i)}
    assert pool.owner not in hsm_backend.pool_leases()
    assert pool.take(BITS) is None  # closed


def test_a_pool_of_size_zero_never_generates(hsm: Services, hsm_backend: Pkcs11Backend) -> None:
    pool = KeypairPool(hsm_backend, size=0, bits=BITS)
    hsm.import_tokens.attach_pool(pool)
    token = hsm.import_tokens.create(call_context(new_tenant()), key_bits=BITS)
    assert owner_of(token.hsm_object_id) is None
    assert pool.stats().generated == 0
    assert pool.owner not in hsm_backend.pool_leases()
