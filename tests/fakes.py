"""A software `CryptoBackend` so unit tests of the services and adapters need no SoftHSM2.

It mirrors `hsmbridge.hsm.backend.Pkcs11Backend` where callers can observe a difference: the same
RFC 5649 blobs (AES key wrap with padding under a KEK), the same error types and reasons, random
96-bit IVs, IntegrityError for every verification failure. The KEK is random per instance, so
blobs from one instance do not unwrap in another, exactly like two HSMs with different KEKs.

Two places are deliberately *stricter* than the real backend, so service bugs show up in unit
tests: `reveal_secret` refuses AES (root) material, and `gcm_*` refuse standard-key material.
The real backend cannot tell the two apart from a blob (`WrappedKey` carries no kind), so this
fake remembers the kind of every blob it made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import fields

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.cmac import CMAC
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from hsmbridge.core.backend import (
    Capabilities,
    ExportWrapping,
    HsmInfo,
    ImportedKey,
    KeyRef,
    KeyWrapping,
    MaterialKind,
    OaepHash,
    wipe,
)
from hsmbridge.core.model import WrappedKey
from hsmbridge.errors import (
    HsmBridgeError,
    IntegrityError,
    InternalError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Reason,
)
from hsmbridge.hsm.export_software import software_wrap

AES_LENGTHS = (16, 24, 32)
_BAD_IMPORT = "the encrypted key could not be decrypted with the import token"
_BAD_CIPHERTEXT = "the ciphertext could not be authenticated"


class FakeBackend:
    """In-memory, thread-tolerant (dict operations only) implementation of `CryptoBackend`."""

    kek_label = "fake-kek"

    def __init__(self) -> None:
        self._kek = os.urandom(32)
        self._kinds: dict[bytes, MaterialKind] = {}  # blob -> kind, see the module docstring
        #: version id -> loaded key, like the real backend's handle cache (tests may inspect it)
        self.cached: dict[str, AESGCM] = {}
        self.import_keys: dict[str, rsa.RSAPrivateKey] = {}

    # -- info ---------------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(**dict.fromkeys((f.name for f in fields(Capabilities)), True))

    def info(self) -> HsmInfo:
        return HsmInfo(
            library_path="/nonexistent/libfakehsm.so",
            manufacturer="hsmbridge tests",
            library_description="software fake backend",
            library_version="0.0",
            token_label="fake-token",
            token_serial="0000000000000000",
            token_model="FakeBackend",
            kek_label=self.kek_label,
            session_pool_size=1,
            capabilities=self.capabilities(),
        )

    def random(self, length: int) -> bytes:
        return os.urandom(length)

    # -- material -----------------------------------------------------------------------------

    def _wrap(self, kind: MaterialKind, material: bytes | bytearray) -> WrappedKey:
        blob = aes_key_wrap_with_padding(self._kek, bytes(material))
        self._kinds[blob] = kind
        return WrappedKey(blob=blob, length=len(material), kek_label=self.kek_label)

    def _unwrap(self, wrapped: WrappedKey) -> tuple[MaterialKind, bytearray]:
        kind = self._kinds.get(wrapped.blob)
        try:
            material = bytearray(aes_key_unwrap_with_padding(self._kek, wrapped.blob))
        except (InvalidUnwrap, ValueError):  # another KEK or a corrupt store: not the caller's fault
            raise InternalError("unwrap: HSM operation failed (WrappedKeyInvalid)") from None
        if kind is None or len(material) != wrapped.length:
            wipe(material)
            raise IntegrityError("stored key material failed its length check")
        return kind, material

    def generate_key(self, kind: MaterialKind, length: int) -> WrappedKey:
        if kind is MaterialKind.AES and length not in AES_LENGTHS:
            raise InvalidInput("AES keys are 16, 24 or 32 bytes", reason=Reason.INVALID_FIELD)
        material = bytearray(os.urandom(length))
        try:
            return self.wrap_material(kind, material)
        finally:
            wipe(material)

    def wrap_material(self, kind: MaterialKind, material: bytes | bytearray) -> WrappedKey:
        if kind is MaterialKind.AES and len(material) not in AES_LENGTHS:
            raise InvalidInput(
                "root key material must be 16, 24 or 32 bytes", reason=Reason.INVALID_FIELD, target="payload"
            )
        if not material:
            raise InvalidInput("key material is empty", reason=Reason.INVALID_FIELD, target="payload")
        return self._wrap(kind, material)

    def reveal_secret(self, wrapped: WrappedKey) -> bytearray:
        kind, material = self._unwrap(wrapped)
        if kind is MaterialKind.AES:
            wipe(material)
            raise PermissionDenied("root key material never leaves the HSM")
        return material

    # -- envelope -----------------------------------------------------------------------------

    def _use_key(self, key: KeyRef) -> AESGCM:
        aead = self.cached.get(key.version_id)
        if aead is None:
            kind, material = self._unwrap(key.wrapped)
            try:
                if kind is not MaterialKind.AES:
                    raise InternalError("AES-GCM needs root (AES) key material")
                aead = self.cached[key.version_id] = AESGCM(bytes(material))
            finally:
                wipe(material)
        return aead

    def gcm_encrypt(self, key: KeyRef, plaintext: bytes | bytearray, aad: bytes) -> tuple[bytes, bytes]:
        iv = os.urandom(12)
        return iv, self._use_key(key).encrypt(iv, bytes(plaintext), aad)

    def gcm_decrypt(self, key: KeyRef, iv: bytes, ciphertext: bytes, aad: bytes) -> bytearray:
        if len(iv) != 12 or len(ciphertext) < 16:
            raise IntegrityError(_BAD_CIPHERTEXT)
        aead = self._use_key(key)
        try:
            return bytearray(aead.decrypt(iv, ciphertext, aad))
        except InvalidTag:
            raise IntegrityError(_BAD_CIPHERTEXT) from None

    def gcm_encrypt_many(
        self, key: KeyRef, items: Sequence[tuple[bytes | bytearray, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        return [self.gcm_encrypt(key, plaintext, aad) for plaintext, aad in items]

    def gcm_decrypt_many(
        self, items: Sequence[tuple[KeyRef, bytes, bytes, bytes]]
    ) -> list[bytearray | HsmBridgeError]:
        results: list[bytearray | HsmBridgeError] = []
        for key, iv, ciphertext, aad in items:
            try:
                results.append(self.gcm_decrypt(key, iv, ciphertext, aad))
            except IntegrityError as exc:
                results.append(exc)
        return results

    def evict(self, version_ids: Sequence[str]) -> None:
        for version_id in version_ids:
            self.cached.pop(version_id, None)

    # -- import tokens ------------------------------------------------------------------------

    def create_import_keypair(self, object_id: str, bits: int) -> bytes:
        if bits not in (2048, 3072, 4096):
            raise InvalidInput("import keys are RSA 2048, 3072 or 4096 bits", reason=Reason.INVALID_FIELD)
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.import_keys[object_id] = private
        return private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def destroy_import_keypair(self, object_id: str) -> None:
        self.import_keys.pop(object_id, None)  # like the real one: nothing to destroy is fine

    def _rsa_decrypt(
        self, object_id: str, encrypted_key: bytes, scheme: padding.AsymmetricPadding
    ) -> bytearray:
        """The AES key inside `encrypted_key` (16/24/32 bytes), or the one import failure."""
        private = self.import_keys.get(object_id)
        if private is None:
            raise NotFound(
                "the import token's key is no longer on the HSM", reason=Reason.IMPORT_TOKEN_NOT_FOUND
            )
        try:
            key = bytearray(private.decrypt(encrypted_key, scheme))
        except (ValueError, TypeError):
            raise IntegrityError(_BAD_IMPORT) from None
        if len(key) not in AES_LENGTHS:
            wipe(key)
            raise IntegrityError(_BAD_IMPORT)
        return key

    def import_wrapped_key(self, object_id: str, encrypted_key: bytes, wrapping: KeyWrapping) -> WrappedKey:
        if wrapping is KeyWrapping.PKCS1_V15:
            scheme: padding.AsymmetricPadding = padding.PKCS1v15()
        else:
            algorithm = hashes.SHA256() if wrapping is KeyWrapping.OAEP_SHA256 else hashes.SHA1()
            scheme = padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
        key = self._rsa_decrypt(object_id, encrypted_key, scheme)
        try:
            return self.wrap_material(MaterialKind.AES, key)
        finally:
            wipe(key)

    def import_key(
        self,
        object_id: str,
        encrypted_key: bytes,
        oaep_hash: OaepHash,
        iv: bytes,
        encrypted_nonce: bytes,
    ) -> ImportedKey:
        if len(iv) != 12:
            raise InvalidInput("the IV must be 12 bytes", reason=Reason.INCORRECT_NONCE_IV, target="iv")
        algorithm = hashes.SHA256() if OaepHash(oaep_hash) is OaepHash.SHA256 else hashes.SHA1()
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
        key = self._rsa_decrypt(object_id, encrypted_key, oaep)
        try:
            try:
                nonce = AESGCM(bytes(key)).decrypt(iv, encrypted_nonce, None)
            except InvalidTag:
                raise IntegrityError(
                    "the encrypted nonce does not open with the imported key and IV",
                    reason=Reason.INCORRECT_NONCE_IV,
                ) from None
            return ImportedKey(self._wrap(MaterialKind.AES, key), nonce)
        finally:
            wipe(key)

    # -- pushing to cloud KMSs ---------------------------------------------------------------------

    def _root_material(self, wrapped: WrappedKey) -> bytearray:
        kind, material = self._unwrap(wrapped)
        if kind is not MaterialKind.AES:
            wipe(material)
            raise PermissionDenied("only root (AES) key material can be pushed or checked")
        return material

    def key_check_value(self, wrapped: WrappedKey) -> bytes:
        material = self._root_material(wrapped)
        try:
            mac = CMAC(algorithms.AES(bytes(material)))
            mac.update(b"\x00" * 16)
            return mac.finalize()[:3]
        finally:
            wipe(material)

    def export_wrappings(self) -> dict[ExportWrapping, bool]:
        return dict.fromkeys(ExportWrapping, True)

    def wrap_for_export(self, wrapped: WrappedKey, public_key_der: bytes, wrapping: ExportWrapping) -> bytes:
        public = serialization.load_der_public_key(public_key_der)
        assert isinstance(public, rsa.RSAPublicKey)
        material = self._root_material(wrapped)
        try:
            return software_wrap(material, public, wrapping)
        finally:
            wipe(material)

    def close(self) -> None:
        self.cached.clear()
        self.import_keys.clear()
