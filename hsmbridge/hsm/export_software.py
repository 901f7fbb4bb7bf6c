"""Export wrappings computed with `cryptography`: the documented software fallback of hsm/export.py.

No PKCS#11 here, so the fake backend of the unit tests computes exactly the bytes the fallback
does, and the formats are testable against the targets' own decryption without a token.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from hsmbridge.core.backend import ExportWrapping, wipe

_HASH = {
    ExportWrapping.RSAES_OAEP_SHA_1: hashes.SHA1,
    ExportWrapping.RSAES_OAEP_SHA_256: hashes.SHA256,
    ExportWrapping.RSA_AES_KEY_WRAP_SHA_256: hashes.SHA256,
}


def software_wrap(material: bytes | bytearray, public: rsa.RSAPublicKey, wrapping: ExportWrapping) -> bytes:
    """The wrapping computed with `cryptography` (the fallback, and the fake backend's)."""
    digest = _HASH[wrapping]()
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    if wrapping is not ExportWrapping.RSA_AES_KEY_WRAP_SHA_256:
        return public.encrypt(bytes(material), oaep)
    ephemeral = bytearray(os.urandom(32))
    try:
        return public.encrypt(bytes(ephemeral), oaep) + aes_key_wrap_with_padding(
            bytes(ephemeral), bytes(material)
        )
    finally:
        wipe(ephemeral)
