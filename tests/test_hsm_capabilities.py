"""The start-up probe reports what the token really does (trial operations, not the mechanism
list), and the rest of the code obeys it: SoftHSM2 2.6.1, and NSS softoken 3.87 with `--hsm nss`.

The two tables below are the probe's real output on each (docs/operating.md's vendor matrix).
"""

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

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]


MEASURED = {
    "softhsm2": {
        "aes_gcm": True,
        "aes_key_wrap": True,
        "aes_key_wrap_pad": True,  # CKM_AES_KEY_WRAP_PAD computes RFC 5649 on SoftHSM2
        "aes_key_wrap_kwp": False,  # no CKM_AES_KEY_WRAP_KWP
        "rsa_oaep_sha1": True,
        "rsa_oaep_sha256": False,  # OAEP with SHA-256 → CKR_ARGUMENTS_BAD
        "rsa_x509": True,
        "trusted_kek": False,  # the SO cannot mark a user's private KEK trusted
        "oaep_sha256_fallback": True,  # the test configuration enables it
        "gcm_length_query": True,
        "wrap_length_query": True,
        "token_data_objects": True,
        "long_secrets": True,
    },
    "nss": {
        "aes_gcm": True,
        "aes_key_wrap": True,
        "aes_key_wrap_pad": True,  # through CKM_AES_KEY_WRAP_KWP: _PAD is RFC 3394 + PKCS#7 here
        "aes_key_wrap_kwp": True,
        "rsa_oaep_sha1": True,
        "rsa_oaep_sha256": True,  # natively
        "rsa_x509": True,
        "trusted_kek": False,  # CKA_TRUSTED: CKR_ATTRIBUTE_TYPE_INVALID on a secret key
        "oaep_sha256_fallback": True,  # configured, and not needed
        "gcm_length_query": False,  # answers without the tag: hsm/sized.py sizes the output
        "wrap_length_query": False,  # the same for the RFC 5649 wrap
        "token_data_objects": False,  # CKO_DATA with CKA_TOKEN: CKR_ATTRIBUTE_VALUE_INVALID
        "long_secrets": False,  # unwraps keys of at most 256 bytes (CKR_TEMPLATE_INCONSISTENT)
    },
}
INFO = {"softhsm2": ("SoftHSM", "SoftHSM"), "nss": ("Mozilla Foundation", "NSS 3")}


def test_capabilities_as_measured(hsm_backend: Pkcs11Backend, hsm_implementation: str) -> None:
    assert hsm_backend.capabilities().as_dict() == MEASURED[hsm_implementation]
    assert hsm_backend.capabilities().oaep_sha256_available


def test_info_names_the_module_token_and_kek(hsm_backend: Pkcs11Backend, hsm_implementation: str) -> None:
    info = hsm_backend.info()
    manufacturer, model = INFO[hsm_implementation]
    assert info.manufacturer == manufacturer and info.token_model.startswith(model)
    assert info.kek_label == "hsmbridge-master-kek" and info.capabilities == hsm_backend.capabilities()


def _import(backend: Pkcs11Backend, object_id: str, der: bytes, oaep: OaepHash) -> None:
    public = serialization.load_der_public_key(der)
    material, iv, nonce = os.urandom(32), os.urandom(12), os.urandom(12)
    algorithm = hashes.SHA256() if oaep is OaepHash.SHA256 else hashes.SHA1()
    encrypted = public.encrypt(
        material, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
    )
    imported = backend.import_key(object_id, encrypted, oaep, iv, AESGCM(material).encrypt(iv, nonce, None))
    assert imported.nonce == nonce and imported.wrapped.length == 32


@pytest.mark.only_on("nss")
def test_without_the_fallback_oaep_sha256_imports_run_natively(hsm_settings, hsm_backend) -> None:  # type: ignore[no-untyped-def]
    """The production configuration (no software OAEP decoding) loses nothing on NSS."""
    backend = Pkcs11Backend(replace(hsm_settings, oaep_sha256_fallback=False))
    try:
        der = backend.create_import_keypair("caps-native", 2048)
        for oaep in OaepHash:
            _import(backend, "caps-native", der, oaep)
        backend.destroy_import_keypair("caps-native")
    finally:
        backend.close()


@pytest.mark.only_on("softhsm2")
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
