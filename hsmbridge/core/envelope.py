"""The ciphertext envelope: how a wrapped DEK looks on the wire.

A wrapped DEK must carry everything needed to unwrap it later except the key itself, so that
the service can pick the right key version in one lookup and the HSM can verify it in one call:

    offset  size  field
    0       1     format version = 0x01
    1       16    key-version id (UUID v4, raw bytes)
    17      12    IV (96-bit GCM nonce, drawn from the HSM's RNG)
    29      n+16  AES-GCM ciphertext || 16-byte tag   (n = plaintext length, 1..7500)

The AES-GCM AAD is *not* stored: it is rebuilt by `associated_data()` from the request context
(tenant, key id, version id and the caller's AAD list), which is what makes a ciphertext useless
under another tenant, key, version or AAD. docs/ciphertext-format.md gives the rationale and a
test vector.

Parsing is deliberately uninformative: whatever is wrong (version byte, length, UUID) the answer
is the same `IntegrityError`, because unwrap must answer "this ciphertext is not valid for this
key" uniformly, and because messages must never echo caller bytes.
"""

from __future__ import annotations

import functools
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from hsmbridge.errors import IntegrityError, InternalError, InvalidInput, Reason

FORMAT_VERSION = 0x01
IV_SIZE = 12
TAG_SIZE = 16
HEADER_SIZE = 1 + 16 + IV_SIZE  # version byte, key-version id, IV

#: Key Protect's limit on a DEK to wrap; it also bounds the envelope so parse can reject early.
MAX_PLAINTEXT = 7500
#: Key Protect's limit per AAD string (characters, i.e. code points, not UTF-8 bytes).
MAX_AAD_ITEM_CHARS = 255
#: Our own bound (Key Protect documents none): real callers bind a handful of context strings,
#: and 100 items keep the worst-case AAD (100 * (4 + 255 * 4 bytes) ~ 100 KiB) small enough that
#: one request cannot make us hash megabytes or hold a large buffer per HSM call.
MAX_AAD_ITEMS = 100

MIN_ENVELOPE_SIZE = HEADER_SIZE + 1 + TAG_SIZE
MAX_ENVELOPE_SIZE = HEADER_SIZE + MAX_PLAINTEXT + TAG_SIZE

#: Domain separation: these AAD bytes can never collide with AAD built by another protocol.
_AAD_LABEL = b"hsmbridge/envelope\x00"
_U32 = struct.Struct(">I")

_GENERIC = "ciphertext is not valid for this key"


def _is_uuid4(value: uuid.UUID) -> bool:
    return value.variant == uuid.RFC_4122 and value.version == 4


@functools.lru_cache(maxsize=65536)
def _canonical_uuid4_bytes(value: str) -> bytes | None:
    """The 16 bytes of a canonical UUID v4 string, else None. Memoised: the hot path sees the same
    few key and version ids over and over, and `uuid.UUID()` was a fifth of a wrap's CPU time."""
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None
    return parsed.bytes if str(parsed) == value and _is_uuid4(parsed) else None


@dataclass(frozen=True)
class Envelope:
    """One wrapped DEK. `key_version_id` is the canonical lowercase UUID string.

    Construction validates the fields, so an `Envelope` that exists can always be serialised
    and parsed back to an equal value; a bad field here is our bug, hence `InternalError`.
    """

    key_version_id: str
    iv: bytes
    ciphertext: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_version_id, str) or _canonical_uuid4_bytes(self.key_version_id) is None:
            raise InternalError("envelope key-version id must be a canonical UUID v4")
        if not isinstance(self.iv, bytes) or len(self.iv) != IV_SIZE:
            raise InternalError("envelope IV must be 12 bytes")
        if not isinstance(self.ciphertext, bytes) or not (
            1 + TAG_SIZE <= len(self.ciphertext) <= MAX_PLAINTEXT + TAG_SIZE
        ):
            raise InternalError("envelope ciphertext length out of range")

    def to_bytes(self) -> bytes:
        version_bytes = _canonical_uuid4_bytes(self.key_version_id)
        assert version_bytes is not None  # checked at construction
        return bytes((FORMAT_VERSION,)) + version_bytes + self.iv + self.ciphertext

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> Envelope:
        """Parse the wire form; any defect raises the same generic `IntegrityError`."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise IntegrityError(_GENERIC, reason=Reason.INTEGRITY_CHECK_FAILED)
        raw = bytes(data)
        if not (MIN_ENVELOPE_SIZE <= len(raw) <= MAX_ENVELOPE_SIZE) or raw[0] != FORMAT_VERSION:
            raise IntegrityError(_GENERIC, reason=Reason.INTEGRITY_CHECK_FAILED)
        version_id = uuid.UUID(bytes=raw[1:17])
        if not _is_uuid4(version_id):
            raise IntegrityError(_GENERIC, reason=Reason.INTEGRITY_CHECK_FAILED)
        return cls(key_version_id=str(version_id), iv=raw[17:HEADER_SIZE], ciphertext=raw[HEADER_SIZE:])


def _uuid_bytes(value: str, target: str) -> bytes:
    if isinstance(value, str):
        canonical = _canonical_uuid4_bytes(value)
        if canonical is not None:
            return canonical
    try:
        return uuid.UUID(value).bytes
    except (ValueError, TypeError, AttributeError):
        raise InvalidInput(f"{target} is not a UUID", reason=Reason.INVALID_FIELD, target=target) from None


def _lp(data: bytes) -> bytes:
    """Length-prefix: with every variable field prefixed, no two inputs share an encoding."""
    return _U32.pack(len(data)) + data


def _utf8(value: str, target: str) -> bytes:
    try:
        return value.encode("utf-8")
    except (UnicodeEncodeError, AttributeError):
        raise InvalidInput(
            f"{target} must be valid Unicode text", reason=Reason.INVALID_FIELD, target=target
        ) from None


def associated_data(*, tenant: str, key_id: str, key_version_id: str, aad: Sequence[str]) -> bytes:
    """The exact AAD bytes fed to AES-GCM for an envelope.

    Binds the format version, tenant, key id, key-version id and the caller's ordered AAD list,
    so a ciphertext verifies only in the context it was made in. Every variable-length field is
    length-prefixed and the list is count-prefixed, so the encoding is injective
    (["ab", "c"] != ["a", "bc"], [] != [""], tenant/AAD boundaries cannot shift).
    """
    validate_aad(aad)
    return associated_data_prefix(tenant=tenant, key_id=key_id, key_version_id=key_version_id) + _encode_aad(
        aad
    )


def associated_data_prefix(*, tenant: str, key_id: str, key_version_id: str) -> bytes:
    """The part of `associated_data` that depends on the context only (a batch computes it once
    per key): `associated_data(...) == associated_data_prefix(...) + encoded_aad(aad)`."""
    return b"".join(
        (
            _AAD_LABEL,
            bytes((FORMAT_VERSION,)),
            _lp(_utf8(tenant, "tenant")),
            _uuid_bytes(key_id, "key_id"),
            _uuid_bytes(key_version_id, "key_version_id"),
        )
    )


def encoded_aad(aad: Sequence[str]) -> bytes:
    """The caller's AAD list as `associated_data` ends with it, validated (`validate_aad`)."""
    validate_aad(aad)
    return _encode_aad(aad)


def _encode_aad(aad: Sequence[str]) -> bytes:
    return _U32.pack(len(aad)) + b"".join(_lp(item.encode("utf-8")) for item in aad)


def envelope_header(key_version_id: str) -> bytes:
    """The bytes every envelope under `key_version_id` starts with: a batch builds each envelope
    as ``header + iv + ciphertext`` (what `Envelope(...).to_bytes()` gives, without the object)."""
    version_bytes = _canonical_uuid4_bytes(key_version_id) if isinstance(key_version_id, str) else None
    if version_bytes is None:
        raise InternalError("envelope key-version id must be a canonical UUID v4")
    return bytes((FORMAT_VERSION,)) + version_bytes


def validate_plaintext(plaintext: bytes | bytearray) -> None:
    """1..7500 bytes, as Key Protect allows; checked before the HSM sees it."""
    if not isinstance(plaintext, bytes | bytearray) or not (1 <= len(plaintext) <= MAX_PLAINTEXT):
        raise InvalidInput(
            f"plaintext must be 1 to {MAX_PLAINTEXT} bytes", reason=Reason.INVALID_FIELD, target="plaintext"
        )


def validate_aad(aad: Sequence[str]) -> None:
    """At most `MAX_AAD_ITEMS` strings of at most 255 characters each, all encodable as UTF-8."""
    if isinstance(aad, str | bytes) or not isinstance(aad, Sequence):
        raise InvalidInput("aad must be a list of strings", reason=Reason.INVALID_FIELD, target="aad")
    if len(aad) > MAX_AAD_ITEMS:
        raise InvalidInput(
            f"aad may hold at most {MAX_AAD_ITEMS} items", reason=Reason.INVALID_FIELD, target="aad"
        )
    for item in aad:
        if not isinstance(item, str) or len(item) > MAX_AAD_ITEM_CHARS:
            raise InvalidInput(
                f"each aad item must be a string of at most {MAX_AAD_ITEM_CHARS} characters",
                reason=Reason.INVALID_FIELD,
                target="aad",
            )
        _utf8(item, "aad")
