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
from typing import Any

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import MGF, Attribute, GCMParams, KeyType, Mechanism, ObjectClass

from hsmbridge.core.backend import Capabilities
from hsmbridge.core.backend import wipe as _wipe
from hsmbridge.hsm.oaep import oaep_decode

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


def probe(session: Any, kek: Any, *, oaep_sha256_fallback: bool) -> Capabilities:
    created: list[Any] = []

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
            key = known_aes()
            ct = key.encrypt(
                b"probe", mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(_TRIAL_IV, b"aad")
            )
            pt = key.decrypt(ct, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(_TRIAL_IV, b"aad"))
            return ct == expected and pt == b"probe"

        def holds_material(key: Any) -> bool:
            """Did an unwrap yield `material`? Checked by GCM where the token has it, else by
            reading the throw-away key's value, so that a token without GCM (openCryptoki 3.8.1's
            software token) still gets a true verdict on its key wrap and OAEP mechanisms."""
            try:
                ct = key.encrypt(
                    b"probe", mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(_TRIAL_IV, b"aad")
                )
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
                wrapped = wrapper.wrap_key(known_aes(), mechanism=mechanism)
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

        return Capabilities(
            aes_gcm=_trial("aes_gcm", gcm),
            aes_key_wrap=_trial("aes_key_wrap", key_wrap(Mechanism.AES_KEY_WRAP)),
            aes_key_wrap_pad=_trial("aes_key_wrap_pad", key_wrap(Mechanism.AES_KEY_WRAP_PAD)),
            rsa_oaep_sha1=_trial("rsa_oaep_sha1", oaep(hashes.SHA1(), Mechanism.SHA_1, MGF.SHA1)),  # noqa: S303
            rsa_oaep_sha256=_trial("rsa_oaep_sha256", oaep(hashes.SHA256(), Mechanism.SHA256, MGF.SHA256)),
            rsa_x509=_trial("rsa_x509", raw_rsa),
            trusted_kek=_trial("trusted_kek", trusted),
            oaep_sha256_fallback=oaep_sha256_fallback,
        )
    finally:
        for obj in created:
            with contextlib.suppress(pkcs11.PKCS11Error):
                obj.destroy()
