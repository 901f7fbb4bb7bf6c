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
from typing import Protocol

from hsmbridge.core import lifecycle
from hsmbridge.core.backend import CryptoBackend, KeyRef, wipe
from hsmbridge.core.envelope import (
    IV_SIZE,
    Envelope,
    associated_data,
    associated_data_prefix,
    encoded_aad,
    envelope_header,
    validate_aad,
    validate_plaintext,
)
from hsmbridge.core.keys import KeyService
from hsmbridge.core.model import Key, KeyVersion
from hsmbridge.core.principal import CallContext
from hsmbridge.errors import HsmBridgeError, IntegrityError, InternalError

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


class WrapItemLike(Protocol):
    """What `BatchEnvelopeService.wrap` reads of an item (a `WrapItem` or a protobuf message)."""

    @property
    def key_id(self) -> str: ...
    @property
    def plaintext(self) -> bytes | None: ...
    @property
    def aad(self) -> Sequence[str]: ...


class UnwrapItemLike(Protocol):
    """What unwrap and rewrap read of an item (an `UnwrapItem` or a protobuf message)."""

    @property
    def key_id(self) -> str: ...
    @property
    def ciphertext(self) -> bytes: ...
    @property
    def aad(self) -> Sequence[str]: ...


def _by_key(
    items: Sequence[WrapItemLike] | Sequence[UnwrapItemLike], default: str = ""
) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(item.key_id or default, []).append(index)
    return groups


class BatchEnvelopeService:
    """Batch wrap/unwrap/rewrap over the same rules as `EnvelopeService`."""

    def __init__(self, keys: KeyService, backend: CryptoBackend) -> None:
        self._keys = keys
        self._backend = backend

    def wrap(
        self, ctx: CallContext, items: Sequence[WrapItemLike], default_key_id: str = ""
    ) -> list[WrapOutcome]:
        """`items` may be `WrapItem`s or anything with the same attributes (the gRPC adapter
        passes its protobuf items as they are); an empty key id or plaintext means
        `default_key_id` or a generated DEK. Per key: the key, its version, the AAD prefix and
        the envelope header once; per distinct AAD list: its validation and encoding once."""
        results: list[WrapOutcome | None] = [None] * len(items)
        aads: dict[tuple[str, ...], bytes | HsmBridgeError] = {}
        for key_id, indexes in _by_key(items, default_key_id).items():
            try:
                key = self._keys.get_for_use(ctx, key_id)
                lifecycle.require_wrap(key)
                version = self._keys.current_version(ctx, key)
                header = envelope_header(version.id)
            except HsmBridgeError as error:
                for index in indexes:
                    results[index] = error
                continue
            try:
                prefix: bytes | HsmBridgeError = associated_data_prefix(
                    tenant=ctx.tenant, key_id=key.id, key_version_id=version.id
                )
            except HsmBridgeError as error:
                prefix = error  # each item still reports its own AAD or plaintext error first
            generated_count = sum(1 for i in indexes if not items[i].plaintext)
            randomness = (
                self._backend.random(GENERATED_DEK_BYTES * generated_count) if generated_count else b""
            )
            prepared: list[tuple[int, bytes | bytearray, bytes, bytearray | None]] = []
            used = 0  # generated DEKs handed out so far
            for index in indexes:
                item = items[index]
                encoded = self._encoded_aad(aads, item.aad)
                if isinstance(encoded, HsmBridgeError):
                    results[index] = encoded
                    continue
                generated = None
                plaintext: bytes | bytearray | None = item.plaintext or None
                if plaintext is not None:
                    try:
                        validate_plaintext(plaintext)
                    except HsmBridgeError as error:
                        results[index] = error
                        continue
                else:
                    generated = bytearray(randomness[used : used + GENERATED_DEK_BYTES])
                    plaintext = generated
                if isinstance(prefix, HsmBridgeError):
                    wipe(generated)
                    results[index] = prefix
                    continue
                if generated is not None:
                    used += GENERATED_DEK_BYTES
                prepared.append((index, plaintext, prefix + encoded, generated))
            try:
                sealed = self._backend.gcm_encrypt_many(
                    KeyRef(version.id, version.wrapped), [(p[1], p[2]) for p in prepared]
                )
            except HsmBridgeError as error:
                for index, _, _, generated in prepared:
                    wipe(generated)
                    results[index] = error
                continue
            version_id = version.id
            for (index, _, _, generated), (iv, ciphertext) in zip(prepared, sealed, strict=True):
                if len(iv) != IV_SIZE:
                    raise InternalError("envelope IV must be 12 bytes")
                results[index] = WrapResult(header + iv + ciphertext, version_id, generated)
        return results  # type: ignore[return-value]

    @staticmethod
    def _encoded_aad(
        cache: dict[tuple[str, ...], bytes | HsmBridgeError], aad: Sequence[str]
    ) -> bytes | HsmBridgeError:
        """`encoded_aad(aad)` or its error, once per distinct list in a batch (batches usually
        share one)."""
        try:
            key = tuple(aad) if not isinstance(aad, str | bytes) else None
            hash(key)
        except TypeError:
            key = None
        encoded = cache.get(key) if key is not None else None
        if encoded is None:
            try:
                encoded = encoded_aad(aad)
            except HsmBridgeError as error:
                encoded = error
            if key is not None:
                cache[key] = encoded
        return encoded

    def _open_many(
        self, ctx: CallContext, items: Sequence[UnwrapItemLike], default_key_id: str = ""
    ) -> tuple[list[tuple[bytearray, KeyVersion, Key] | HsmBridgeError], dict[str, Key]]:
        opened: list[tuple[bytearray, KeyVersion, Key] | HsmBridgeError | None] = [None] * len(items)
        keys: dict[str, Key] = {}
        pending: list[tuple[int, KeyVersion, Key, Envelope, bytes]] = []
        aads: dict[tuple[str, ...], bytes | HsmBridgeError] = {}
        prefixes: dict[str, bytes] = {}
        for key_id, indexes in _by_key(items, default_key_id).items():
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
                encoded = self._encoded_aad(aads, item.aad)
                if isinstance(encoded, HsmBridgeError):
                    opened[index] = encoded
                    continue
                try:
                    envelope = Envelope.parse(item.ciphertext)
                    version = self._keys.version(ctx, envelope.key_version_id)
                    if version is None or version.key_id != key.id:
                        raise IntegrityError("ciphertext is not valid for this key")
                    prefix = prefixes.get(version.id)
                    if prefix is None:
                        prefix = prefixes[version.id] = associated_data_prefix(
                            tenant=ctx.tenant, key_id=key.id, key_version_id=version.id
                        )
                    ad = prefix + encoded
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

    def unwrap(
        self, ctx: CallContext, items: Sequence[UnwrapItemLike], default_key_id: str = ""
    ) -> list[UnwrapOutcome]:
        """`items`: `UnwrapItem`s or protobuf items as they are (an empty key id: the default)."""
        opened, _ = self._open_many(ctx, items, default_key_id)
        results: list[UnwrapOutcome] = []
        stale: list[tuple[int, WrapItem]] = []
        for index, outcome in enumerate(opened):
            if isinstance(outcome, HsmBridgeError):
                results.append(outcome)
                continue
            plaintext, version, key = outcome
            results.append(UnwrapResult(plaintext, version.id))
            if version.id != key.current_version_id:
                item = items[index]
                stale.append((index, WrapItem(item.key_id or default_key_id, bytes(plaintext), item.aad)))
        if stale:
            for (index, _), rewrapped in zip(stale, self.wrap(ctx, [w for _, w in stale]), strict=True):
                result = results[index]
                if isinstance(rewrapped, WrapResult) and isinstance(result, UnwrapResult):
                    result.rewrapped_ciphertext = rewrapped.ciphertext
                    result.rewrapped_key_version_id = rewrapped.key_version_id
        return results

    def rewrap(
        self, ctx: CallContext, items: Sequence[UnwrapItemLike], default_key_id: str = ""
    ) -> list[RewrapOutcome]:
        """`items`: as for `unwrap`."""
        opened, _ = self._open_many(ctx, items, default_key_id)
        to_wrap: list[tuple[int, str, WrapItem]] = []
        results: list[RewrapOutcome | None] = [None] * len(items)
        for index, outcome in enumerate(opened):
            if isinstance(outcome, HsmBridgeError):
                results[index] = outcome
                continue
            plaintext, version, _ = outcome
            item = items[index]
            to_wrap.append(
                (index, version.id, WrapItem(item.key_id or default_key_id, bytes(plaintext), item.aad))
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
