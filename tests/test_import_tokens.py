"""Spec §5: import tokens and secure import (bring your own key), on the fake and on SoftHSM2.

The client side is written here with `cryptography`, as a Key Protect SDK would do it: OAEP-encrypt
the material to the token's public key, AES-GCM-encrypt the token's nonce under the material. The
end-to-end tests then check, with software AES-GCM and the material the client kept, that the key
the HSM holds is exactly the imported one.

Most tokens are RSA-2048 to keep the suite fast; one slow test uses the 4096-bit default on the
real token.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fakes import FakeBackend
from services import (
    ClientImport,
    build_services,
    call_context,
    clock_of,
    close_services,
    encrypt_for_import,
    new_store,
    new_tenant,
    public_key_of,
)

from hsmbridge.core.backend import OaepHash
from hsmbridge.core.clock import FixedClock
from hsmbridge.core.envelope import Envelope, associated_data
from hsmbridge.core.import_tokens import (
    DEFAULT_EXPIRATION,
    DEFAULT_KEY_BITS,
    MAX_EXPIRATION,
    MAX_RETRIEVALS,
    MIN_EXPIRATION,
    SecureImport,
)
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import ImportToken, Key
from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import KeyQuery
from hsmbridge.errors import (
    Conflict,
    HsmBridgeError,
    IntegrityError,
    InvalidInput,
    NotFound,
    Reason,
)

pytest_plugins = ("services_fixtures",)
pytestmark = pytest.mark.any_hsm

FAST_BITS = 2048
DEK = os.urandom(32)
AAD = ["tenant-data", "v1"]


def new_token(services: Services, ctx: CallContext, **options: int) -> ImportToken:
    """Create and retrieve a token, as a client does before importing."""
    options.setdefault("key_bits", FAST_BITS)
    services.import_tokens.create(ctx, **options)
    return services.import_tokens.retrieve(ctx)


def import_key(services: Services, ctx: CallContext, client: ClientImport, name: str = "byok") -> Key:
    return services.keys.create(ctx, KeySpec(name=name, secure_import=client.request))


def raises(error: type[HsmBridgeError], reason: Reason) -> pytest.RaisesExc[HsmBridgeError]:
    """Exactly `error` (not a subclass) with exactly `reason`."""
    return pytest.raises(error, check=lambda exc: type(exc) is error and exc.reason is reason)


def assert_hsm_holds(
    services: Services, ctx: CallContext, key: Key, material: bytes, aad: Sequence[str] = AAD
) -> None:
    """The key's current version is `material`: the HSM's envelope opens with software AES-GCM
    under it, and an envelope sealed in software under it opens in the HSM."""
    wrapped = services.envelopes.wrap(ctx, key.id, DEK, aad)
    envelope = Envelope.parse(wrapped.ciphertext)
    ad = associated_data(tenant=ctx.tenant, key_id=key.id, key_version_id=envelope.key_version_id, aad=aad)
    assert AESGCM(material).decrypt(envelope.iv, envelope.ciphertext, ad) == DEK

    iv = os.urandom(12)
    sealed = Envelope(envelope.key_version_id, iv, AESGCM(material).encrypt(iv, DEK[::-1], ad))
    assert services.envelopes.unwrap(ctx, key.id, sealed.to_bytes(), aad).plaintext == DEK[::-1]


# --- create and retrieve ------------------------------------------------------------------------------


class _KeygenRecorder(FakeBackend):
    """Records the RSA size asked for, but generates 2048 bits so the defaults test stays fast."""

    def __init__(self) -> None:
        super().__init__()
        self.requested_bits: list[int] = []

    def create_import_keypair(self, object_id: str, bits: int) -> bytes:
        self.requested_bits.append(bits)
        return super().create_import_keypair(object_id, FAST_BITS)


def test_create_defaults_to_600_seconds_one_retrieval_and_rsa_4096(tenant: str) -> None:
    backend = _KeygenRecorder()
    services = build_services(backend)
    try:
        ctx = call_context(tenant)
        now = clock_of(services).now()
        token = services.import_tokens.create(ctx)
        assert backend.requested_bits == [DEFAULT_KEY_BITS] == [4096]
        assert token.key_bits == 4096
        assert DEFAULT_EXPIRATION == 600
        assert token.created_at == now
        assert (token.expires_at - now).total_seconds() == 600
        assert token.max_retrievals == token.remaining_retrievals == 1
        assert len(token.nonce) == 12
        assert token.tenant == tenant
        assert token.created_by == "alice"
    finally:
        close_services(services)


@pytest.mark.slow
@pytest.mark.softhsm
def test_default_rsa_4096_token_imports_end_to_end_on_the_hsm(
    hsm_services: Services, ctx: CallContext
) -> None:
    services = hsm_services
    services.import_tokens.create(ctx)
    token = services.import_tokens.retrieve(ctx)
    assert token.key_bits == 4096
    assert public_key_of(token).key_size == 4096
    for oaep_hash in OaepHash:
        client = encrypt_for_import(token, oaep_hash=oaep_hash)
        key = import_key(services, ctx, client, f"byok-{oaep_hash}")
        assert_hsm_holds(services, ctx, key, client.material)


@pytest.mark.parametrize(
    ("options", "target"),
    [
        ({"expiration_seconds": MIN_EXPIRATION - 1}, "expiration"),
        ({"expiration_seconds": MAX_EXPIRATION + 1}, "expiration"),
        ({"expiration_seconds": 0}, "expiration"),
        ({"max_retrievals": 0}, "maxAllowedRetrievals"),
        ({"max_retrievals": MAX_RETRIEVALS + 1}, "maxAllowedRetrievals"),
        ({"max_retrievals": -1}, "maxAllowedRetrievals"),
        ({"key_bits": 1024}, "keyBits"),
        ({"key_bits": 2047}, "keyBits"),
        ({"key_bits": 8192}, "keyBits"),
    ],
)
def test_create_refuses_out_of_range_options(
    services: Services, ctx: CallContext, options: dict[str, int], target: str
) -> None:
    options.setdefault("key_bits", FAST_BITS)
    with pytest.raises(InvalidInput, check=lambda e: e.reason is Reason.INVALID_FIELD and e.target == target):
        services.import_tokens.create(ctx, **options)
    with raises(NotFound, Reason.IMPORT_TOKEN_NOT_FOUND):  # nothing was stored
        services.import_tokens.current(ctx)
    if isinstance(services.backend, FakeBackend):
        assert services.backend.import_keys == {}  # and no keypair generated


def test_create_accepts_the_bounds(services: Services, ctx: CallContext, clock: FixedClock) -> None:
    low = services.import_tokens.create(
        ctx, expiration_seconds=MIN_EXPIRATION, max_retrievals=1, key_bits=FAST_BITS
    )
    assert (low.expires_at - clock.now()).total_seconds() == 300
    high = services.import_tokens.create(
        ctx, expiration_seconds=MAX_EXPIRATION, max_retrievals=MAX_RETRIEVALS, key_bits=FAST_BITS
    )
    assert (high.expires_at - clock.now()).total_seconds() == 86_400
    assert high.remaining_retrievals == 500


def test_retrieve_spends_one_retrieval_and_hands_out_the_public_key_and_nonce(
    services: Services, ctx: CallContext
) -> None:
    created = services.import_tokens.create(ctx, max_retrievals=3, key_bits=FAST_BITS)
    assert services.import_tokens.current(ctx).remaining_retrievals == 3  # reading metadata is free
    retrieved = [services.import_tokens.retrieve(ctx) for _ in range(3)]
    assert [t.remaining_retrievals for t in retrieved] == [2, 1, 0]
    assert services.import_tokens.current(ctx).remaining_retrievals == 0
    for token in retrieved:
        assert token.id == created.id
        assert token.nonce == created.nonce
        assert token.public_key_der == created.public_key_der
    public = public_key_of(retrieved[0])
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == FAST_BITS
    assert public.public_numbers().e == 65537


class _DawdlingClock(FixedClock):
    """Reading the time takes a while: widens the window between a retrieval's read and write."""

    dawdle = 0.0

    def now(self):  # type: ignore[no-untyped-def]
        time.sleep(self.dawdle)
        return super().now()


def test_concurrent_retrievals_cannot_overspend_the_token(tmp_path: Path, tenant: str) -> None:
    """Replicas (threads here) retrieving at once: each retrieval is one read-check-decrement, so
    exactly `maxAllowedRetrievals` of them succeed however they interleave."""
    clock = _DawdlingClock()
    backend = FakeBackend()
    services = build_services(backend, clock=clock, store=new_store(str(tmp_path / "store.db")))
    ctx = call_context(tenant)
    try:
        services.import_tokens.create(ctx, max_retrievals=2, key_bits=FAST_BITS)
        clock.dawdle = 0.02
        barrier = threading.Barrier(6)

        def retrieve() -> int | str:
            barrier.wait()
            try:
                return services.import_tokens.retrieve(ctx).remaining_retrievals
            except Conflict as exc:
                return exc.reason

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(lambda _: retrieve(), range(6)))
        assert sorted(outcomes, key=str) == [0, 1] + [Reason.IMPORT_TOKEN_EXPIRED] * 4
        assert services.import_tokens.current(ctx).remaining_retrievals == 0
    finally:
        close_services(services)
        backend.close()


def test_an_exhausted_token_cannot_be_retrieved_but_still_imports(
    services: Services, ctx: CallContext
) -> None:
    """Spec §5.1 reconciliation: with the default single retrieval the documented flow (create,
    retrieve once, import) must work, so only GET is refused once the count is spent."""
    token = new_token(services, ctx)  # max_retrievals=1: now spent
    with raises(Conflict, Reason.IMPORT_TOKEN_EXPIRED):
        services.import_tokens.retrieve(ctx)
    client = encrypt_for_import(token)
    key = import_key(services, ctx, client)
    assert_hsm_holds(services, ctx, key, client.material)
    # and the token stays reusable for more imports until it expires
    second = encrypt_for_import(token, os.urandom(16))
    assert_hsm_holds(services, ctx, import_key(services, ctx, second, "byok-2"), second.material)


def test_an_expired_token_can_neither_be_retrieved_nor_import(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    services.import_tokens.create(ctx, max_retrievals=5, key_bits=FAST_BITS)
    token = services.import_tokens.retrieve(ctx)
    generated = services.keys.create(ctx, KeySpec(name="generated"))
    imported = services.keys.create(ctx, KeySpec(name="imported", payload=os.urandom(32)))

    clock.advance(seconds=DEFAULT_EXPIRATION - 1)
    services.import_tokens.retrieve(ctx)  # one second left: still fine

    clock.advance(seconds=1)
    with raises(Conflict, Reason.IMPORT_TOKEN_EXPIRED):
        services.import_tokens.retrieve(ctx)
    client = encrypt_for_import(token)
    with raises(Conflict, Reason.IMPORT_TOKEN_EXPIRED):
        import_key(services, ctx, client)
    with raises(Conflict, Reason.IMPORT_TOKEN_EXPIRED):
        services.keys.rotate(ctx, imported.id, secure_import=client.request)
    assert services.keys.count(ctx, KeyQuery()) == 2  # nothing was created
    assert services.keys.get(ctx, generated.id).current_version_id == generated.id


def test_without_a_token_there_is_nothing_to_retrieve_or_import_with(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    token = new_token(services, other_tenant)  # another tenant's token is not mine
    with raises(NotFound, Reason.IMPORT_TOKEN_NOT_FOUND):
        services.import_tokens.current(ctx)
    with raises(NotFound, Reason.IMPORT_TOKEN_NOT_FOUND):
        services.import_tokens.retrieve(ctx)
    with raises(NotFound, Reason.IMPORT_TOKEN_NOT_FOUND):
        import_key(services, ctx, encrypt_for_import(token))
    assert services.keys.count(ctx, KeyQuery()) == 0


def test_tokens_are_per_tenant(services: Services, ctx: CallContext, other_tenant: CallContext) -> None:
    mine = new_token(services, ctx)
    theirs = new_token(services, other_tenant)
    assert services.import_tokens.current(ctx).id == mine.id  # their create did not replace mine
    assert mine.public_key_der != theirs.public_key_der
    assert mine.nonce != theirs.nonce
    # material encrypted to their token (with their nonce) does not import into my tenant
    with pytest.raises(IntegrityError):
        import_key(services, ctx, encrypt_for_import(theirs))
    # with their nonce but my public key, the proof of possession fails
    with raises(InvalidInput, Reason.INCORRECT_NONCE):
        import_key(services, ctx, encrypt_for_import(mine, nonce=theirs.nonce))


def test_a_new_token_replaces_the_old_and_destroys_its_keypair(services: Services, ctx: CallContext) -> None:
    old = new_token(services, ctx)
    stale = encrypt_for_import(old)
    new = new_token(services, ctx)
    assert new.id != old.id
    assert new.public_key_der != old.public_key_der
    assert new.nonce != old.nonce
    assert services.import_tokens.current(ctx).id == new.id

    with pytest.raises(IntegrityError):  # the old public key's ciphertext does not open
        import_key(services, ctx, stale)
    # and the old private key is gone from the HSM, not merely forgotten by the store
    request = stale.request
    with raises(NotFound, Reason.IMPORT_TOKEN_NOT_FOUND):
        services.backend.import_key(
            old.hsm_object_id, request.encrypted_key, request.oaep_hash, request.iv, request.encrypted_nonce
        )
    fresh = encrypt_for_import(new)
    assert_hsm_holds(services, ctx, import_key(services, ctx, fresh), fresh.material)


def test_sweep_destroys_expired_tokens(
    services: Services, ctx: CallContext, other_tenant: CallContext, clock: FixedClock
) -> None:
    expiring = new_token(services, ctx)
    clock.advance(seconds=MIN_EXPIRATION)
    lasting = new_token(services, other_tenant)
    clock.advance(seconds=DEFAULT_EXPIRATION - MIN_EXPIRATION + 1)  # ctx's token expired, the other not
    assert services.import_tokens.sweep_expired() == 1
    with raises(NotFound, Reason.IMPORT_TOKEN_NOT_FOUND):
        services.import_tokens.current(ctx)
    request = encrypt_for_import(expiring).request
    with raises(NotFound, Reason.IMPORT_TOKEN_NOT_FOUND):
        services.backend.import_key(
            expiring.hsm_object_id,
            request.encrypted_key,
            request.oaep_hash,
            request.iv,
            request.encrypted_nonce,
        )
    assert services.import_tokens.current(other_tenant).id == lasting.id
    client = encrypt_for_import(lasting)
    assert_hsm_holds(services, other_tenant, import_key(services, other_tenant, client), client.material)


# --- secure import end to end ---------------------------------------------------------------------------


@pytest.mark.parametrize("oaep_hash", list(OaepHash), ids=str)
def test_secure_import_end_to_end(services: Services, ctx: CallContext, oaep_hash: OaepHash) -> None:
    token = new_token(services, ctx)
    for size in (32, 16, 24):
        client = encrypt_for_import(token, os.urandom(size), oaep_hash=oaep_hash)
        key = import_key(services, ctx, client, f"byok-{size}")
        assert key.imported and key.is_root
        assert key.bit_length == size * 8
        assert_hsm_holds(services, ctx, key, client.material)


def test_the_nonce_must_be_the_tokens(services: Services, ctx: CallContext) -> None:
    token = new_token(services, ctx)
    for nonce in (os.urandom(12), token.nonce[:-1] + bytes([token.nonce[-1] ^ 1]), b"", token.nonce * 2):
        with raises(InvalidInput, Reason.INCORRECT_NONCE):
            import_key(services, ctx, encrypt_for_import(token, nonce=nonce))
    assert services.keys.count(ctx, KeyQuery()) == 0


def test_a_nonce_not_sealed_under_the_imported_material_is_an_integrity_error(
    services: Services, ctx: CallContext
) -> None:
    token = new_token(services, ctx)
    other_material = encrypt_for_import(token, nonce_material=os.urandom(32))
    other_size = encrypt_for_import(token, os.urandom(32), nonce_material=os.urandom(16))
    good = encrypt_for_import(token)
    wrong_iv = replace(good.request, iv=os.urandom(12))
    flipped = bytearray(good.request.encrypted_nonce)
    flipped[-1] ^= 1  # the GCM tag
    tampered = replace(good.request, encrypted_nonce=bytes(flipped))
    for request in (other_material.request, other_size.request, wrong_iv, tampered):
        with raises(IntegrityError, Reason.INCORRECT_NONCE_IV):
            services.keys.create(ctx, KeySpec(name="byok", secure_import=request))
    assert services.keys.count(ctx, KeyQuery()) == 0


@pytest.mark.parametrize("iv_size", [0, 11, 13, 16])
def test_the_iv_must_be_12_bytes(services: Services, ctx: CallContext, iv_size: int) -> None:
    token = new_token(services, ctx)
    request = replace(encrypt_for_import(token).request, iv=os.urandom(iv_size))
    with pytest.raises(InvalidInput, check=lambda e: e.reason is Reason.INCORRECT_NONCE_IV):
        services.keys.create(ctx, KeySpec(name="byok", secure_import=request))


def _garbage(token: ImportToken, public_key_bytes: int) -> dict[str, SecureImport]:
    good = encrypt_for_import(token)
    sha1_declared_sha256 = encrypt_for_import(token, oaep_hash=OaepHash.SHA1).request
    return {
        "random": replace(good.request, encrypted_key=os.urandom(public_key_bytes)),
        "all-ones": replace(good.request, encrypted_key=b"\xff" * public_key_bytes),
        "zeros": replace(good.request, encrypted_key=b"\x00" * public_key_bytes),
        "short": replace(good.request, encrypted_key=good.request.encrypted_key[:-1]),
        "long": replace(good.request, encrypted_key=good.request.encrypted_key + b"\x00"),
        "empty": replace(good.request, encrypted_key=b""),
        "bit-flipped": replace(
            good.request,
            encrypted_key=bytes([good.request.encrypted_key[0] ^ 1]) + good.request.encrypted_key[1:],
        ),
        "wrong-oaep-hash": replace(sha1_declared_sha256, oaep_hash=OaepHash.SHA256),
    }


def test_garbage_rsa_ciphertext_is_an_integrity_error(services: Services, ctx: CallContext) -> None:
    token = new_token(services, ctx)
    for name, request in _garbage(token, FAST_BITS // 8).items():
        with pytest.raises(IntegrityError) as exc_info:
            services.keys.create(ctx, KeySpec(name="byok", secure_import=request))
        assert exc_info.value.reason in (Reason.INTEGRITY_CHECK_FAILED, Reason.INCORRECT_NONCE_IV), name
    assert services.keys.count(ctx, KeyQuery()) == 0


@pytest.mark.parametrize("size", [8, 20, 31, 33, 64])
def test_material_of_a_non_aes_size_is_refused(services: Services, ctx: CallContext, size: int) -> None:
    token = new_token(services, ctx)
    client = encrypt_for_import(
        token, os.urandom(size), oaep_hash=OaepHash.SHA1, nonce_material=os.urandom(32)
    )
    with pytest.raises(IntegrityError):
        import_key(services, ctx, client)
    assert services.keys.count(ctx, KeyQuery()) == 0


def test_standard_keys_cannot_be_imported_with_a_token(services: Services, ctx: CallContext) -> None:
    token = new_token(services, ctx)
    request = encrypt_for_import(token).request
    with pytest.raises(InvalidInput, check=lambda e: e.target == "encryptedNonce"):
        services.keys.create(ctx, KeySpec(name="byok", extractable=True, secure_import=request))


# --- rotation with secure material ----------------------------------------------------------------------


def test_rotate_an_imported_key_with_secure_material(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    services.import_tokens.create(ctx, max_retrievals=1, key_bits=FAST_BITS, expiration_seconds=7200)
    token = services.import_tokens.retrieve(ctx)
    first = encrypt_for_import(token, os.urandom(16))
    key = import_key(services, ctx, first)
    old_ciphertext = services.envelopes.wrap(ctx, key.id, DEK, AAD).ciphertext

    second = encrypt_for_import(token, os.urandom(32), oaep_hash=OaepHash.SHA1)
    rotated = services.keys.rotate(ctx, key.id, secure_import=second.request)
    assert rotated.current_version_id != key.id
    assert rotated.bit_length == 256
    assert rotated.imported
    assert_hsm_holds(services, ctx, rotated, second.material)

    result = services.envelopes.unwrap(ctx, key.id, old_ciphertext, AAD)
    assert result.plaintext == DEK
    assert result.rewrapped_key_version_id == rotated.current_version_id

    clock.advance(hours=1)  # and a plain payload works for the next rotation too
    third = os.urandom(24)
    assert_hsm_holds(services, ctx, services.keys.rotate(ctx, key.id, payload=third), third)


def test_a_generated_key_does_not_rotate_with_secure_material(services: Services, ctx: CallContext) -> None:
    token = new_token(services, ctx)
    key = services.keys.create(ctx, KeySpec(name="generated"))
    with pytest.raises(InvalidInput, check=lambda e: e.reason is Reason.INVALID_FIELD):
        services.keys.rotate(ctx, key.id, secure_import=encrypt_for_import(token).request)


def test_a_failed_secure_rotation_leaves_the_key_as_it_was(services: Services, ctx: CallContext) -> None:
    token = new_token(services, ctx)
    first = encrypt_for_import(token)
    key = import_key(services, ctx, first)
    with raises(InvalidInput, Reason.INCORRECT_NONCE):
        services.keys.rotate(
            ctx, key.id, secure_import=encrypt_for_import(token, nonce=os.urandom(12)).request
        )
    assert [v.id for v in services.keys.versions(ctx, key.id)] == [key.id]
    assert_hsm_holds(services, ctx, services.keys.get(ctx, key.id), first.material)


# --- the token lives in the HSM -------------------------------------------------------------------------


@pytest.mark.softhsm
def test_a_token_survives_a_new_backend_instance(hsm_services: Services, hsm_settings: object) -> None:
    """The private key is a token object: a restarted daemon (a second backend in this process; the
    pool copes with the login this process already holds) imports with the token made before."""
    from hsmbridge.hsm.backend import Pkcs11Backend

    ctx = call_context(new_tenant())
    token = new_token(hsm_services, ctx)
    client = encrypt_for_import(token)

    restarted = Pkcs11Backend(hsm_settings)  # type: ignore[arg-type]
    try:
        again = build_services(restarted, store=hsm_services.store, clock=clock_of(hsm_services))
        key = import_key(again, ctx, client)
        assert_hsm_holds(again, ctx, key, client.material)
        # both instances share the master KEK: the first opens what the second made
        assert_hsm_holds(hsm_services, ctx, key, client.material)
    finally:
        restarted.close()
    # closing the second instance did not log the first one out
    assert_hsm_holds(hsm_services, ctx, key, client.material)
