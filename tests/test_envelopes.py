"""Spec §6: wrap, unwrap and rewrap through `EnvelopeService`, on the fake and on SoftHSM2.

What must hold whichever backend runs it: a ciphertext opens only under the key, version, tenant
and AAD it was made with, and every other attempt is the same `IntegrityError` without plaintext;
old versions keep unwrapping after rotation and hand back a ciphertext under the latest one; the
state rules of §4.2 apply.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hsmbridge.core.clock import FixedClock
from hsmbridge.core.envelope import HEADER_SIZE, MAX_AAD_ITEM_CHARS, MAX_PLAINTEXT, TAG_SIZE, Envelope
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import Key, KeyState
from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.errors import Conflict, Gone, IntegrityError, InvalidInput, NotFound, Reason

pytest_plugins = ("services_fixtures",)
pytestmark = pytest.mark.any_hsm

DEK = bytes(range(32))
AAD = ["purpose=dek", "user=jörg", ""]


def root_key(services: Services, ctx: CallContext, name: str = "root", **spec: object) -> Key:
    return services.keys.create(ctx, KeySpec(name=name, **spec))  # type: ignore[arg-type]


def assert_integrity_error(exc_info: pytest.ExceptionInfo[IntegrityError]) -> None:
    """Every failure to open a ciphertext looks the same: no oracle for which check failed."""
    assert type(exc_info.value) is IntegrityError
    assert exc_info.value.reason is Reason.INTEGRITY_CHECK_FAILED


def assert_invalid_field(exc_info: pytest.ExceptionInfo[InvalidInput], target: str) -> None:
    """A plain input error, distinguishable from an integrity failure (its subclass)."""
    assert type(exc_info.value) is InvalidInput
    assert exc_info.value.reason is Reason.INVALID_FIELD
    assert exc_info.value.target == target


# --- round trips --------------------------------------------------------------------------------


def test_wrap_then_unwrap_returns_the_plaintext(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    wrapped = services.envelopes.wrap(ctx, key.id, DEK)
    assert wrapped.key_version_id == key.current_version_id == key.id
    assert wrapped.generated_plaintext is None
    assert DEK not in wrapped.ciphertext
    assert len(wrapped.ciphertext) == HEADER_SIZE + len(DEK) + TAG_SIZE

    unwrapped = services.envelopes.unwrap(ctx, key.id, wrapped.ciphertext)
    assert unwrapped.plaintext == DEK
    assert unwrapped.key_version_id == key.id
    assert unwrapped.rewrapped_ciphertext is None
    assert unwrapped.rewrapped_key_version_id is None


def test_wrap_without_plaintext_generates_and_returns_a_32_byte_dek(
    services: Services, ctx: CallContext
) -> None:
    key = root_key(services, ctx)
    first = services.envelopes.wrap(ctx, key.id, None)
    second = services.envelopes.wrap(ctx, key.id, b"")  # an empty body means "generate" too
    for result in (first, second):
        assert result.generated_plaintext is not None
        assert len(result.generated_plaintext) == 32
        unwrapped = services.envelopes.unwrap(ctx, key.id, result.ciphertext)
        assert unwrapped.plaintext == result.generated_plaintext
    assert first.generated_plaintext != second.generated_plaintext


def test_wrap_and_unwrap_by_alias(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx, aliases=["payments-kek"])
    wrapped = services.envelopes.wrap(ctx, "payments-kek", DEK)
    assert services.envelopes.unwrap(ctx, key.id, wrapped.ciphertext).plaintext == DEK
    assert services.envelopes.unwrap(ctx, "payments-kek", wrapped.ciphertext).plaintext == DEK


def test_a_removed_alias_stops_resolving_for_envelopes_at_once(services: Services, ctx: CallContext) -> None:
    """Envelope lookups may be cached; a change made through this process must show at once."""
    key = root_key(services, ctx, aliases=["moving"])
    ciphertext = services.envelopes.wrap(ctx, "moving", DEK).ciphertext
    services.keys.remove_alias(ctx, key.id, "moving")
    with pytest.raises(NotFound):
        services.envelopes.wrap(ctx, "moving", DEK)
    with pytest.raises(NotFound):
        services.envelopes.unwrap(ctx, "moving", ciphertext)

    successor = root_key(services, ctx, "successor", aliases=["moving"])
    assert services.envelopes.wrap(ctx, "moving", DEK).key_version_id == successor.id
    with pytest.raises(IntegrityError):
        services.envelopes.unwrap(ctx, "moving", ciphertext)


def test_wrap_with_aad_needs_the_same_aad_to_unwrap(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    wrapped = services.envelopes.wrap(ctx, key.id, DEK, AAD)
    assert services.envelopes.unwrap(ctx, key.id, wrapped.ciphertext, list(AAD)).plaintext == DEK
    assert services.envelopes.unwrap(ctx, key.id, wrapped.ciphertext, tuple(AAD)).plaintext == DEK


def test_each_wrap_uses_a_fresh_iv(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    envelopes = [Envelope.parse(services.envelopes.wrap(ctx, key.id, DEK).ciphertext) for _ in range(20)]
    assert len({e.iv for e in envelopes}) == 20
    assert len({e.ciphertext for e in envelopes}) == 20


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    plaintext=st.binary(min_size=1, max_size=MAX_PLAINTEXT),
    aad=st.lists(st.text(max_size=MAX_AAD_ITEM_CHARS), max_size=5),
)
def test_round_trip_any_plaintext_and_aad(
    services: Services, ctx: CallContext, plaintext: bytes, aad: list[str]
) -> None:
    key = root_key(services, ctx)
    wrapped = services.envelopes.wrap(ctx, key.id, plaintext, aad)
    assert services.envelopes.unwrap(ctx, key.id, wrapped.ciphertext, aad).plaintext == plaintext
    with pytest.raises(IntegrityError) as exc_info:
        services.envelopes.unwrap(ctx, key.id, wrapped.ciphertext, [*aad, "x"])
    assert_integrity_error(exc_info)


# --- tampering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_flipped_byte_is_an_integrity_error_never_plaintext(
    services: Services, ctx: CallContext, mask: int
) -> None:
    """Version byte, key-version id, IV, ciphertext and tag: a change anywhere must be caught."""
    key = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK, AAD).ciphertext
    assert len(ciphertext) == 77
    for i in range(len(ciphertext)):
        tampered = bytearray(ciphertext)
        tampered[i] ^= mask
        with pytest.raises(IntegrityError) as exc_info:
            services.envelopes.unwrap(ctx, key.id, bytes(tampered), AAD)
        assert_integrity_error(exc_info)
        with pytest.raises(IntegrityError):
            services.envelopes.rewrap(ctx, key.id, bytes(tampered), AAD)
    # and the untouched ciphertext still opens: the failures above were the tampering's doing
    assert services.envelopes.unwrap(ctx, key.id, ciphertext, AAD).plaintext == DEK


def test_truncated_extended_and_garbage_ciphertexts_are_integrity_errors(
    services: Services, ctx: CallContext
) -> None:
    key = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK).ciphertext
    bad = [
        b"",
        ciphertext[:1],
        ciphertext[:HEADER_SIZE],
        ciphertext[:-1],
        ciphertext + b"\x00",
        ciphertext * 2,
        os.urandom(len(ciphertext)),
        b"\x01" + os.urandom(len(ciphertext) - 1),
    ]
    for candidate in bad:
        with pytest.raises(IntegrityError) as exc_info:
            services.envelopes.unwrap(ctx, key.id, candidate)
        assert_integrity_error(exc_info)


# --- AAD ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given_aad",
    [
        pytest.param([], id="missing"),
        pytest.param(["purpose=dek", "user=jörg"], id="one-item-short"),
        pytest.param([*AAD, "extra"], id="extra-item"),
        pytest.param([*AAD, ""], id="extra-empty-item"),
        pytest.param(["purpose=dek", "user=jorg", ""], id="one-char-changed"),
        pytest.param(["user=jörg", "purpose=dek", ""], id="reordered"),
        pytest.param(["purpose=dekuser=jörg", ""], id="concatenated"),
        pytest.param(["purpose=dek", "user=jörg", " "], id="whitespace"),
    ],
)
def test_wrong_aad_is_an_integrity_error(services: Services, ctx: CallContext, given_aad: list[str]) -> None:
    key = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK, AAD).ciphertext
    with pytest.raises(IntegrityError) as exc_info:
        services.envelopes.unwrap(ctx, key.id, ciphertext, given_aad)
    assert_integrity_error(exc_info)


def test_aad_given_to_unwrap_when_wrap_had_none_is_an_integrity_error(
    services: Services, ctx: CallContext
) -> None:
    key = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK).ciphertext
    for given_aad in ([""], ["x"]):
        with pytest.raises(IntegrityError) as exc_info:
            services.envelopes.unwrap(ctx, key.id, ciphertext, given_aad)
        assert_integrity_error(exc_info)


# --- wrong tenant, wrong key ----------------------------------------------------------------------


def test_another_tenants_ciphertext_does_not_open_under_my_key(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    mine = root_key(services, ctx)
    theirs = root_key(services, other_tenant)
    ciphertext = services.envelopes.wrap(other_tenant, theirs.id, DEK).ciphertext
    with pytest.raises(IntegrityError) as exc_info:
        services.envelopes.unwrap(ctx, mine.id, ciphertext)
    assert_integrity_error(exc_info)
    with pytest.raises(IntegrityError):
        services.envelopes.rewrap(ctx, mine.id, ciphertext)


def test_another_tenants_key_id_is_not_found(
    services: Services, ctx: CallContext, other_tenant: CallContext
) -> None:
    theirs = root_key(services, other_tenant, aliases=["their-kek"])
    ciphertext = services.envelopes.wrap(other_tenant, theirs.id, DEK).ciphertext
    for key_ref in (theirs.id, "their-kek"):
        with pytest.raises(NotFound) as exc_info:
            services.envelopes.wrap(ctx, key_ref, DEK)
        assert exc_info.value.reason is Reason.KEY_NOT_FOUND
        with pytest.raises(NotFound):
            services.envelopes.unwrap(ctx, key_ref, ciphertext)
        with pytest.raises(NotFound):
            services.envelopes.rewrap(ctx, key_ref, ciphertext)


def test_another_keys_ciphertext_is_an_integrity_error(services: Services, ctx: CallContext) -> None:
    key1 = root_key(services, ctx, "key-1")
    key2 = root_key(services, ctx, "key-2")
    ciphertext = services.envelopes.wrap(ctx, key1.id, DEK).ciphertext
    with pytest.raises(IntegrityError) as exc_info:
        services.envelopes.unwrap(ctx, key2.id, ciphertext)
    assert_integrity_error(exc_info)
    with pytest.raises(IntegrityError):
        services.envelopes.rewrap(ctx, key2.id, ciphertext)


def test_keys_with_the_same_imported_material_do_not_open_each_others_ciphertexts(
    services: Services, ctx: CallContext
) -> None:
    """The key id is bound in the AAD: same material, different key, no unwrap (spec §6.2 makes
    cross-key unwrap optional; refusing it is the safe choice)."""
    material = os.urandom(32)
    key1 = root_key(services, ctx, "twin-1", payload=material)
    key2 = root_key(services, ctx, "twin-2", payload=material)
    ciphertext = services.envelopes.wrap(ctx, key1.id, DEK).ciphertext
    with pytest.raises(IntegrityError):
        services.envelopes.unwrap(ctx, key2.id, ciphertext)


# --- sizes ----------------------------------------------------------------------------------------


def test_plaintext_up_to_7500_bytes(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    largest = os.urandom(MAX_PLAINTEXT)
    ciphertext = services.envelopes.wrap(ctx, key.id, largest).ciphertext
    assert services.envelopes.unwrap(ctx, key.id, ciphertext).plaintext == largest

    with pytest.raises(InvalidInput) as exc_info:
        services.envelopes.wrap(ctx, key.id, largest + b"\x00")
    assert_invalid_field(exc_info, "plaintext")


def test_one_byte_plaintext(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, key.id, b"\x00").ciphertext
    assert services.envelopes.unwrap(ctx, key.id, ciphertext).plaintext == b"\x00"


def test_aad_items_up_to_255_characters(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    for longest in ("a" * MAX_AAD_ITEM_CHARS, "ö" * MAX_AAD_ITEM_CHARS, "🔑" * MAX_AAD_ITEM_CHARS):
        ciphertext = services.envelopes.wrap(ctx, key.id, DEK, [longest]).ciphertext
        assert services.envelopes.unwrap(ctx, key.id, ciphertext, [longest]).plaintext == DEK

    too_long = ["a" * (MAX_AAD_ITEM_CHARS + 1)]
    with pytest.raises(InvalidInput) as exc_info:
        services.envelopes.wrap(ctx, key.id, DEK, too_long)
    assert_invalid_field(exc_info, "aad")
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK).ciphertext
    for call in (services.envelopes.unwrap, services.envelopes.rewrap):
        with pytest.raises(InvalidInput) as exc_info:
            call(ctx, key.id, ciphertext, too_long)
        assert_invalid_field(exc_info, "aad")


def test_aad_must_be_a_list_of_strings(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    for bad in ("purpose=dek", [b"bytes"], [1]):
        with pytest.raises(InvalidInput) as exc_info:
            services.envelopes.wrap(ctx, key.id, DEK, bad)  # type: ignore[arg-type]
        assert_invalid_field(exc_info, "aad")


# --- rotation -------------------------------------------------------------------------------------


def test_unwrap_after_rotation_returns_the_plaintext_and_a_ciphertext_under_the_latest_version(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = root_key(services, ctx)
    old = services.envelopes.wrap(ctx, key.id, DEK, AAD)
    rotated = services.keys.rotate(ctx, key.id)
    latest = rotated.current_version_id
    assert latest != key.id

    result = services.envelopes.unwrap(ctx, key.id, old.ciphertext, AAD)
    assert result.plaintext == DEK
    assert result.key_version_id == key.id
    assert result.rewrapped_key_version_id == latest
    assert result.rewrapped_ciphertext is not None
    assert Envelope.parse(result.rewrapped_ciphertext).key_version_id == latest

    again = services.envelopes.unwrap(ctx, key.id, result.rewrapped_ciphertext, AAD)
    assert again.plaintext == DEK
    assert again.key_version_id == latest
    assert again.rewrapped_ciphertext is None
    assert again.rewrapped_key_version_id is None
    # the rewrapped ciphertext is bound to the same AAD as the original
    with pytest.raises(IntegrityError):
        services.envelopes.unwrap(ctx, key.id, result.rewrapped_ciphertext)


def test_wrap_after_rotation_uses_the_latest_version(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    latest = services.keys.rotate(ctx, key.id).current_version_id
    wrapped = services.envelopes.wrap(ctx, key.id, DEK)
    assert wrapped.key_version_id == latest
    assert Envelope.parse(wrapped.ciphertext).key_version_id == latest


def test_every_retained_version_still_unwraps_after_several_rotations(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = root_key(services, ctx)
    ciphertexts = []
    for i in range(3):
        ciphertexts.append(services.envelopes.wrap(ctx, key.id, bytes([i]) * 32).ciphertext)
        services.keys.rotate(ctx, key.id)
        clock.advance(hours=1)
    latest = services.keys.get(ctx, key.id).current_version_id
    for i, ciphertext in enumerate(ciphertexts):
        result = services.envelopes.unwrap(ctx, key.id, ciphertext)
        assert result.plaintext == bytes([i]) * 32
        assert result.rewrapped_key_version_id == latest


def test_rewrap_returns_the_original_and_the_latest_version(services: Services, ctx: CallContext) -> None:
    key = root_key(services, ctx)
    old = services.envelopes.wrap(ctx, key.id, DEK, AAD)
    latest = services.keys.rotate(ctx, key.id).current_version_id

    rewrapped = services.envelopes.rewrap(ctx, key.id, old.ciphertext, AAD)
    assert rewrapped.key_version_id == key.id
    assert rewrapped.rewrapped_key_version_id == latest
    assert Envelope.parse(rewrapped.ciphertext).key_version_id == latest
    result = services.envelopes.unwrap(ctx, key.id, rewrapped.ciphertext, AAD)
    assert result.plaintext == DEK
    assert result.rewrapped_ciphertext is None


def test_rewrap_of_a_current_ciphertext_gives_a_fresh_ciphertext_under_the_same_version(
    services: Services, ctx: CallContext
) -> None:
    key = root_key(services, ctx)
    wrapped = services.envelopes.wrap(ctx, key.id, DEK)
    rewrapped = services.envelopes.rewrap(ctx, key.id, wrapped.ciphertext)
    assert rewrapped.key_version_id == rewrapped.rewrapped_key_version_id == key.id
    assert rewrapped.ciphertext != wrapped.ciphertext
    assert services.envelopes.unwrap(ctx, key.id, rewrapped.ciphertext).plaintext == DEK


def test_unwrap_of_an_imported_key_after_rotation_with_new_material(
    services: Services, ctx: CallContext
) -> None:
    key = root_key(services, ctx, payload=os.urandom(16))
    old = services.envelopes.wrap(ctx, key.id, DEK)
    services.keys.rotate(ctx, key.id, payload=os.urandom(32))
    result = services.envelopes.unwrap(ctx, key.id, old.ciphertext)
    assert result.plaintext == DEK
    assert result.rewrapped_ciphertext is not None
    assert services.envelopes.unwrap(ctx, key.id, result.rewrapped_ciphertext).plaintext == DEK


# --- key state --------------------------------------------------------------------------------------


def test_a_disabled_key_can_neither_wrap_nor_unwrap(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK).ciphertext
    services.keys.disable(ctx, key.id)
    for attempt in (
        lambda: services.envelopes.wrap(ctx, key.id, DEK),
        lambda: services.envelopes.unwrap(ctx, key.id, ciphertext),
        lambda: services.envelopes.rewrap(ctx, key.id, ciphertext),
    ):
        with pytest.raises(Conflict) as exc_info:
            attempt()
        assert exc_info.value.reason is Reason.INVALID_STATE

    clock.advance(seconds=30)
    services.keys.enable(ctx, key.id)
    assert services.envelopes.unwrap(ctx, key.id, ciphertext).plaintext == DEK


def test_a_deleted_key_is_gone_for_wrap_unwrap_and_rewrap(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK).ciphertext
    services.keys.delete(ctx, key.id)
    for attempt in (
        lambda: services.envelopes.wrap(ctx, key.id, DEK),
        lambda: services.envelopes.unwrap(ctx, key.id, ciphertext),
        lambda: services.envelopes.rewrap(ctx, key.id, ciphertext),
    ):
        with pytest.raises(Gone) as exc_info:
            attempt()
        assert exc_info.value.reason is Reason.KEY_DELETED

    # deletion evicted the HSM handles; restore brings the key back and it reloads on demand
    clock.advance(seconds=30)
    services.keys.restore(ctx, key.id)
    assert services.envelopes.unwrap(ctx, key.id, ciphertext).plaintext == DEK


def test_a_purged_keys_ciphertexts_are_not_found(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK).ciphertext
    services.keys.delete(ctx, key.id)
    clock.advance(hours=4)
    services.keys.purge(ctx, key.id)
    with pytest.raises(NotFound):
        services.envelopes.unwrap(ctx, key.id, ciphertext)


def test_a_standard_key_cannot_be_used_for_envelopes(services: Services, ctx: CallContext) -> None:
    standard = root_key(services, ctx, "standard", extractable=True)
    root = root_key(services, ctx)
    ciphertext = services.envelopes.wrap(ctx, root.id, DEK).ciphertext
    for attempt in (
        lambda: services.envelopes.wrap(ctx, standard.id, DEK),
        lambda: services.envelopes.wrap(ctx, standard.id, None),
        lambda: services.envelopes.unwrap(ctx, standard.id, ciphertext),
        lambda: services.envelopes.rewrap(ctx, standard.id, ciphertext),
    ):
        with pytest.raises(InvalidInput) as exc_info:
            attempt()
        assert type(exc_info.value) is InvalidInput
        assert exc_info.value.reason is Reason.KEY_ROOT_REQUIRED


def test_an_expired_key_cannot_wrap_but_can_still_unwrap_and_rewrap(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    expiry = clock.now() + timedelta(days=1)
    key = root_key(services, ctx, expires_at=expiry)
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK).ciphertext

    clock.advance(days=1)  # expires_at <= now: expired
    with pytest.raises(Conflict) as exc_info:
        services.envelopes.wrap(ctx, key.id, DEK)
    assert exc_info.value.reason is Reason.INVALID_STATE
    assert services.envelopes.unwrap(ctx, key.id, ciphertext).plaintext == DEK
    assert services.envelopes.rewrap(ctx, key.id, ciphertext).key_version_id == key.id
    assert services.keys.get(ctx, key.id).state is KeyState.DEACTIVATED


def test_an_expired_key_cannot_wrap_even_after_rotation(
    services: Services, ctx: CallContext, clock: FixedClock
) -> None:
    key = root_key(services, ctx, expires_at=clock.now() + timedelta(hours=1))
    ciphertext = services.envelopes.wrap(ctx, key.id, DEK).ciphertext
    clock.advance(hours=2)
    latest = services.keys.rotate(ctx, key.id).current_version_id
    with pytest.raises(Conflict):
        services.envelopes.wrap(ctx, key.id, DEK)
    result = services.envelopes.unwrap(ctx, key.id, ciphertext)
    assert result.plaintext == DEK
    assert result.rewrapped_key_version_id == latest
