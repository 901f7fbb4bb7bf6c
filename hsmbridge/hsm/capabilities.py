"""Find out what the token can really do, by doing it once.

Mechanism lists lie in both directions: SoftHSM2 2.6.1 lists CKM_RSA_PKCS_OAEP but refuses SHA-256
parameters; other tokens list mechanisms their firmware policy forbids. So each capability is a
trial operation on throw-away session objects, checked against a software computation where the
result is observable. The probe costs one RSA-2048 keygen (≈0.1–0.3 s on SoftHSM2) at start-up.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import hashes, keywrap
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import MGF, Attribute, GCMParams, KeyType, Mechanism, ObjectClass

from hsmbridge.core.backend import Capabilities
from hsmbridge.core.backend import wipe as _wipe
from hsmbridge.core.validation import MAX_STANDARD_PAYLOAD
from hsmbridge.hsm.oaep import oaep_decode
from hsmbridge.hsm.sized import (
    GcmEncrypt,
    SizedOutput,
    WrapKey,
    is_short_buffer,
    library_encrypt,
    library_wrap,
)

log = logging.getLogger(__name__)

_TRIAL_IV = b"\x00" * 12  # only ever used with throw-away trial keys


def _trial(name: str, fn: Callable[[], bool]) -> bool:
    try:
        ok = bool(fn())
    except (pkcs11.PKCS11Error, ValueError) as exc:
        log.debug("capability %s: %s", name, type(exc).__name__)
        return False
    if not ok:
        log.debug("capability %s: wrong result", name)
    return ok


def _public_key(pub: Any) -> rsa.RSAPublicKey:
    n = int.from_bytes(pub[Attribute.MODULUS], "big")
    e = int.from_bytes(pub[Attribute.PUBLIC_EXPONENT], "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


@dataclass(frozen=True)
class ModuleCalls:
    """How this module must be called, as the probe found it."""

    encrypt_gcm: GcmEncrypt
    wrap_key: WrapKey
    #: the mechanism that computes RFC 5649 here (the stored format on every token)
    rfc5649: Mechanism
    #: the longest secret (a standard key's payload) an unwrap gives back here; 0: none
    secret_limit: int


#: Secret lengths tried, longest first, when a token cannot give back a standard key's longest
#: payload: NSS softoken's MAX_KEY_LEN is 256; other tokens may cap generic secrets elsewhere.
SHORTER_SECRETS = (1024, 256, 64, 32)


def probe(
    session: Any, kek: Any, *, oaep_sha256_fallback: bool, sized: SizedOutput
) -> tuple[Capabilities, ModuleCalls]:
    """What the token did, and how this module must be asked for GCM encryption and key wraps
    (python-pkcs11's calls, or hsm/sized.py's where the module's length queries answer short)."""
    created: list[Any] = []
    encrypt: GcmEncrypt = library_encrypt
    wrap: WrapKey = library_wrap
    gcm_length_query = wrap_length_query = True

    def keep(obj: Any) -> Any:
        created.append(obj)
        return obj

    try:
        material = os.urandom(32)
        expected = AESGCM(material).encrypt(_TRIAL_IV, b"probe", b"aad")

        def known_aes() -> Any:
            return keep(
                session.create_object(
                    {
                        Attribute.CLASS: ObjectClass.SECRET_KEY,
                        Attribute.KEY_TYPE: KeyType.AES,
                        Attribute.VALUE: material,
                        Attribute.TOKEN: False,
                        Attribute.ENCRYPT: True,
                        Attribute.DECRYPT: True,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: True,
                    }
                )
            )

        def gcm() -> bool:
            nonlocal encrypt, gcm_length_query
            key = known_aes()
            # asked first, on its own: a too-short answer would leave python-pkcs11's attempt
            # failed with the operation still active on the session (NSS softoken 3.87)
            if sized.length_query_is_short(key, b"probe", _TRIAL_IV, b"aad"):
                gcm_length_query, encrypt = False, sized.encrypt
            ct = encrypt(key, b"probe", _TRIAL_IV, b"aad")
            pt = key.decrypt(ct, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(_TRIAL_IV, b"aad"))
            return ct == expected and pt == b"probe"

        def holds_material(key: Any) -> bool:
            """Did an unwrap yield `material`? Checked by GCM where the token has it, else by
            reading the throw-away key's value, so that a token without GCM (openCryptoki 3.8.1's
            software token) still gets a true verdict on its key wrap and OAEP mechanisms."""
            try:
                ct = encrypt(key, b"probe", _TRIAL_IV, b"aad")
            except pkcs11.MechanismInvalid:
                return bytes(key[Attribute.VALUE]) == material
            return bool(ct == expected)

        def key_wrap(mechanism: Mechanism) -> Callable[[], bool]:
            def run() -> bool:
                wrapper = keep(
                    session.generate_key(
                        KeyType.AES, 256, store=False, template={Attribute.WRAP: True, Attribute.UNWRAP: True}
                    )
                )
                return unwraps_to_material(
                    wrapper, wrapper.wrap_key(known_aes(), mechanism=mechanism), mechanism
                )

            return run

        def unwraps_to_material(wrapper: Any, wrapped: bytes, mechanism: Mechanism) -> bool:
            back = keep(
                wrapper.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.AES,
                    wrapped,
                    mechanism=mechanism,
                    store=False,
                    template={Attribute.ENCRYPT: True},
                )
            )
            return holds_material(back)

        def rfc5649(mechanism: Mechanism) -> Callable[[], bool]:
            """RFC 5649 exactly, byte for byte against `cryptography`: PKCS#11 2.40's
            CKM_AES_KEY_WRAP_PAD is RFC 3394 over PKCS#7 padding on NSS's softoken but RFC 5649 on
            SoftHSM2; PKCS#11 3.0 names RFC 5649 CKM_AES_KEY_WRAP_KWP. The stored key format is
            RFC 5649 whatever the token, so that the members of an HSM group agree on it."""

            def run() -> bool:
                wrapping = os.urandom(32)
                wrapper = keep(
                    session.create_object(
                        {
                            Attribute.CLASS: ObjectClass.SECRET_KEY,
                            Attribute.KEY_TYPE: KeyType.AES,
                            Attribute.VALUE: wrapping,
                            Attribute.TOKEN: False,
                            Attribute.WRAP: True,
                            Attribute.UNWRAP: True,
                        }
                    )
                )
                nonlocal wrap, wrap_length_query
                key = known_aes()
                try:
                    wrapped = wrap(wrapper, key, mechanism)
                except pkcs11.PKCS11Error as exc:  # C_WrapKey leaves no operation active
                    if not is_short_buffer(exc):
                        raise
                    wrapped = sized.wrap_key(wrapper, key, mechanism)
                    wrap_length_query, wrap = False, sized.wrap_key
                if wrapped != keywrap.aes_key_wrap_with_padding(wrapping, material):
                    return False
                return unwraps_to_material(wrapper, wrapped, mechanism)

            return run

        pub, priv = session.generate_keypair(
            KeyType.RSA,
            2048,
            store=False,
            public_template={Attribute.ENCRYPT: True, Attribute.WRAP: True},
            private_template={
                Attribute.DECRYPT: True,
                Attribute.UNWRAP: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
            },
        )
        keep(pub)
        keep(priv)
        public = _public_key(pub)

        def oaep(algorithm: hashes.HashAlgorithm, mech: Mechanism, mgf: MGF) -> Callable[[], bool]:
            def run() -> bool:
                ct = public.encrypt(
                    material, padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
                )
                key = keep(
                    priv.unwrap_key(
                        ObjectClass.SECRET_KEY,
                        KeyType.AES,
                        ct,
                        mechanism=Mechanism.RSA_PKCS_OAEP,
                        mechanism_param=(mech, mgf, None),
                        store=False,
                        template={Attribute.ENCRYPT: True},
                    )
                )
                return holds_material(key)

            return run

        def raw_rsa() -> bool:
            sha256 = hashes.SHA256()
            ct = public.encrypt(
                material, padding.OAEP(mgf=padding.MGF1(sha256), algorithm=sha256, label=None)
            )
            em = bytearray(priv.decrypt(ct, mechanism=Mechanism.RSA_X_509).rjust(256, b"\x00"))
            decoded = oaep_decode(em, k=256, hash_name="sha256")
            ok = bytes(decoded) == material
            _wipe(em)
            _wipe(decoded)
            return ok

        def trusted() -> bool:
            return bool(kek[Attribute.TRUSTED])

        def data_objects() -> bool:
            """A private token data object, destroyed at once (NSS softoken refuses token data
            objects with CKR_ATTRIBUTE_VALUE_INVALID). One left by a start that died between the
            two is removed first."""
            stray = {Attribute.CLASS: ObjectClass.DATA, Attribute.APPLICATION: "hsmbridge-probe"}
            for leftover in list(session.get_objects(stray)):
                leftover.destroy()
            obj = session.create_object(
                {
                    Attribute.CLASS: ObjectClass.DATA,
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.APPLICATION: "hsmbridge-probe",
                    Attribute.LABEL: "hsmbridge-probe",
                    Attribute.VALUE: b"",
                }
            )
            obj.destroy()
            return True

        def secrets_of(length: int, mechanism: Mechanism) -> Callable[[], bool]:
            """A generic secret of `length` bytes back from an RFC 5649 unwrap, readable (what
            revealing a standard key's payload does). NSS softoken unwraps at most 256 bytes."""

            def run() -> bool:
                value = os.urandom(length)
                wrapper = keep(
                    session.generate_key(
                        KeyType.AES, 256, store=False, template={Attribute.WRAP: True, Attribute.UNWRAP: True}
                    )
                )
                secret = keep(
                    session.create_object(
                        {
                            Attribute.CLASS: ObjectClass.SECRET_KEY,
                            Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                            Attribute.VALUE: value,
                            Attribute.TOKEN: False,
                            Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: True,
                        }
                    )
                )
                back = keep(
                    wrapper.unwrap_key(
                        ObjectClass.SECRET_KEY,
                        KeyType.GENERIC_SECRET,
                        wrap(wrapper, secret, mechanism),
                        mechanism=mechanism,
                        store=False,
                        template={
                            Attribute.TOKEN: False,
                            Attribute.SENSITIVE: False,
                            Attribute.EXTRACTABLE: True,
                        },
                    )
                )
                got = bytes(back[Attribute.VALUE])  # SoftHSM2 keeps RFC 5649 padding: zeros
                return got[:length] == value and not any(got[length:])

            return run

        aes_gcm = _trial("aes_gcm", gcm)
        kwp = _trial("aes_key_wrap_kwp", rfc5649(Mechanism.AES_KEY_WRAP_KWP))
        rfc5649_mechanism = Mechanism.AES_KEY_WRAP_KWP if kwp else Mechanism.AES_KEY_WRAP_PAD
        aes_key_wrap_pad = kwp or _trial("aes_key_wrap_pad", rfc5649(Mechanism.AES_KEY_WRAP_PAD))
        secret_limit = next(
            (
                length
                for length in (MAX_STANDARD_PAYLOAD, *SHORTER_SECRETS)
                if aes_key_wrap_pad and _trial(f"secrets_of_{length}", secrets_of(length, rfc5649_mechanism))
            ),
            0,
        )
        return (
            Capabilities(
                aes_gcm=aes_gcm,
                aes_key_wrap=_trial("aes_key_wrap", key_wrap(Mechanism.AES_KEY_WRAP)),
                aes_key_wrap_pad=aes_key_wrap_pad,
                aes_key_wrap_kwp=kwp,
                rsa_oaep_sha1=_trial("rsa_oaep_sha1", oaep(hashes.SHA1(), Mechanism.SHA_1, MGF.SHA1)),  # noqa: S303
                rsa_oaep_sha256=_trial(
                    "rsa_oaep_sha256", oaep(hashes.SHA256(), Mechanism.SHA256, MGF.SHA256)
                ),
                rsa_x509=_trial("rsa_x509", raw_rsa),
                trusted_kek=_trial("trusted_kek", trusted),
                oaep_sha256_fallback=oaep_sha256_fallback,
                gcm_length_query=gcm_length_query,
                wrap_length_query=wrap_length_query,
                token_data_objects=_trial("token_data_objects", data_objects),
                long_secrets=secret_limit >= MAX_STANDARD_PAYLOAD,
            ),
            ModuleCalls(encrypt, wrap, rfc5649_mechanism, secret_limit),
        )
    finally:
        for obj in created:
            with contextlib.suppress(pkcs11.PKCS11Error):
                obj.destroy()
