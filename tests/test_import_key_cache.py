"""Import private keys are remembered per session (issue 11, move 6), and a remembered handle is
used only while it still names that keypair's private key: keypairs are destroyed by other
processes (the pool's cleaner, a replaced import token) and handle numbers may come to name other
objects."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import ObjectClass

from hsmbridge.core.backend import OaepHash
from hsmbridge.errors import NotFound, Reason
from hsmbridge.hsm.backend import Pkcs11Backend

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]


def sealed_for(der: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """(encrypted key, iv, encrypted nonce, nonce) as a Key Protect client builds them."""
    public = serialization.load_der_public_key(der)
    material, iv, nonce = os.urandom(32), os.urandom(12), os.urandom(12)
    sha1 = hashes.SHA1()
    encrypted = public.encrypt(material, padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None))  # type: ignore[union-attr]
    return encrypted, iv, AESGCM(material).encrypt(iv, nonce, None), nonce


def test_a_second_import_uses_the_remembered_handle(hsm_backend: Pkcs11Backend) -> None:
    der = hsm_backend.create_import_keypair("cache-first", 2048)
    for _ in range(3):
        encrypted, iv, sealed, nonce = sealed_for(der)
        assert hsm_backend.import_key("cache-first", encrypted, OaepHash.SHA1, iv, sealed).nonce == nonce
    remembered = []
    for _ in range(hsm_backend.settings.pool_size):
        with hsm_backend.pool.checkout() as pooled:
            remembered.append("cache-first" in pooled.imports)
    assert any(remembered)  # the session that served the imports kept the handle
    hsm_backend.destroy_import_keypair("cache-first")


def test_a_remembered_handle_that_names_another_object_is_not_used(hsm_backend: Pkcs11Backend) -> None:
    mine = hsm_backend.create_import_keypair("cache-mine", 2048)
    hsm_backend.create_import_keypair("cache-other", 2048)
    with hsm_backend.pool.checkout() as pooled:
        other = pooled.session.get_key(object_class=ObjectClass.PRIVATE_KEY, id=b"cache-other")
        kek = pooled.session.get_key(
            object_class=ObjectClass.SECRET_KEY, label=hsm_backend.settings.kek_label
        )
    for stale in (other, kek):  # another keypair's private key; an object of another class
        for _ in range(hsm_backend.settings.pool_size + 1):  # poison every session's cache
            with hsm_backend.pool.checkout() as pooled:
                pooled.imports["cache-mine"] = stale
        encrypted, iv, sealed, nonce = sealed_for(mine)
        assert hsm_backend.import_key("cache-mine", encrypted, OaepHash.SHA1, iv, sealed).nonce == nonce
    for object_id in ("cache-mine", "cache-other"):
        hsm_backend.destroy_import_keypair(object_id)


def test_a_keypair_destroyed_since_is_not_found_though_remembered(hsm_backend: Pkcs11Backend) -> None:
    der = hsm_backend.create_import_keypair("cache-gone", 2048)
    encrypted, iv, sealed, _ = sealed_for(der)
    hsm_backend.import_key("cache-gone", encrypted, OaepHash.SHA1, iv, sealed)
    hsm_backend.destroy_import_keypair("cache-gone")  # as another process's cleaner would
    encrypted, iv, sealed, _ = sealed_for(der)
    with pytest.raises(NotFound) as missing:
        hsm_backend.import_key("cache-gone", encrypted, OaepHash.SHA1, iv, sealed)
    assert missing.value.reason is Reason.IMPORT_TOKEN_NOT_FOUND
