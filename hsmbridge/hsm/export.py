"""Material leaving the HSM for a cloud KMS: key check values and wrapping for a target RSA key.

Why this is its own module: pushing a key to a cloud (hsmbridge/push/) is the one path on which
root material leaves the HSM at all, so every way it can leave is here, in one page, and
`Pkcs11Backend` only delegates.

How each operation keeps the material inside the HSM:

- **Key check value**: the stored version is unwrapped under its KEK into a session object that
  can only `CKA_SIGN` (sensitive, not extractable), one AES-CMAC of a zero block is computed, the
  object is destroyed. The first 3 bytes are what Thales, Utimaco and Entrust show as the KCV.
- **Wrap for export**: the target's RSA public key becomes a session public-key object
  (`CKA_WRAP` only); the version is unwrapped into a session object that is extractable for this
  one `C_WrapKey` and destroyed right after. RSA-OAEP with SHA-1 or SHA-256 wraps it directly;
  AWS's RSA_AES_KEY_WRAP_SHA_256 is composed the way CKM_RSA_AES_KEY_WRAP defines it: an
  ephemeral AES-256 session key wraps the material (RFC 5649, `C_WrapKey`) and RSA-OAEP-SHA256
  wraps the ephemeral key, so a token without CKM_RSA_AES_KEY_WRAP but with OAEP-SHA256 still
  never shows the material.

The software fallback (`hsm.export_software_fallback`, off in production): where the token lacks
the OAEP hash a target requires (SoftHSM2 2.6.1 does OAEP with SHA-1 only), the version is
unwrapped into a *non-sensitive* session object, its value read into a buffer this process wipes,
and the wrapping computed with `cryptography`. The material is then in the daemon's memory for a
moment, exactly what a real HSM avoids; hence off by default outside development, and the error
without it names the setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass

from hsmbridge.core.backend import EXPORT_FALLBACK_SETTING, ExportWrapping, MaterialKind, wipe
from hsmbridge.core.model import WrappedKey
from hsmbridge.errors import InvalidInput, PermissionDenied, Unsupported
from hsmbridge.hsm.export_software import software_wrap

if TYPE_CHECKING:
    from hsmbridge.hsm.backend import Pkcs11Backend
    from hsmbridge.hsm.pool import PooledSession

KCV_LENGTH = 3
_OAEP_PARAMS = {
    ExportWrapping.RSAES_OAEP_SHA_1: (Mechanism.SHA_1, MGF.SHA1, None),
    ExportWrapping.RSAES_OAEP_SHA_256: (Mechanism.SHA256, MGF.SHA256, None),
    ExportWrapping.RSA_AES_KEY_WRAP_SHA_256: (Mechanism.SHA256, MGF.SHA256, None),
}


def _require_root(wrapped: WrappedKey) -> None:
    if wrapped.kind != MaterialKind.AES:
        raise PermissionDenied("only root (AES) key material can be pushed or checked")


def _unwrap_version(
    backend: Pkcs11Backend, pooled: PooledSession, wrapped: WrappedKey, **template: Any
) -> Any:
    attrs = {
        Attribute.TOKEN: False,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.ENCRYPT: False,
        Attribute.DECRYPT: False,
        Attribute.SIGN: False,
    }
    attrs.update({getattr(Attribute, name.upper()): value for name, value in template.items()})
    return backend._kek(pooled, wrapped.kek_label).unwrap_key(
        ObjectClass.SECRET_KEY,
        KeyType.AES,
        wrapped.blob,
        mechanism=backend._calls.rfc5649,
        store=False,
        template=attrs,
    )


def key_check_value(backend: Pkcs11Backend, wrapped: WrappedKey) -> bytes:
    _require_root(wrapped)

    def op(pooled: PooledSession) -> bytes:
        obj = _unwrap_version(backend, pooled, wrapped, sign=True)
        try:
            return bytes(obj.sign(b"\x00" * 16, mechanism=Mechanism.AES_CMAC))[:KCV_LENGTH]
        finally:
            obj.destroy()

    return backend._run("key-check-value", op)


def export_wrappings(backend: Pkcs11Backend) -> dict[ExportWrapping, bool]:
    caps = backend.capabilities()
    fallback = backend.settings.export_software_fallback
    native = {
        ExportWrapping.RSAES_OAEP_SHA_1: caps.rsa_oaep_sha1,
        ExportWrapping.RSAES_OAEP_SHA_256: caps.rsa_oaep_sha256,
        ExportWrapping.RSA_AES_KEY_WRAP_SHA_256: caps.rsa_oaep_sha256 and caps.aes_key_wrap_pad,
    }
    return {w: ok for w, ok in native.items() if ok or fallback}


def _public_key(public_key_der: bytes) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_der_public_key(public_key_der)
    except ValueError:
        raise InvalidInput("the target's wrapping key is not a DER public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise InvalidInput("the target's wrapping key must be an RSA key of at least 2048 bits")
    return key


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def wrap_for_export(
    backend: Pkcs11Backend, wrapped: WrappedKey, public_key_der: bytes, wrapping: ExportWrapping
) -> bytes:
    _require_root(wrapped)
    public = _public_key(public_key_der)
    available = export_wrappings(backend)
    if wrapping not in available:
        raise Unsupported(
            f"the HSM cannot wrap key material with {wrapping.value}; enable {EXPORT_FALLBACK_SETTING} to "
            "compute it in software (development only, see docs/hsm.md)"
        )
    if not available[wrapping]:
        return _software_wrap(backend, wrapped, public, wrapping)
    numbers = public.public_numbers()

    def op(pooled: PooledSession) -> bytes:
        target = pooled.session.create_object(
            {
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.KEY_TYPE: KeyType.RSA,
                Attribute.TOKEN: False,
                Attribute.MODULUS: _int_bytes(numbers.n),
                Attribute.PUBLIC_EXPONENT: _int_bytes(numbers.e),
                Attribute.WRAP: True,
                Attribute.ENCRYPT: False,
                Attribute.VERIFY: False,
            }
        )
        try:
            material = _unwrap_version(backend, pooled, wrapped, extractable=True)
            try:
                if wrapping is ExportWrapping.RSA_AES_KEY_WRAP_SHA_256:
                    return _rsa_aes_wrap(pooled, target, material, backend.kwp_wrap)
                return bytes(
                    target.wrap_key(
                        material, mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=_OAEP_PARAMS[wrapping]
                    )
                )
            finally:
                material.destroy()
        finally:
            target.destroy()

    return backend._run("wrap-for-export", op)


def _rsa_aes_wrap(
    pooled: PooledSession, target: Any, material: Any, kwp_wrap: Callable[[Any, Any], bytes]
) -> bytes:
    """CKM_RSA_AES_KEY_WRAP composed from two C_WrapKey calls (PKCS#11 v2.40 §2.1.21); `kwp_wrap`
    computes RFC 5649 the way this token does (the backend's probe chose it)."""
    ephemeral = pooled.session.generate_key(
        KeyType.AES,
        256,
        store=False,
        template={
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: True,
            Attribute.WRAP: True,
            Attribute.ENCRYPT: False,
            Attribute.DECRYPT: False,
        },
    )
    try:
        wrapped_material = kwp_wrap(ephemeral, material)
        wrapped_ephemeral = bytes(
            target.wrap_key(
                ephemeral,
                mechanism=Mechanism.RSA_PKCS_OAEP,
                mechanism_param=_OAEP_PARAMS[ExportWrapping.RSA_AES_KEY_WRAP_SHA_256],
            )
        )
    finally:
        ephemeral.destroy()
    return wrapped_ephemeral + wrapped_material


def _software_wrap(
    backend: Pkcs11Backend, wrapped: WrappedKey, public: rsa.RSAPublicKey, wrapping: ExportWrapping
) -> bytes:
    def op(pooled: PooledSession) -> bytearray:
        obj = _unwrap_version(backend, pooled, wrapped, sensitive=False, extractable=True)
        try:
            return bytearray(obj[Attribute.VALUE])
        finally:
            obj.destroy()

    material = backend._run("export-material", op)
    try:
        if len(material) != wrapped.length:
            raise InvalidInput("stored key material failed its length check")
        return software_wrap(material, public, wrapping)
    finally:
        wipe(material)
