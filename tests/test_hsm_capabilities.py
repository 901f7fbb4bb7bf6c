"""The start-up probe reports what SoftHSM2 2.6.1 really does (trial operations, not the
mechanism list), and the rest of the code obeys it."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from hsmbridge.core.backend import OaepHash
from hsmbridge.errors import Unsupported
from hsmbridge.hsm.backend import Pkcs11Backend

pytestmark = pytest.mark.softhsm


def test_softhsm2_capabilities_as_measured(hsm_backend: Pkcs11Backend) -> None:
    caps = hsm_backend.capabilities()
    assert caps.aes_gcm and caps.aes_key_wrap and caps.aes_key_wrap_pad
    assert caps.rsa_oaep_sha1
    assert not caps.rsa_oaep_sha256  # SoftHSM2 2.6.1: OAEP with SHA-256 → CKR_ARGUMENTS_BAD
    assert caps.rsa_x509
    assert not caps.trusted_kek  # the SO cannot mark a user's private KEK trusted on SoftHSM2
    assert caps.oaep_sha256_fallback and caps.oaep_sha256_available  # the test config enables it


def test_info_names_the_module_token_and_kek(hsm_backend: Pkcs11Backend) -> None:
    info = hsm_backend.info()
    assert info.manufacturer == "SoftHSM" and info.token_model.startswith("SoftHSM")
    assert info.kek_label == "hsmbridge-master-kek" and info.capabilities == hsm_backend.capabilities()


def test_without_the_fallback_oaep_sha256_imports_are_unsupported(hsm_settings, hsm_backend) -> None:  # type: ignore[no-untyped-def]
    """The production configuration disables the software OAEP decoding: on SoftHSM2 an
    OAEP-SHA256 import is then refused up front, never half-done."""
    backend = Pkcs11Backend(replace(hsm_settings, oaep_sha256_fallback=False))
    try:
        assert not backend.capabilities().oaep_sha256_available
        object_id = "caps-no-fallback"
        der = backend.create_import_keypair(object_id, 2048)
        public = serialization.load_der_public_key(der)
        material, iv, nonce = os.urandom(32), os.urandom(12), os.urandom(12)
        sha256 = hashes.SHA256()
        encrypted = public.encrypt(
            material, padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None)
        )
        with pytest.raises(Unsupported):
            backend.import_key(
                object_id, encrypted, OaepHash.SHA256, iv, AESGCM(material).encrypt(iv, nonce, None)
            )
        # SHA-1 is native on SoftHSM2 and still works.
        sha1 = hashes.SHA1()
        encrypted = public.encrypt(material, padding.OAEP(mgf=padding.MGF1(sha1), algorithm=sha1, label=None))
        imported = backend.import_key(
            object_id, encrypted, OaepHash.SHA1, iv, AESGCM(material).encrypt(iv, nonce, None)
        )
        assert imported.nonce == nonce and imported.wrapped.length == 32
        backend.destroy_import_keypair(object_id)
    finally:
        backend.close()
