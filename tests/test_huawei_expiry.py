"""Time in the bring-your-own-key model (core/external_keys.py), with an injectable clock, over the
software fake and a real SoftHSM2 token: import tokens expire, imported material with an
`expiration_time` is unusable from that instant and deleted 24 h later, scheduled deletions happen
when due, and the sweeper destroys expired import keypairs in the HSM."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from hsmbridge.core import external_keys as ext
from hsmbridge.core.backend import KeyWrapping
from hsmbridge.core.clock import FixedClock
from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.errors import HsmBridgeError, NotFound

pytest_plugins = ("services_fixtures",)
pytestmark = pytest.mark.any_hsm

MATERIAL = bytes(range(32))


def encrypt_to(public_der: bytes, material: bytes = MATERIAL) -> bytes:
    public = serialization.load_der_public_key(public_der)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return public.encrypt(material, oaep)  # type: ignore[union-attr]


def new_external(services: Services, ctx: CallContext, alias: str = "k") -> str:
    return services.external_keys.create(ctx, alias=alias, description="", origin=ext.ORIGIN_EXTERNAL).key.id


def import_(services: Services, ctx: CallContext, key_id: str, **kwargs: object) -> None:
    params = services.external_keys.import_parameters(ctx, key_id, KeyWrapping.OAEP_SHA1)
    services.external_keys.import_material(
        ctx,
        key_id,
        import_token=params.import_token,
        encrypted_material=encrypt_to(params.public_key_der),
        **kwargs,
    )


def condition(error: pytest.ExceptionInfo[HsmBridgeError]) -> str | None:
    return error.value.metadata.get(ext.CONDITION)


def test_an_import_token_expires_after_24_hours(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key_id = new_external(services, ctx)
    params = services.external_keys.import_parameters(ctx, key_id, KeyWrapping.OAEP_SHA1)
    assert params.expires_at == clock.now() + ext.IMPORT_PARAMETERS_TTL
    clock.advance(hours=24, seconds=1)
    with pytest.raises(HsmBridgeError) as info:
        services.external_keys.import_material(
            ctx,
            key_id,
            import_token=params.import_token,
            encrypted_material=encrypt_to(params.public_key_der),
        )
    assert condition(info) == ext.TOKEN_REJECTED


def test_expired_material_is_unusable_at_once_and_deleted_24_hours_later(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key_id = new_external(services, ctx)
    import_(services, ctx, key_id, expires_at=clock.now() + timedelta(hours=1))
    sealed = services.envelopes.wrap(
        ctx, services.external_keys.for_use(ctx, key_id).key.id, b"data"
    ).ciphertext

    clock.advance(minutes=59)
    services.external_keys.for_use(ctx, key_id)
    clock.advance(minutes=1)
    with pytest.raises(HsmBridgeError) as info:
        services.external_keys.for_use(ctx, key_id)
    assert condition(info) == ext.PENDING_IMPORT
    assert services.store.list_versions(ctx.tenant, key_id), "kept for 24 h"

    clock.advance(hours=24)
    view = services.external_keys.get(ctx, key_id)
    assert not view.record.material_present
    assert services.store.list_versions(ctx.tenant, key_id) == [], "the material is gone"

    import_(services, ctx, key_id)  # the same material, without an expiry this time
    opened = services.envelopes.unwrap(ctx, key_id, sealed).plaintext
    assert bytes(opened) == b"data"


def test_the_sweeper_deletes_expired_material_due_keys_and_expired_keypairs(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    expiring = new_external(services, ctx, "expiring")
    import_(services, ctx, expiring, expires_at=clock.now() + timedelta(minutes=5))
    doomed = new_external(services, ctx, "doomed")
    services.external_keys.schedule_deletion(ctx, doomed, 7)
    waiting = new_external(services, ctx, "waiting")
    params = services.external_keys.import_parameters(ctx, waiting, KeyWrapping.OAEP_SHA1)

    clock.advance(days=8)
    assert services.external_keys.sweep() == 3
    assert services.store.list_versions(ctx.tenant, expiring) == []
    assert services.store.get_key(ctx.tenant, doomed) is None
    with pytest.raises(HsmBridgeError) as info:  # its keypair is gone from the HSM
        services.external_keys.import_material(
            ctx,
            waiting,
            import_token=params.import_token,
            encrypted_material=encrypt_to(params.public_key_der),
        )
    assert condition(info) == ext.TOKEN_REJECTED
    assert services.external_keys.sweep() == 0


def test_a_scheduled_deletion_takes_effect_when_due(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key_id = new_external(services, ctx)
    import_(services, ctx, key_id)
    services.external_keys.schedule_deletion(ctx, key_id, 7)
    clock.advance(days=6, hours=23)
    assert services.external_keys.get(ctx, key_id).pending_deletion
    clock.advance(hours=1)
    with pytest.raises(NotFound):
        services.external_keys.get(ctx, key_id)
