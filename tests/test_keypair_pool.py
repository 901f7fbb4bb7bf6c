"""The import-token keypair pool on a real SoftHSM2 token: it fills in the background, token
creation takes from it, a restarted worker destroys the unused pooled keypairs its predecessor
left (and nothing else), expired tokens' pooled keypairs are destroyed like any other, and a
graceful close leaves no pool object behind.

RSA-2048 keeps these quick (≈0.3 s per keygen); the daemon's default is RSA-4096. No timing is
asserted: waits are bounded only so a broken pool fails instead of hanging.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from services import build_services, call_context, clock_of, close_services, encrypt_for_import, new_tenant

from hsmbridge.core.keypair_pool import KeypairPool, slot_prefix
from hsmbridge.core.services import Services
from hsmbridge.hsm.backend import Pkcs11Backend

pytestmark = pytest.mark.softhsm

BITS = 2048


def pool_ids(backend: Pkcs11Backend) -> set[str]:
    return set(backend.find_import_keypairs("pool-"))


@pytest.fixture
def hsm(hsm_backend: Pkcs11Backend) -> Iterator[Services]:
    """Services over the shared token; afterwards, the pool keypairs its tokens took are destroyed
    too (the in-memory store that referred to them is gone), so no other test finds them."""
    before = pool_ids(hsm_backend)
    services = build_services(hsm_backend)
    yield services
    services.import_tokens.close()
    close_services(services)
    for object_id in pool_ids(hsm_backend) - before:
        hsm_backend.destroy_import_keypair(object_id)


def test_pool_fills_and_token_creation_takes_from_it(hsm: Services, hsm_backend: Pkcs11Backend) -> None:
    pool = KeypairPool(hsm_backend, size=2, bits=BITS, worker=7, workers=8)
    hsm.import_tokens.attach_pool(pool)
    assert pool.wait_ready(timeout=60)
    ready = pool_ids(hsm_backend)
    assert len([i for i in ready if i.startswith(slot_prefix(7))]) == 2

    ctx = call_context(new_tenant())
    token = hsm.import_tokens.create(ctx, key_bits=BITS)
    assert token.hsm_object_id.startswith(slot_prefix(7))
    assert token.hsm_object_id in ready
    assert pool.stats().taken == 1 and pool.stats().misses == 0

    # a pooled keypair is a working import token: the documented secure-import flow succeeds
    hsm.import_tokens.retrieve(ctx)
    sent = encrypt_for_import(token)
    wrapped = hsm.import_tokens.unwrap(ctx, sent.request)
    assert wrapped.length == len(sent.material)

    # another size is generated inline, without touching the pool
    other = hsm.import_tokens.create(call_context(new_tenant()), key_bits=3072)
    assert not other.hsm_object_id.startswith("pool-")
    assert pool.stats().misses == 1

    assert pool.wait_ready(timeout=60)  # refilled in the background
    assert pool.stats().generated == 3


def test_restart_destroys_only_this_slots_unused_orphans(hsm: Services, hsm_backend: Pkcs11Backend) -> None:
    """What a worker killed with -9 leaves behind: pooled keypairs never handed out (orphans) and
    one handed to a stored token (in use). Slot 1 belongs to a live sibling; slot 5 is beyond
    the current worker count (a larger configuration before), so worker 0 claims it."""

    def make(object_id: str) -> str:
        hsm_backend.create_import_keypair(object_id, BITS)
        return object_id

    crashed = KeypairPool(hsm_backend, size=1, bits=BITS, worker=0, workers=2)
    hsm.import_tokens.attach_pool(crashed)
    assert crashed.wait_ready(timeout=60)
    in_use = hsm.import_tokens.create(call_context(new_tenant()), key_bits=BITS).hsm_object_id
    assert crashed.wait_ready(timeout=60)
    orphan = make(f"{slot_prefix(0)}{uuid.uuid4().hex}")
    beyond = make(f"{slot_prefix(5)}{uuid.uuid4().hex}")
    sibling = make(f"{slot_prefix(1)}{uuid.uuid4().hex}")
    left_in_pool = crashed._ready[0].object_id
    # the process "dies": its refill thread stops and nothing destroys what it generated
    hsm.import_tokens.pool = None
    with crashed._cond:
        crashed._closed = True
        crashed._cond.notify_all()
    assert crashed._thread is not None
    crashed._thread.join(60)

    restarted = KeypairPool(hsm_backend, size=0, bits=BITS, worker=0, workers=2)
    hsm.import_tokens.attach_pool(restarted)
    remaining = pool_ids(hsm_backend)
    assert orphan not in remaining and beyond not in remaining and left_in_pool not in remaining
    assert sibling in remaining and in_use in remaining
    assert restarted.stats().orphans_destroyed == 3
    hsm_backend.destroy_import_keypair(sibling)


def test_expired_tokens_pooled_keypairs_are_destroyed(hsm: Services, hsm_backend: Pkcs11Backend) -> None:
    pool = KeypairPool(hsm_backend, size=1, bits=BITS, worker=6, workers=8)
    hsm.import_tokens.attach_pool(pool)
    assert pool.wait_ready(timeout=60)
    token = hsm.import_tokens.create(call_context(new_tenant()), expiration_seconds=300, key_bits=BITS)
    assert token.hsm_object_id in pool_ids(hsm_backend)
    clock_of(hsm).advance(seconds=301)
    assert hsm.import_tokens.sweep_expired() >= 1
    assert token.hsm_object_id not in pool_ids(hsm_backend)


def test_replacing_a_token_destroys_the_pooled_keypair_it_used(
    hsm: Services, hsm_backend: Pkcs11Backend
) -> None:
    pool = KeypairPool(hsm_backend, size=1, bits=BITS, worker=4, workers=8)
    hsm.import_tokens.attach_pool(pool)
    ctx = call_context(new_tenant())
    assert pool.wait_ready(timeout=60)
    first = hsm.import_tokens.create(ctx, key_bits=BITS)
    second = hsm.import_tokens.create(ctx, key_bits=BITS)  # pool empty or refilled: either way
    assert first.hsm_object_id not in pool_ids(hsm_backend)
    assert second.hsm_object_id != first.hsm_object_id


def test_close_destroys_unused_keypairs_and_stale_ones_are_not_handed_out(
    hsm_backend: Pkcs11Backend,
) -> None:
    now = [0.0]
    pool = KeypairPool(hsm_backend, size=2, bits=BITS, worker=3, workers=8, max_age=60, clock=lambda: now[0])
    pool.start()
    assert pool.wait_ready(timeout=60)
    mine = {i for i in pool_ids(hsm_backend) if i.startswith(slot_prefix(3))}
    assert len(mine) == 2
    now[0] = 61.0  # both are now older than max_age
    assert pool.take(BITS) is None
    assert not mine & pool_ids(hsm_backend)
    assert pool.wait_ready(timeout=60)
    pool.close()
    assert not {i for i in pool_ids(hsm_backend) if i.startswith(slot_prefix(3))}
    assert pool.take(BITS) is None  # closed


def test_a_pool_of_size_zero_never_generates(hsm: Services, hsm_backend: Pkcs11Backend) -> None:
    pool = KeypairPool(hsm_backend, size=0, bits=BITS, worker=2, workers=8)
    hsm.import_tokens.attach_pool(pool)
    token = hsm.import_tokens.create(call_context(new_tenant()), key_bits=BITS)
    assert not token.hsm_object_id.startswith("pool-")
    assert pool.stats().generated == 0
