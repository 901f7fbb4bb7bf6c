"""The HSM side of pushing keys to cloud KMSs (hsm/export.py), on a real SoftHSM2 token.

Each wrapping is opened with the *target's* private key in software, the way the cloud would,
and the key check value is checked against AES-CMAC computed by `cryptography` (NIST SP 800-38B).
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from fakes import FakeBackend

from hsmbridge.core.backend import ExportWrapping, MaterialKind
from hsmbridge.errors import PermissionDenied, Unsupported

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]

MATERIAL = bytes(range(32))
TARGET = rsa.generate_private_key(public_exponent=65537, key_size=2048)
TARGET_DER = TARGET.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)


def _expected_kcv(material: bytes) -> bytes:
    mac = CMAC(algorithms.AES(material))
    mac.update(b"\x00" * 16)
    return mac.finalize()[:3]


def _open(wrapped: bytes, wrapping: ExportWrapping) -> bytes:
    """What the cloud does with the import: decrypt with its private key."""
    digest = hashes.SHA1() if wrapping is ExportWrapping.RSAES_OAEP_SHA_1 else hashes.SHA256()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    if wrapping is not ExportWrapping.RSA_AES_KEY_WRAP_SHA_256:
        return TARGET.decrypt(wrapped, oaep)
    size = TARGET.key_size // 8
    ephemeral = TARGET.decrypt(wrapped[:size], oaep)
    return aes_key_unwrap_with_padding(ephemeral, wrapped[size:])


@pytest.fixture(params=["softhsm", "fake"])
def backend(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if request.param == "fake":
        return FakeBackend()
    return request.getfixturevalue("hsm_backend")


def test_key_check_value_is_cmac_of_a_zero_block_computed_in_the_hsm(backend) -> None:  # type: ignore[no-untyped-def]
    wrapped = backend.wrap_material(MaterialKind.AES, MATERIAL)
    assert backend.key_check_value(wrapped) == _expected_kcv(MATERIAL)
    other = backend.wrap_material(MaterialKind.AES, os.urandom(16))
    assert len(backend.key_check_value(other)) == 3


def test_standard_key_material_has_no_check_value_and_never_leaves(backend) -> None:  # type: ignore[no-untyped-def]
    secret = backend.wrap_material(MaterialKind.SECRET, b"a standard key's payload")
    with pytest.raises(PermissionDenied):
        backend.key_check_value(secret)
    with pytest.raises(PermissionDenied):
        backend.wrap_for_export(secret, TARGET_DER, ExportWrapping.RSAES_OAEP_SHA_1)


@pytest.mark.parametrize("wrapping", list(ExportWrapping))
def test_wrapping_opens_with_the_targets_private_key(backend, wrapping: ExportWrapping) -> None:  # type: ignore[no-untyped-def]
    wrapped = backend.wrap_material(MaterialKind.AES, MATERIAL)
    assert _open(backend.wrap_for_export(wrapped, TARGET_DER, wrapping), wrapping) == MATERIAL


@pytest.mark.only_on("nss")
def test_nss_wraps_every_export_format_natively(hsm_backend) -> None:  # type: ignore[no-untyped-def]
    available = hsm_backend.export_wrappings()
    assert all(available[w] for w in ExportWrapping)  # C_WrapKey OAEP-SHA1/-SHA256, RFC 5649
    strict = object.__new__(type(hsm_backend))
    strict.__dict__.update(hsm_backend.__dict__)
    strict.settings = replace(hsm_backend.settings, export_software_fallback=False)
    wrapped = hsm_backend.wrap_material(MaterialKind.AES, MATERIAL)
    for wrapping in ExportWrapping:  # no software fallback configured, none needed
        assert _open(strict.wrap_for_export(wrapped, TARGET_DER, wrapping), wrapping) == MATERIAL


@pytest.mark.only_on("softhsm2")
def test_softhsm_wraps_oaep_sha1_natively_and_sha256_only_through_the_fallback(hsm_backend) -> None:  # type: ignore[no-untyped-def]
    available = hsm_backend.export_wrappings()
    assert available[ExportWrapping.RSAES_OAEP_SHA_1] is True  # C_WrapKey, in the HSM
    assert available[ExportWrapping.RSAES_OAEP_SHA_256] is False  # SoftHSM2 2.6.1: software
    assert available[ExportWrapping.RSA_AES_KEY_WRAP_SHA_256] is False


@pytest.mark.only_on("softhsm2")
def test_without_the_fallback_the_error_names_the_setting(hsm_backend) -> None:  # type: ignore[no-untyped-def]
    wrapped = hsm_backend.wrap_material(MaterialKind.AES, MATERIAL)
    strict = object.__new__(type(hsm_backend))
    strict.__dict__.update(hsm_backend.__dict__)
    strict.settings = replace(hsm_backend.settings, export_software_fallback=False)
    assert ExportWrapping.RSAES_OAEP_SHA_256 not in strict.export_wrappings()
    with pytest.raises(Unsupported, match=r"hsm\.export_software_fallback"):
        strict.wrap_for_export(wrapped, TARGET_DER, ExportWrapping.RSAES_OAEP_SHA_256)
    # the native mechanism needs no fallback
    assert (
        _open(
            strict.wrap_for_export(wrapped, TARGET_DER, ExportWrapping.RSAES_OAEP_SHA_1),
            ExportWrapping.RSAES_OAEP_SHA_1,
        )
        == MATERIAL
    )
