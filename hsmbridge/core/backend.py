"""What the core needs from a key-holding backend, and nothing about PKCS#11.

`hsmbridge.hsm.Pkcs11Backend` implements this against any PKCS#11 module; unit tests use a
software fake. Keeping the contract here (and not in hsm/) is what lets core/ stay free of the
HSM: dependencies point from hsm/ to core/, never back.

Every secret crosses this boundary in one of two forms only:
- `WrappedKey`: material wrapped under the master KEK, safe to store;
- a `bytearray` the caller must wipe (`wipe()`) once used: DEK plaintexts, standard-key payloads.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

from hsmbridge.core.model import WrappedKey
from hsmbridge.errors import HsmBridgeError


class OaepHash(enum.StrEnum):
    SHA1 = "sha1"
    SHA256 = "sha256"


class KeyWrapping(enum.StrEnum):
    """How imported key material was encrypted to an HSM-held RSA key (raw, without a nonce)."""

    OAEP_SHA1 = "oaep-sha1"
    OAEP_SHA256 = "oaep-sha256"
    #: RSAES-PKCS1-v1_5: a padding oracle risk (Bleichenbacher), so adapters offer it only when
    #: the operator enables it.
    PKCS1_V15 = "pkcs1-v1_5"


class ExportWrapping(enum.StrEnum):
    """How material leaves for a cloud KMS, named as AWS names them (Huawei and Key Protect use
    the same RSA-OAEP schemes): the target's RSA public key wraps it, inside the HSM."""

    RSAES_OAEP_SHA_1 = "RSAES_OAEP_SHA_1"
    RSAES_OAEP_SHA_256 = "RSAES_OAEP_SHA_256"
    #: CKM_RSA_AES_KEY_WRAP's output: RSA-OAEP-SHA256(ephemeral AES key) ‖ RFC 5649(material)
    RSA_AES_KEY_WRAP_SHA_256 = "RSA_AES_KEY_WRAP_SHA_256"


#: the configuration key of the software export fallback, named in every error that needs it
EXPORT_FALLBACK_SETTING = "hsm.export_software_fallback"


class MaterialKind(enum.StrEnum):
    AES = "aes"  # root keys: usable for AES-GCM, never revealed
    SECRET = "secret"  # standard keys: opaque secrets revealed to authorised callers


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the token *actually did* in trial operations at start-up (not its mechanism list)."""

    aes_gcm: bool
    aes_key_wrap: bool
    #: RFC 5649 (AES key wrap with padding), under either mechanism below
    aes_key_wrap_pad: bool
    rsa_oaep_sha1: bool
    rsa_oaep_sha256: bool
    rsa_x509: bool
    trusted_kek: bool
    oaep_sha256_fallback: bool
    #: the module's C_Encrypt output-length answer for GCM has room for the tag (else the HSM
    #: layer sizes the output itself)
    gcm_length_query: bool = True
    #: the same for C_WrapKey with the RFC 5649 mechanism
    wrap_length_query: bool = True
    #: data objects can be token objects (else the keypair pool's leases are key objects)
    token_data_objects: bool = True
    #: RFC 5649 is PKCS#11 3.0's CKM_AES_KEY_WRAP_KWP here (else CKM_AES_KEY_WRAP_PAD, which
    #: SoftHSM2 implements as RFC 5649 and NSS as RFC 3394 over PKCS#7 padding)
    aes_key_wrap_kwp: bool = False
    #: secrets as long as a standard key's payload may be (7,500 bytes) come back from an unwrap
    #: (NSS softoken unwraps at most 256 bytes: longer payloads are refused when stored)
    long_secrets: bool = True

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    @property
    def oaep_sha256_available(self) -> bool:
        return self.rsa_oaep_sha256 or (self.rsa_x509 and self.oaep_sha256_fallback)


@dataclass(frozen=True, slots=True)
class TokenHealth:
    """One member of an HSM group (`[[hsm.tokens]]`) as the group's health checks see it."""

    name: str
    module: str
    token_label: str
    #: "up", "down", or "refused" (its master KEK differs from the group's)
    state: str
    #: the member new requests go to
    active: bool
    #: fingerprint of the master KEK: SHA-256 of a fixed value RFC 5649-wrapped under it, 16 hex digits
    kek_check: str
    #: times this member was taken out of service
    failures: int
    #: the error class that last took it out ("" when none)
    last_error: str


@dataclass(frozen=True, slots=True)
class HsmInfo:
    library_path: str
    manufacturer: str
    library_description: str
    library_version: str
    token_label: str
    token_serial: str
    token_model: str
    kek_label: str
    session_pool_size: int
    capabilities: Capabilities
    #: the members of an HSM group and their health; empty for a single token
    tokens: tuple[TokenHealth, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyRef:
    """Names a key version for use: the cache key, and the wrapped blob to load on a miss."""

    version_id: str
    wrapped: WrappedKey


@dataclass(slots=True)
class ImportedKey:
    """The result of an RSA-OAEP import: the key, already wrapped for storage, plus the decrypted
    proof-of-possession nonce for the caller to compare (the nonce is not secret)."""

    wrapped: WrappedKey
    nonce: bytes


def wipe(buf: bytearray | memoryview | None) -> None:
    """Overwrite a secret buffer in place. Python may hold other copies; this removes the one we own."""
    if buf is None:
        return
    view = memoryview(buf).cast("B")
    view[:] = b"\x00" * len(view)


class CryptoBackend(Protocol):
    def info(self) -> HsmInfo: ...
    def capabilities(self) -> Capabilities: ...
    def random(self, length: int) -> bytes: ...

    # Key material lifecycle: everything returned is wrapped under the master KEK.
    def generate_key(self, kind: MaterialKind, length: int) -> WrappedKey: ...
    def wrap_material(self, kind: MaterialKind, material: bytes | bytearray) -> WrappedKey:
        """Plain import: the caller gave the material in the clear (over TLS)."""
        ...

    def reveal_secret(self, wrapped: WrappedKey) -> bytearray:
        """Standard keys only: the HSM refuses for AES (root) material."""
        ...

    # Envelope encryption with a cached, non-extractable handle per key version.
    def gcm_encrypt(self, key: KeyRef, plaintext: bytes | bytearray, aad: bytes) -> tuple[bytes, bytes]:
        """Return (96-bit IV, ciphertext‖tag). The backend chooses the IV; it is never reused."""
        ...

    def gcm_decrypt(self, key: KeyRef, iv: bytes, ciphertext: bytes, aad: bytes) -> bytearray:
        """Raise IntegrityError when the tag does not verify."""
        ...

    def gcm_encrypt_many(
        self, key: KeyRef, items: Sequence[tuple[bytes | bytearray, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        """`gcm_encrypt` for (plaintext, aad) pairs under one key, in one session checkout."""
        ...

    def gcm_decrypt_many(
        self, items: Sequence[tuple[KeyRef, bytes, bytes, bytes]]
    ) -> list[bytearray | HsmBridgeError]:
        """(key, iv, ciphertext, aad) items; a failing item yields its error, not an exception."""
        ...

    def evict(self, version_ids: Sequence[str]) -> None:
        """Drop cached handles (key deleted, disabled…); harmless for ids not cached."""
        ...

    # Import tokens (BYOK).
    def create_import_keypair(self, object_id: str, bits: int) -> bytes:
        """Generate an RSA keypair as HSM token objects; return the public key (DER SPKI)."""
        ...

    def destroy_import_keypair(self, object_id: str) -> None: ...
    def import_key(
        self,
        object_id: str,
        encrypted_key: bytes,
        oaep_hash: OaepHash,
        iv: bytes,
        encrypted_nonce: bytes,
    ) -> ImportedKey:
        """RSA-OAEP-unwrap `encrypted_key` inside the HSM into an AES key, open `encrypted_nonce`
        (AES-GCM, no AAD) with it, wrap the key for storage. IntegrityError if anything fails to
        verify; the same error whatever failed, so there is no padding oracle."""
        ...

    def import_wrapped_key(self, object_id: str, encrypted_key: bytes, wrapping: KeyWrapping) -> WrappedKey:
        """Unwrap `encrypted_key` (RSA-encrypted raw AES key material, no proof-of-possession nonce:
        the caller authenticates the import otherwise, e.g. with a sealed bound token) inside the
        HSM with the import keypair `object_id`, and wrap it for storage. One `IntegrityError` for
        every failure."""
        ...

    # Pushing material to a cloud KMS (hsmbridge/push/; the HSM side is hsm/export.py).
    def key_check_value(self, wrapped: WrappedKey) -> bytes:
        """AES-CMAC of a zero block under the material, first 3 bytes (as HSM vendors show it),
        computed inside the HSM: lets operators compare material across systems blindly."""
        ...

    def export_wrappings(self) -> dict[ExportWrapping, bool]:
        """The wrappings this backend can produce, each True if the HSM does it natively and
        False if only the configured software fallback can; absent if neither."""
        ...

    def wrap_for_export(self, wrapped: WrappedKey, public_key_der: bytes, wrapping: ExportWrapping) -> bytes:
        """Wrap root material for the target's RSA public key (DER SPKI) inside the HSM (or with the
        documented software fallback, where enabled and the HSM lacks the mechanism)."""
        ...

    def close(self) -> None: ...
