"""Smoke tests for the software FakeBackend: it must honour the CryptoBackend contract, or unit
tests built on it would prove nothing about the real backend."""

from __future__ import annotations

import inspect
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fakes import FakeBackend

from hsmbridge.core.backend import CryptoBackend, KeyRef, MaterialKind, OaepHash
from hsmbridge.core.envelope import Envelope, associated_data
from hsmbridge.errors import IntegrityError, InternalError, InvalidInput, NotFound, PermissionDenied, Reason


@pytest.fixture
def fake() -> FakeBackend:
    return FakeBackend()


def test_implements_every_protocol_method() -> None:
    backend: CryptoBackend = FakeBackend()  # the type checker's half of this test
    methods = [n for n, v in vars(CryptoBackend).items() if callable(v) and not n.startswith("_")]
    assert len(methods) >= 13
    for name in methods:
        expected = list(inspect.signature(getattr(CryptoBackend, name)).parameters)
        assert list(inspect.signature(getattr(FakeBackend, name)).parameters) == expected, name
    assert all(backend.capabilities().as_dict().values())
    assert backend.info().capabilities == backend.capabilities()


def test_envelope_round_trip_through_the_fake(fake: FakeBackend) -> None:
    version_id = "0b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c8d"
    ref = KeyRef(version_id, fake.generate_key(MaterialKind.AES, 32))
    ad = associated_data(tenant="t", key_id=version_id, key_version_id=version_id, aad=["x"])
    iv, ct = fake.gcm_encrypt(ref, b"dek" * 10, ad)
    raw = Envelope(version_id, iv, ct).to_bytes()
    env = Envelope.parse(raw)
    assert fake.gcm_decrypt(ref, env.iv, env.ciphertext, ad) == bytearray(b"dek" * 10)
    with pytest.raises(IntegrityError):
        fake.gcm_decrypt(ref, env.iv, env.ciphertext, ad + b"!")
    with pytest.raises(IntegrityError):
        fake.gcm_decrypt(ref, env.iv, env.ciphertext[:-1] + bytes([env.ciphertext[-1] ^ 1]), ad)
    with pytest.raises(IntegrityError):
        fake.gcm_decrypt(ref, b"short", env.ciphertext, ad)
    assert fake.gcm_encrypt(ref, b"x", b"")[0] != fake.gcm_encrypt(ref, b"x", b"")[0]  # fresh IVs
    fake.evict([version_id, "not-cached"])
    assert version_id not in fake.cached
    assert fake.gcm_decrypt(ref, env.iv, env.ciphertext, ad) == bytearray(b"dek" * 10)  # reloads


def test_material_rules(fake: FakeBackend) -> None:
    secret = fake.wrap_material(MaterialKind.SECRET, b"s" * 20)
    assert secret.length == 20 and fake.reveal_secret(secret) == bytearray(b"s" * 20)
    assert len(fake.reveal_secret(fake.generate_key(MaterialKind.SECRET, 7))) == 7
    root = fake.generate_key(MaterialKind.AES, 32)
    with pytest.raises(PermissionDenied):
        fake.reveal_secret(root)
    with pytest.raises(InternalError):
        fake.gcm_encrypt(KeyRef("v", secret), b"x", b"")
    for kind, material in ((MaterialKind.AES, b"k" * 20), (MaterialKind.SECRET, b"")):
        with pytest.raises(InvalidInput):
            fake.wrap_material(kind, material)
    with pytest.raises(InvalidInput):
        fake.generate_key(MaterialKind.AES, 31)
    with pytest.raises(InternalError):  # another "HSM", another KEK: a broken store, not the caller
        FakeBackend().reveal_secret(secret)


def _oaep_encrypt(der: bytes, key: bytes, oaep_hash: OaepHash) -> bytes:
    """What a Key Protect client does with the import token's public key."""
    public = serialization.load_der_public_key(der)
    assert isinstance(public, rsa.RSAPublicKey)
    algorithm = hashes.SHA256() if oaep_hash is OaepHash.SHA256 else hashes.SHA1()
    return public.encrypt(key, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None))


@pytest.mark.parametrize("oaep_hash", [OaepHash.SHA1, OaepHash.SHA256])
def test_import_key(fake: FakeBackend, oaep_hash: OaepHash) -> None:
    der = fake.create_import_keypair("tok-1", 2048)
    assert serialization.load_der_public_key(der).key_size == 2048  # type: ignore[union-attr]
    key, nonce = os.urandom(32), b"n" * 12
    encrypted_key, iv = _oaep_encrypt(der, key, oaep_hash), os.urandom(12)
    encrypted_nonce = AESGCM(key).encrypt(iv, nonce, None)
    imported = fake.import_key("tok-1", encrypted_key, oaep_hash, iv, encrypted_nonce)
    assert imported.nonce == nonce and imported.wrapped.length == 32
    ref = KeyRef("v1", imported.wrapped)
    assert AESGCM(key).decrypt(*fake.gcm_encrypt(ref, b"dek", b"a"), b"a") == b"dek"

    other = OaepHash.SHA1 if oaep_hash is OaepHash.SHA256 else OaepHash.SHA256
    short_key = _oaep_encrypt(der, os.urandom(20), oaep_hash)
    for args in (
        (encrypted_key, other, iv, encrypted_nonce),  # wrong hash
        (encrypted_key[:-1] + bytes([encrypted_key[-1] ^ 1]), oaep_hash, iv, encrypted_nonce),
        (short_key, oaep_hash, iv, encrypted_nonce),  # 20-byte key: not AES
        (encrypted_key, oaep_hash, iv, encrypted_nonce[:-1] + bytes([encrypted_nonce[-1] ^ 1])),  # bad tag
    ):
        with pytest.raises(IntegrityError):
            fake.import_key("tok-1", *args)
    with pytest.raises(IntegrityError) as info:
        fake.import_key("tok-1", encrypted_key, oaep_hash, os.urandom(12), encrypted_nonce)
    assert info.value.reason is Reason.INCORRECT_NONCE_IV
    with pytest.raises(InvalidInput):
        fake.import_key("tok-1", encrypted_key, oaep_hash, b"short", encrypted_nonce)

    fake.destroy_import_keypair("tok-1")
    fake.destroy_import_keypair("tok-1")  # idempotent
    with pytest.raises(NotFound):
        fake.import_key("tok-1", encrypted_key, oaep_hash, iv, encrypted_nonce)
