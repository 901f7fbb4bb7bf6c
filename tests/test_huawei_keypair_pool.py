"""Bound import parameters (core/external_keys.py) take their RSA-2048 keypair from the
import-keypair pool when one is ready, and a restarted worker's orphan clean-up keeps the keypairs
that unused import parameters still refer to — on a real SoftHSM2 token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from services import build_services, call_context, close_services, new_tenant

from hsmbridge.core import external_keys as ext
from hsmbridge.core.backend import KeyWrapping
from hsmbridge.core.keypair_pool import KeypairPool
from hsmbridge.core.services import Services
from hsmbridge.hsm.backend import Pkcs11Backend

pytestmark = pytest.mark.softhsm


def pool_ids(backend: Pkcs11Backend) -> set[str]:
    return set(backend.find_import_keypairs("pool-"))


@pytest.fixture
def hsm(hsm_backend: Pkcs11Backend) -> Iterator[Services]:
    before = pool_ids(hsm_backend)
    services = build_services(hsm_backend)
    yield services
    services.import_tokens.close()
    close_services(services)
    for object_id in pool_ids(hsm_backend) - before:
        hsm_backend.destroy_import_keypair(object_id)


def test_import_parameters_use_the_pool_and_survive_a_restart(
    hsm: Services, hsm_backend: Pkcs11Backend
) -> None:
    pool = KeypairPool(hsm_backend, size=1, bits=ext.IMPORT_KEY_BITS)
    hsm.import_tokens.attach_pool(pool)
    assert pool.wait_ready(timeout=60)
    ctx = call_context(new_tenant())
    key_id = hsm.external_keys.create(ctx, alias="pooled", description="", origin=ext.ORIGIN_EXTERNAL).key.id
    params = hsm.external_keys.import_parameters(ctx, key_id, KeyWrapping.OAEP_SHA1)
    assert pool.stats().misses == 0

    hsm.import_tokens.close()  # the process restarts: its successor sweeps for orphans
    hsm.import_tokens.attach_pool(KeypairPool(hsm_backend, size=0, bits=ext.IMPORT_KEY_BITS))

    public = serialization.load_der_public_key(params.public_key_der)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    encrypted = public.encrypt(bytes(32), oaep)  # type: ignore[union-attr]
    view = hsm.external_keys.import_material(
        ctx, key_id, import_token=params.import_token, encrypted_material=encrypted
    )
    assert view.material_usable
