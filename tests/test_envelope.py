"""The ciphertext envelope: the documented vector, the parser's uniform rejection, AAD binding.

Software AES-GCM stands in for the HSM here: for the same key, IV, plaintext and AAD, the HSM's
CKM_AES_GCM produces the same bytes, so these tests pin the wire format independently of it.
"""

from __future__ import annotations

import base64
import struct
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hsmbridge.core.envelope import (
    HEADER_SIZE,
    MAX_AAD_ITEM_CHARS,
    MAX_AAD_ITEMS,
    MAX_ENVELOPE_SIZE,
    MAX_PLAINTEXT,
    MIN_ENVELOPE_SIZE,
    Envelope,
    associated_data,
    validate_aad,
    validate_plaintext,
)
from hsmbridge.errors import IntegrityError, InternalError, InvalidInput, Reason

# The vector of docs/ciphertext-format.md, field for field.
VEC_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
VEC_TENANT = "tenant-example"
VEC_KEY_ID = "6f9619ff-8b86-4d01-b42d-00cf4fc964ff"
VEC_VERSION_ID = "0b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c8d"
VEC_AAD = ["purpose=dek", "user=j\u00f6rg"]
VEC_IV = bytes.fromhex("cafebabefacedbaddecaf888")
VEC_PLAINTEXT = b"hsmbridge envelope test DEK 32B!"
VEC_AAD_HEX = (
    "68736d6272696467652f656e76656c6f706500"
    "01"
    "0000000e74656e616e742d6578616d706c65"
    "6f9619ff8b864d01b42d00cf4fc964ff"
    "0b5c6d7e8f904a1b9c2d3e4f5a6b7c8d"
    "00000002"
    "0000000b707572706f73653d64656b"
    "0000000a757365723d6ac3b67267"
)
VEC_ENVELOPE_HEX = (
    "01"
    "0b5c6d7e8f904a1b9c2d3e4f5a6b7c8d"
    "cafebabefacedbaddecaf888"
    "e2d0cd44d8132b7c232b38b30d78e5507d45e025ba6a1e540a9a4f518dbb27de"
    "ad72bb1fc8600b0f4a7496fe30348e33"
)
VEC_ENVELOPE_B64 = (
    "AQtcbX6PkEobnC0+T1prfI3K/rq++s7brd7K+Iji0M1E2BMrfCMrOLMNeOVQfUXgJbpqHlQKmk9Rjbsn3q1yux/IYAsPSnSW/jA0jjM="
)
GENERIC = "ciphertext is not valid for this key"


def _vec_aad(version_id: str = VEC_VERSION_ID) -> bytes:
    return associated_data(tenant=VEC_TENANT, key_id=VEC_KEY_ID, key_version_id=version_id, aad=VEC_AAD)


def _assert_generic(exc: IntegrityError) -> None:
    assert type(exc) is IntegrityError
    assert exc.reason is Reason.INTEGRITY_CHECK_FAILED
    assert exc.message == GENERIC


def _unwrap(raw: bytes, key: bytes, *, tenant: str, key_id: str, aad: list[str]) -> bytes:
    """What unwrap does, in software: parse, rebuild the AAD from the parsed version id, open."""
    env = Envelope.parse(raw)
    ad = associated_data(tenant=tenant, key_id=key_id, key_version_id=env.key_version_id, aad=aad)
    return AESGCM(key).decrypt(env.iv, env.ciphertext, ad)


# --- the documented vector ------------------------------------------------------------------


def test_vector_aad_bytes() -> None:
    assert _vec_aad().hex() == VEC_AAD_HEX


def test_vector_reproduced_byte_for_byte() -> None:
    ct = AESGCM(VEC_KEY).encrypt(VEC_IV, VEC_PLAINTEXT, _vec_aad())
    raw = Envelope(key_version_id=VEC_VERSION_ID, iv=VEC_IV, ciphertext=ct).to_bytes()
    assert raw.hex() == VEC_ENVELOPE_HEX
    assert base64.b64encode(raw).decode() == VEC_ENVELOPE_B64
    assert len(raw) == 77


def test_vector_parses_back_and_decrypts() -> None:
    env = Envelope.parse(base64.b64decode(VEC_ENVELOPE_B64))
    assert env.key_version_id == VEC_VERSION_ID
    assert env.iv == VEC_IV
    assert env.ciphertext == bytes.fromhex(VEC_ENVELOPE_HEX)[HEADER_SIZE:]
    assert AESGCM(VEC_KEY).decrypt(env.iv, env.ciphertext, _vec_aad()) == VEC_PLAINTEXT


def test_vector_is_in_the_doc() -> None:
    """The doc and this test must not drift apart."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "ciphertext-format.md").read_text("utf-8")
    assert VEC_ENVELOPE_HEX in doc
    assert VEC_ENVELOPE_B64 in doc
    assert VEC_KEY.hex() in doc


def test_every_single_byte_change_of_the_vector_is_rejected() -> None:
    """All 77 positions x all 255 XOR masks: parse fails, or the tag no longer verifies."""
    raw = bytes.fromhex(VEC_ENVELOPE_HEX)
    parse_failures = tag_failures = 0
    for pos in range(len(raw)):
        for mask in range(1, 256):
            bad = bytearray(raw)
            bad[pos] ^= mask
            try:
                _unwrap(bytes(bad), VEC_KEY, tenant=VEC_TENANT, key_id=VEC_KEY_ID, aad=VEC_AAD)
            except IntegrityError as exc:
                _assert_generic(exc)
                parse_failures += 1
            except InvalidTag:
                tag_failures += 1
            else:
                pytest.fail(f"byte {pos} ^ {mask:#x} still decrypts")
    assert parse_failures + tag_failures == 77 * 255
    # the version byte, the UUID version nibble and variant bits are caught by parse
    assert parse_failures >= 255


# --- parser: uniform rejection --------------------------------------------------------------


def _valid(plaintext_len: int = 32) -> bytes:
    return b"\x01" + uuid.UUID(VEC_VERSION_ID).bytes + VEC_IV + bytes(plaintext_len + 16)


@pytest.mark.parametrize("version", [0x00, 0x02, 0x10, 0xFF])
def test_unknown_version_rejected(version: int) -> None:
    with pytest.raises(IntegrityError) as info:
        Envelope.parse(bytes((version,)) + _valid()[1:])
    _assert_generic(info.value)


def test_length_bounds() -> None:
    assert MIN_ENVELOPE_SIZE == 46 and MAX_ENVELOPE_SIZE == 7545
    assert len(Envelope.parse(_valid(1)).ciphertext) == 17
    assert len(Envelope.parse(_valid(MAX_PLAINTEXT)).ciphertext) == MAX_PLAINTEXT + 16
    for raw in (b"", b"\x01", _valid(1)[:-1], _valid(MAX_PLAINTEXT) + b"\x00", _valid(0)):
        with pytest.raises(IntegrityError) as info:
            Envelope.parse(raw)
        _assert_generic(info.value)


@pytest.mark.parametrize(
    "version_id",
    [
        uuid.uuid1(),
        uuid.UUID("00000000-0000-0000-0000-000000000000"),
        uuid.UUID("0b5c6d7e-8f90-4a1b-1c2d-3e4f5a6b7c8d"),  # v4 nibble, NCS variant
        uuid.UUID("0b5c6d7e-8f90-4a1b-cc2d-3e4f5a6b7c8d"),  # v4 nibble, Microsoft variant
        uuid.UUID("0b5c6d7e-8f90-5a1b-9c2d-3e4f5a6b7c8d"),  # v5
    ],
)
def test_non_v4_uuid_rejected(version_id: uuid.UUID) -> None:
    raw = b"\x01" + version_id.bytes + _valid()[17:]
    with pytest.raises(IntegrityError) as info:
        Envelope.parse(raw)
    _assert_generic(info.value)


@pytest.mark.parametrize("data", ["AQtc", None, 77, [1, 2, 3]])
def test_non_bytes_rejected(data: object) -> None:
    with pytest.raises(IntegrityError) as info:
        Envelope.parse(data)  # type: ignore[arg-type]
    _assert_generic(info.value)


def test_accepts_bytearray_and_memoryview() -> None:
    raw = bytes.fromhex(VEC_ENVELOPE_HEX)
    assert Envelope.parse(bytearray(raw)) == Envelope.parse(memoryview(raw)) == Envelope.parse(raw)


def _check_random(data: bytes) -> None:
    try:
        env = Envelope.parse(data)
    except IntegrityError as exc:
        _assert_generic(exc)
    else:
        assert env.to_bytes() == data


@settings(max_examples=500)
@given(st.binary(max_size=MAX_ENVELOPE_SIZE + 64))
def test_random_bytes_only_raise_integrity_error(data: bytes) -> None:
    _check_random(data)


@settings(max_examples=500)
@given(st.uuids(), st.binary(min_size=0, max_size=200))
def test_random_bytes_with_version_byte_only_raise_integrity_error(u: uuid.UUID, rest: bytes) -> None:
    """Reach past the version check: a right first byte, any UUID, any tail."""
    _check_random(b"\x01" + u.bytes + rest)


# --- round trip -----------------------------------------------------------------------------

_envelopes = st.builds(
    Envelope,
    key_version_id=st.uuids(version=4).map(str),
    iv=st.binary(min_size=12, max_size=12),
    ciphertext=st.binary(min_size=17, max_size=MAX_PLAINTEXT + 16),
)


@given(_envelopes)
def test_round_trip(env: Envelope) -> None:
    raw = env.to_bytes()
    assert len(raw) == HEADER_SIZE + len(env.ciphertext)
    assert Envelope.parse(raw) == env


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key_version_id": "not-a-uuid"},
        {"key_version_id": VEC_VERSION_ID.upper()},  # not canonical
        {"key_version_id": str(uuid.uuid1())},
        {"iv": bytes(11)},
        {"iv": bytearray(12)},
        {"ciphertext": bytes(16)},
        {"ciphertext": bytes(MAX_PLAINTEXT + 17)},
    ],
)
def test_constructor_rejects_bad_fields(kwargs: dict[str, object]) -> None:
    fields: dict[str, object] = {"key_version_id": VEC_VERSION_ID, "iv": VEC_IV, "ciphertext": bytes(48)}
    fields.update(kwargs)
    with pytest.raises(InternalError):
        Envelope(**fields)  # type: ignore[arg-type]


# --- tampering with real ciphertexts --------------------------------------------------------

_aad_lists = st.lists(st.text(max_size=20), max_size=5)


@settings(max_examples=100, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    plaintext=st.binary(min_size=1, max_size=300),
    tenant=st.text(max_size=20),
    aad=_aad_lists,
    version_id=st.uuids(version=4).map(str),
    key_id=st.uuids().map(str),
    iv=st.binary(min_size=12, max_size=12),
    data=st.data(),
)
def test_single_byte_flip_never_decrypts(
    key: bytes,
    plaintext: bytes,
    tenant: str,
    aad: list[str],
    version_id: str,
    key_id: str,
    iv: bytes,
    data: st.DataObject,
) -> None:
    """A flip either fails parse or changes a field so the tag check (with the rebuilt AAD) fails.

    The same AES key is used whatever version id the flipped envelope names: the strongest case,
    as if every version of the key had the same material.
    """
    ad = associated_data(tenant=tenant, key_id=key_id, key_version_id=version_id, aad=aad)
    raw = Envelope(version_id, iv, AESGCM(key).encrypt(iv, plaintext, ad)).to_bytes()
    assert _unwrap(raw, key, tenant=tenant, key_id=key_id, aad=aad) == plaintext
    pos = data.draw(st.integers(0, len(raw) - 1), label="pos")
    mask = data.draw(st.integers(1, 255), label="mask")
    bad = bytearray(raw)
    bad[pos] ^= mask
    with pytest.raises((IntegrityError, InvalidTag)):
        _unwrap(bytes(bad), key, tenant=tenant, key_id=key_id, aad=aad)


def test_context_is_bound() -> None:
    """Another tenant, key, version or AAD: the vector no longer opens."""
    env = Envelope.parse(bytes.fromhex(VEC_ENVELOPE_HEX))
    other = str(uuid.uuid4())
    for ctx in (
        {"tenant": "tenant-other"},
        {"key_id": other},
        {"key_version_id": other},
        {"aad": []},
        {"aad": VEC_AAD[::-1]},
        {"aad": [*VEC_AAD, ""]},
        {"aad": ["purpose=dek", "user=jorg"]},
    ):
        fields = {
            "tenant": VEC_TENANT,
            "key_id": VEC_KEY_ID,
            "key_version_id": VEC_VERSION_ID,
            "aad": VEC_AAD,
        }
        fields.update(ctx)
        with pytest.raises(InvalidTag):
            AESGCM(VEC_KEY).decrypt(env.iv, env.ciphertext, associated_data(**fields))  # type: ignore[arg-type]


def test_truncation_and_extension_never_decrypt() -> None:
    raw = bytes.fromhex(VEC_ENVELOPE_HEX)
    for bad in [raw[:n] for n in range(len(raw))] + [raw + b"\x00", raw + raw[-16:]]:
        with pytest.raises((IntegrityError, InvalidTag)):
            _unwrap(bad, VEC_KEY, tenant=VEC_TENANT, key_id=VEC_KEY_ID, aad=VEC_AAD)


# --- AAD encoding ---------------------------------------------------------------------------

K1 = "6f9619ff-8b86-4d01-b42d-00cf4fc964ff"
K2 = "0b5c6d7e-8f90-4a1b-9c2d-3e4f5a6b7c8d"


def _ad(tenant: str = "t", key_id: str = K1, version_id: str = K2, aad: list[str] | None = None) -> bytes:
    return associated_data(tenant=tenant, key_id=key_id, key_version_id=version_id, aad=aad or [])


@pytest.mark.parametrize(
    ("left", "right"),
    [
        ({"aad": ["ab", "c"]}, {"aad": ["a", "bc"]}),
        ({"aad": []}, {"aad": [""]}),
        ({"aad": [""]}, {"aad": ["", ""]}),
        ({"aad": ["a", "b"]}, {"aad": ["b", "a"]}),
        ({"aad": ["a\x00b"]}, {"aad": ["a", "b"]}),
        ({"tenant": "a", "aad": []}, {"tenant": "", "aad": ["a"]}),
        ({"tenant": "ab", "aad": ["c"]}, {"tenant": "a", "aad": ["bc"]}),
        ({"tenant": "a\x00\x00\x00\x01"}, {"tenant": "a", "aad": ["\x01"]}),
        ({"key_id": K1, "version_id": K2}, {"key_id": K2, "version_id": K1}),
        ({"tenant": "\u00e9"}, {"tenant": "e\u0301"}),  # NFC vs NFD: not normalised, so distinct
    ],
)
def test_aad_encoding_distinguishes_tricky_cases(left: dict[str, object], right: dict[str, object]) -> None:
    assert _ad(**left) != _ad(**right)  # type: ignore[arg-type]


def _decode_aad(ad: bytes) -> tuple[str, str, str, list[str]]:
    """A strict inverse of associated_data: if it recovers every input, the encoding is injective."""
    label = b"hsmbridge/envelope\x00\x01"
    assert ad.startswith(label)
    pos = len(label)

    def take(n: int) -> bytes:
        nonlocal pos
        assert pos + n <= len(ad)
        pos += n
        return ad[pos - n : pos]

    def lp() -> str:
        return take(struct.unpack(">I", take(4))[0]).decode("utf-8")

    tenant = lp()
    key_id, version_id = str(uuid.UUID(bytes=take(16))), str(uuid.UUID(bytes=take(16)))
    items = [lp() for _ in range(struct.unpack(">I", take(4))[0])]
    assert pos == len(ad)
    return tenant, key_id, version_id, items


@given(tenant=st.text(max_size=30), key_id=st.uuids(), version_id=st.uuids(version=4), aad=_aad_lists)
def test_aad_encoding_is_invertible(
    tenant: str, key_id: uuid.UUID, version_id: uuid.UUID, aad: list[str]
) -> None:
    ad = _ad(tenant, str(key_id), str(version_id), aad)
    assert _decode_aad(ad) == (tenant, str(key_id), str(version_id), aad)


@given(a=st.tuples(st.text(max_size=6), _aad_lists), b=st.tuples(st.text(max_size=6), _aad_lists))
def test_aad_encoding_injective(a: tuple[str, list[str]], b: tuple[str, list[str]]) -> None:
    assume(a != b)
    assert _ad(a[0], aad=a[1]) != _ad(b[0], aad=b[1])


def test_uuid_spellings_bind_the_same_bytes() -> None:
    """The AAD binds the UUID's 16 bytes, not its spelling."""
    assert _ad(key_id=K1.upper()) == _ad(key_id=K1) == _ad(key_id=K1.replace("-", ""))


@pytest.mark.parametrize("field", ["key_id", "version_id"])
@pytest.mark.parametrize("bad", ["", "default", "6f9619ff-8b86-4d01-b42d", "\u00e9"])
def test_aad_rejects_non_uuid_ids(field: str, bad: str) -> None:
    with pytest.raises(InvalidInput) as info:
        _ad(**{field: bad})  # type: ignore[arg-type]
    assert type(info.value) is InvalidInput
    assert info.value.target == ("key_id" if field == "key_id" else "key_version_id")
    assert bad not in info.value.message or not bad


def test_aad_rejects_unencodable_tenant() -> None:
    with pytest.raises(InvalidInput) as info:
        _ad(tenant="\ud800")
    assert info.value.target == "tenant"


# --- validation helpers ---------------------------------------------------------------------


def test_validate_plaintext() -> None:
    validate_plaintext(b"x")
    validate_plaintext(bytearray(MAX_PLAINTEXT))
    for bad in (b"", bytes(MAX_PLAINTEXT + 1), "text"):
        with pytest.raises(InvalidInput) as info:
            validate_plaintext(bad)  # type: ignore[arg-type]
        assert type(info.value) is InvalidInput
        assert info.value.reason is Reason.INVALID_FIELD
        assert info.value.target == "plaintext"


def test_validate_aad_accepts_the_limits() -> None:
    validate_aad([])
    validate_aad([""])
    validate_aad(["x" * MAX_AAD_ITEM_CHARS])
    validate_aad(["\u20ac" * MAX_AAD_ITEM_CHARS])  # characters, not UTF-8 bytes (765 bytes here)
    validate_aad(["\U0001f512" * MAX_AAD_ITEM_CHARS])
    validate_aad(["a"] * MAX_AAD_ITEMS)
    validate_aad(("a", "b"))


@pytest.mark.parametrize(
    "bad",
    [
        ["x" * (MAX_AAD_ITEM_CHARS + 1)],
        ["a"] * (MAX_AAD_ITEMS + 1),
        [b"bytes"],
        [None],
        [1],
        ["\udc80"],  # lone surrogate: not encodable as UTF-8
        "a string is not a list",
        None,
    ],
)
def test_validate_aad_rejects(bad: object) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_aad(bad)  # type: ignore[arg-type]
    assert type(info.value) is InvalidInput
    assert info.value.reason is Reason.INVALID_FIELD
    assert info.value.target == "aad"


def test_associated_data_enforces_aad_limits() -> None:
    with pytest.raises(InvalidInput):
        _ad(aad=["x" * (MAX_AAD_ITEM_CHARS + 1)])
