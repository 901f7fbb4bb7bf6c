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
from hsmbridge.errors import HsmBridgeError, IntegrityError

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
        ctx.used(key.id, version.id)
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
        ctx.used(key.id, version.id)
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


# --- batches -----------------------------------------------------------------------------------
#
# A batch is many independent items: each gets its own result or error, and one bad item never
# fails the rest. Items are grouped by key so each key is resolved once and each group's HSM work
# happens in one session checkout (the per-item cost is then the GCM call and the envelope).


@dataclass(frozen=True, slots=True)
class WrapItem:
    key_id: str
    plaintext: bytes | None = None
    aad: Sequence[str] = ()


@dataclass(frozen=True, slots=True)
class UnwrapItem:
    key_id: str
    ciphertext: bytes
    aad: Sequence[str] = ()


WrapOutcome = WrapResult | HsmBridgeError
UnwrapOutcome = UnwrapResult | HsmBridgeError
RewrapOutcome = RewrapResult | HsmBridgeError


def _by_key(items: Sequence[WrapItem] | Sequence[UnwrapItem]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.key_id, []).append(index)
    return groups


class BatchEnvelopeService:
    """Batch wrap/unwrap/rewrap over the same rules as `EnvelopeService`."""

    def __init__(self, keys: KeyService, backend: CryptoBackend) -> None:
        self._keys = keys
        self._backend = backend

    def wrap(self, ctx: CallContext, items: Sequence[WrapItem]) -> list[WrapOutcome]:
        results: list[WrapOutcome | None] = [None] * len(items)
        for key_id, indexes in _by_key(items).items():
            try:
                key = self._keys.get_for_use(ctx, key_id)
                lifecycle.require_wrap(key)
                version = self._keys.current_version(ctx, key)
            except HsmBridgeError as error:
                for index in indexes:
                    results[index] = error
                continue
            generated_count = sum(1 for i in indexes if not items[i].plaintext)
            randomness = (
                self._backend.random(GENERATED_DEK_BYTES * generated_count) if generated_count else b""
            )
            prepared: list[tuple[int, bytes | bytearray, bytes, bytearray | None]] = []
            for index in indexes:
                item = items[index]
                try:
                    validate_aad(item.aad)
                    generated = None
                    if item.plaintext:
                        validate_plaintext(item.plaintext)
                        plaintext: bytes | bytearray = item.plaintext
                    else:
                        start = GENERATED_DEK_BYTES * sum(1 for p in prepared if p[3] is not None)
                        generated = bytearray(randomness[start : start + GENERATED_DEK_BYTES])
                        plaintext = generated
                    ad = associated_data(
                        tenant=ctx.tenant, key_id=key.id, key_version_id=version.id, aad=item.aad
                    )
                except HsmBridgeError as error:
                    results[index] = error
                    continue
                prepared.append((index, plaintext, ad, generated))
            try:
                sealed = self._backend.gcm_encrypt_many(
                    KeyRef(version.id, version.wrapped), [(p[1], p[2]) for p in prepared]
                )
            except HsmBridgeError as error:
                for index, _, _, generated in prepared:
                    wipe(generated)
                    results[index] = error
                continue
            for (index, _, _, generated), (iv, ciphertext) in zip(prepared, sealed, strict=True):
                results[index] = WrapResult(
                    Envelope(version.id, iv, ciphertext).to_bytes(), version.id, generated
                )
        return results  # type: ignore[return-value]

    def _open_many(
        self, ctx: CallContext, items: Sequence[UnwrapItem]
    ) -> tuple[list[tuple[bytearray, KeyVersion, Key] | HsmBridgeError], dict[str, Key]]:
        opened: list[tuple[bytearray, KeyVersion, Key] | HsmBridgeError | None] = [None] * len(items)
        keys: dict[str, Key] = {}
        pending: list[tuple[int, KeyVersion, Key, Envelope, bytes]] = []
        for key_id, indexes in _by_key(items).items():
            try:
                key = self._keys.get_for_use(ctx, key_id)
                lifecycle.require_unwrap(key)
            except HsmBridgeError as error:
                for index in indexes:
                    opened[index] = error
                continue
            keys[key_id] = key
            for index in indexes:
                item = items[index]
                try:
                    validate_aad(item.aad)
                    envelope = Envelope.parse(item.ciphertext)
                    version = self._keys.version(ctx, envelope.key_version_id)
                    if version is None or version.key_id != key.id:
                        raise IntegrityError("ciphertext is not valid for this key")
                    ad = associated_data(
                        tenant=ctx.tenant, key_id=key.id, key_version_id=version.id, aad=item.aad
                    )
                except HsmBridgeError as error:
                    opened[index] = error
                    continue
                pending.append((index, version, key, envelope, ad))
        try:
            plaintexts = self._backend.gcm_decrypt_many(
                [(KeyRef(v.id, v.wrapped), e.iv, e.ciphertext, ad) for _, v, _, e, ad in pending]
            )
        except HsmBridgeError as error:
            plaintexts = [error] * len(pending)
        for (index, version, key, _, _), plaintext in zip(pending, plaintexts, strict=True):
            opened[index] = plaintext if isinstance(plaintext, HsmBridgeError) else (plaintext, version, key)
        return opened, keys  # type: ignore[return-value]

    def unwrap(self, ctx: CallContext, items: Sequence[UnwrapItem]) -> list[UnwrapOutcome]:
        opened, _ = self._open_many(ctx, items)
        results: list[UnwrapOutcome] = []
        stale: list[tuple[int, WrapItem]] = []
        for index, outcome in enumerate(opened):
            if isinstance(outcome, HsmBridgeError):
                results.append(outcome)
                continue
            plaintext, version, key = outcome
            results.append(UnwrapResult(plaintext, version.id))
            if version.id != key.current_version_id:
                stale.append((index, WrapItem(items[index].key_id, bytes(plaintext), items[index].aad)))
        if stale:
            for (index, _), rewrapped in zip(stale, self.wrap(ctx, [w for _, w in stale]), strict=True):
                result = results[index]
                if isinstance(rewrapped, WrapResult) and isinstance(result, UnwrapResult):
                    result.rewrapped_ciphertext = rewrapped.ciphertext
                    result.rewrapped_key_version_id = rewrapped.key_version_id
        return results

    def rewrap(self, ctx: CallContext, items: Sequence[UnwrapItem]) -> list[RewrapOutcome]:
        opened, _ = self._open_many(ctx, items)
        to_wrap: list[tuple[int, str, WrapItem]] = []
        results: list[RewrapOutcome | None] = [None] * len(items)
        for index, outcome in enumerate(opened):
            if isinstance(outcome, HsmBridgeError):
                results[index] = outcome
                continue
            plaintext, version, _ = outcome
            to_wrap.append(
                (index, version.id, WrapItem(items[index].key_id, bytes(plaintext), items[index].aad))
            )
            wipe(plaintext)
        wrapped = self.wrap(ctx, [w for _, _, w in to_wrap]) if to_wrap else []
        for (index, original_version, _), outcome in zip(to_wrap, wrapped, strict=True):
            results[index] = (
                outcome
                if isinstance(outcome, HsmBridgeError)
                else RewrapResult(outcome.ciphertext, original_version, outcome.key_version_id)
            )
        return results  # type: ignore[return-value]
