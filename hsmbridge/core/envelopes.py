"""Envelope encryption: wrap, unwrap and rewrap data keys under a root key's versions.

Wrap encrypts under the key's *latest* version; unwrap accepts any retained version (the
envelope names it) and, when that version is not the latest, also returns the data key rewrapped
under the latest one, so clients migrate ciphertexts as they read them. Rewrap does the same
without the plaintext ever leaving this process.

Every failure to open a ciphertext — malformed, another tenant's, another key's, a version that
does not belong to the key, a wrong AAD, a flipped bit — is one `IntegrityError`, so the API is no
oracle for which check failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hsmbridge.core import lifecycle
from hsmbridge.core.backend import CryptoBackend, KeyRef, wipe
from hsmbridge.core.envelope import Envelope, associated_data, validate_aad, validate_plaintext
from hsmbridge.core.keys import KeyService
from hsmbridge.core.model import Key, KeyVersion
from hsmbridge.core.principal import CallContext
from hsmbridge.errors import IntegrityError

GENERATED_DEK_BYTES = 32


@dataclass(slots=True)
class WrapResult:
    ciphertext: bytes
    key_version_id: str
    #: Only when the DEK was generated here; the caller returns it once and wipes it.
    generated_plaintext: bytearray | None = None


@dataclass(slots=True)
class UnwrapResult:
    plaintext: bytearray
    key_version_id: str
    rewrapped_ciphertext: bytes | None = None
    rewrapped_key_version_id: str | None = None


@dataclass(slots=True)
class RewrapResult:
    ciphertext: bytes
    key_version_id: str
    rewrapped_key_version_id: str


class EnvelopeService:
    def __init__(self, keys: KeyService, backend: CryptoBackend) -> None:
        self._keys = keys
        self._backend = backend

    def _seal(
        self,
        ctx: CallContext,
        key: Key,
        version: KeyVersion,
        plaintext: bytes | bytearray,
        aad: Sequence[str],
    ) -> bytes:
        ad = associated_data(tenant=ctx.tenant, key_id=key.id, key_version_id=version.id, aad=aad)
        iv, ciphertext = self._backend.gcm_encrypt(KeyRef(version.id, version.wrapped), plaintext, ad)
        return Envelope(version.id, iv, ciphertext).to_bytes()

    def _open(
        self, ctx: CallContext, key: Key, ciphertext: bytes, aad: Sequence[str]
    ) -> tuple[bytearray, KeyVersion]:
        envelope = Envelope.parse(ciphertext)
        version = self._keys.version(ctx, envelope.key_version_id)
        if version is None or version.key_id != key.id:
            raise IntegrityError("ciphertext is not valid for this key")
        ad = associated_data(tenant=ctx.tenant, key_id=key.id, key_version_id=version.id, aad=aad)
        plaintext = self._backend.gcm_decrypt(
            KeyRef(version.id, version.wrapped), envelope.iv, envelope.ciphertext, ad
        )
        return plaintext, version

    def wrap(
        self,
        ctx: CallContext,
        key_id_or_alias: str,
        plaintext: bytes | bytearray | None,
        aad: Sequence[str] = (),
    ) -> WrapResult:
        validate_aad(aad)
        key = self._keys.get_for_use(ctx, key_id_or_alias)
        lifecycle.require_wrap(key)
        version = self._keys.current_version(ctx, key)
        generated = None
        if not plaintext:
            generated = bytearray(self._backend.random(GENERATED_DEK_BYTES))
            plaintext = generated
        else:
            validate_plaintext(plaintext)
        try:
            return WrapResult(self._seal(ctx, key, version, plaintext, aad), version.id, generated)
        except BaseException:
            wipe(generated)
            raise

    def unwrap(
        self, ctx: CallContext, key_id_or_alias: str, ciphertext: bytes, aad: Sequence[str] = ()
    ) -> UnwrapResult:
        validate_aad(aad)
        key = self._keys.get_for_use(ctx, key_id_or_alias)
        lifecycle.require_unwrap(key)
        plaintext, version = self._open(ctx, key, ciphertext, aad)
        result = UnwrapResult(plaintext, version.id)
        if version.id != key.current_version_id:
            latest = self._keys.current_version(ctx, key)
            result.rewrapped_ciphertext = self._seal(ctx, key, latest, plaintext, aad)
            result.rewrapped_key_version_id = latest.id
        return result

    def rewrap(
        self, ctx: CallContext, key_id_or_alias: str, ciphertext: bytes, aad: Sequence[str] = ()
    ) -> RewrapResult:
        validate_aad(aad)
        key = self._keys.get_for_use(ctx, key_id_or_alias)
        lifecycle.require_unwrap(key)
        plaintext, version = self._open(ctx, key, ciphertext, aad)
        try:
            latest = self._keys.current_version(ctx, key)
            return RewrapResult(self._seal(ctx, key, latest, plaintext, aad), version.id, latest.id)
        finally:
            wipe(plaintext)
