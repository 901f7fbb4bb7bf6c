"""The §2 key representation, §4.3 derived deletion fields, E12 versions and E27/E28 tokens."""

from __future__ import annotations

import base64
import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hsmbridge.core.model import (
    DualAuthDelete,
    ImportToken,
    Key,
    KeyState,
    KeyVersion,
    RotationPolicy,
    WrappedKey,
)
from hsmbridge.rest.representation import (
    RenderContext,
    format_timestamp,
    public_key_pem,
    render_import_token,
    render_key,
    render_minimal_key,
    render_version,
)

KEY_ID = "fadedbee-0000-0000-0000-1234567890ab"
NEW_VERSION = "addedace-0000-0000-0000-1234567890ab"
INSTANCE = "a192d603-0b8d-452f-aac3-f9e1f95e7411"
ACCOUNT = "ea998d3389c3473aa0987652b46fb146"
CTX = RenderContext(region="us-south", account=ACCOUNT)
CREATED = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
NOW = datetime(2024, 3, 2, 9, 30, 15, tzinfo=UTC)


def root_key(**changes: object) -> Key:
    key = Key(
        id=KEY_ID,
        tenant=INSTANCE,
        name="Root-key",
        extractable=False,
        imported=False,
        state=KeyState.ACTIVE,
        created_at=CREATED,
        created_by="IBMid-0000000000",
        updated_at=CREATED,
        current_version_id=KEY_ID,
        description="A Key Protect key",
        aliases=["alias-for-this-key"],
    )
    return dataclasses.replace(key, **changes)


def deleted_key(deleted_at: datetime, **changes: object) -> Key:
    return root_key(
        state=KeyState.DESTROYED,
        deleted_at=deleted_at,
        deleted_by="IBMid-1111111111",
        state_before_delete=KeyState.ACTIVE,
        updated_at=deleted_at,
        **changes,
    )


def test_the_seed_root_key_example() -> None:
    """§2's create example, with real dates in place of the placeholders."""
    key = root_key(
        dual_auth=DualAuthDelete(
            enabled=True, set_by="IBMid-2222222222", expires_at=datetime(2024, 3, 8, 12, 0, tzinfo=UTC)
        )
    )
    assert render_key(key, ctx=CTX, now=NOW, version_created_at=CREATED) == {
        "type": "application/vnd.ibm.kms.key+json",
        "id": KEY_ID,
        "name": "Root-key",
        "aliases": ["alias-for-this-key"],
        "description": "A Key Protect key",
        "state": 1,
        "extractable": False,
        "keyRingID": "default",
        "crn": f"crn:v1:bluemix:public:kms:us-south:a/{ACCOUNT}:{INSTANCE}:key:{KEY_ID}",
        "imported": False,
        "creationDate": "2024-03-01T12:00:00Z",
        "createdBy": "IBMid-0000000000",
        "algorithmType": "Deprecated",
        "algorithmMetadata": {"bitLength": 256, "mode": "Deprecated"},
        "algorithmBitSize": 256,
        "algorithmMode": "Deprecated",
        "lastUpdateDate": "2024-03-01T12:00:00Z",
        "keyVersion": {"id": KEY_ID, "creationDate": "2024-03-01T12:00:00Z"},
        "dualAuthDelete": {
            "enabled": True,
            "keySetForDeletion": True,
            "authExpiration": "2024-03-08T12:00:00Z",
        },
        "deleted": False,
    }


def test_crn_matches_the_shape_of_real_key_protect_crns() -> None:
    # From IBM's docs: crn:v1:bluemix:public:kms:us-south:a/<account>:<instance>:key:<id>
    rendered = render_key(root_key(id="88d649f8-41b8-4426-b52b-45c88953d5b8"), ctx=CTX, now=NOW)
    assert rendered["crn"] == (
        "crn:v1:bluemix:public:kms:us-south:a/ea998d3389c3473aa0987652b46fb146:"
        "a192d603-0b8d-452f-aac3-f9e1f95e7411:key:88d649f8-41b8-4426-b52b-45c88953d5b8"
    )
    prefixed = RenderContext(region="us-south", account=f"a/{ACCOUNT}")
    assert (
        render_key(root_key(), ctx=prefixed, now=NOW)["crn"]
        == render_key(root_key(), ctx=CTX, now=NOW)["crn"]
    )


def test_optional_fields_are_absent_until_they_exist() -> None:
    rendered = render_key(root_key(description=None, aliases=[]), ctx=CTX, now=NOW)
    assert "description" not in rendered
    assert rendered["aliases"] == []
    for absent in (
        "lastRotateDate",
        "expirationDate",
        "rotation",
        "payload",
        "deletionDate",
        "deletedBy",
        "restoreAllowed",
        "restoreExpirationDate",
        "purgeAllowed",
        "purgeAllowedFrom",
        "purgeScheduledOn",
    ):
        assert absent not in rendered
    assert rendered["dualAuthDelete"] == {"enabled": False, "keySetForDeletion": False}


def test_standard_key_with_payload() -> None:
    key = root_key(extractable=True, imported=True, bit_length=128, key_ring="example-key-ring")
    material = base64.b64decode("x089YbmN9GSvpxEKe0LaqA==")
    rendered = render_key(key, ctx=CTX, now=NOW, include_payload=material)
    assert rendered["payload"] == "x089YbmN9GSvpxEKe0LaqA=="
    assert (rendered["extractable"], rendered["imported"], rendered["keyRingID"]) == (
        True,
        True,
        "example-key-ring",
    )
    assert rendered["algorithmBitSize"] == 128
    assert rendered["algorithmMetadata"] == {"bitLength": 128, "mode": "Deprecated"}


def test_payload_is_never_added_by_the_renderer_itself() -> None:
    assert "payload" not in render_key(root_key(extractable=True), ctx=CTX, now=NOW)


def test_rotated_key() -> None:
    rotated = datetime(2024, 3, 2, 8, 0, 0, 250000, tzinfo=UTC)
    key = root_key(current_version_id=NEW_VERSION, last_rotated_at=rotated, updated_at=rotated)
    rendered = render_key(key, ctx=CTX, now=NOW, version_created_at=rotated)
    assert rendered["lastRotateDate"] == "2024-03-02T08:00:00Z"
    assert rendered["keyVersion"] == {"id": NEW_VERSION, "creationDate": "2024-03-02T08:00:00Z"}
    # Without the version's date the last rotation is the same instant.
    assert render_key(key, ctx=CTX, now=NOW)["keyVersion"] == rendered["keyVersion"]


def test_expiration_and_rotation_policy() -> None:
    key = root_key(
        expires_at=datetime(2025, 1, 1, tzinfo=UTC), rotation=RotationPolicy(enabled=True, interval_month=3)
    )
    rendered = render_key(key, ctx=CTX, now=NOW)
    assert rendered["expirationDate"] == "2025-01-01T00:00:00Z"
    assert rendered["rotation"] == {"enabled": True, "interval_month": 3}
    assert render_key(root_key(rotation=RotationPolicy()), ctx=CTX, now=NOW)["rotation"] == {"enabled": False}


def test_an_expired_dual_auth_authorization_no_longer_counts() -> None:
    dual = DualAuthDelete(enabled=True, set_by="IBMid-2222222222", expires_at=NOW - timedelta(seconds=1))
    assert render_key(root_key(dual_auth=dual), ctx=CTX, now=NOW)["dualAuthDelete"] == {
        "enabled": True,
        "keySetForDeletion": False,
    }


def test_state_numbers() -> None:
    for state in KeyState:
        if state is not KeyState.DESTROYED:
            assert render_key(root_key(state=state), ctx=CTX, now=NOW)["state"] == int(state)


# --- deleted keys: §4.3 timing -------------------------------------------------------------------

DELETED_AT = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


def deletion_fields(key: Key, now: datetime, **kwargs: object) -> dict[str, object]:
    rendered = render_key(key, ctx=CTX, now=now, **kwargs)  # type: ignore[arg-type]
    assert rendered["state"] == 5
    assert rendered["deleted"] is True
    assert "creationDate" not in rendered["keyVersion"]
    return {name: value for name, value in rendered.items() if name.startswith(("delet", "restore", "purge"))}


def test_delete_response_right_after_deletion() -> None:
    assert deletion_fields(deleted_key(DELETED_AT), DELETED_AT) == {
        "deleted": True,
        "deletionDate": "2024-03-01T12:00:00Z",
        "deletedBy": "IBMid-1111111111",
        "restoreAllowed": False,  # restore is 409 REQ_TOO_EARLY_ERR for 30 s
        "restoreExpirationDate": "2024-03-31T12:00:00Z",
        "purgeAllowed": False,
        "purgeAllowedFrom": "2024-03-01T16:00:00Z",
        "purgeScheduledOn": "2024-05-30T12:00:00Z",
    }


@pytest.mark.parametrize(
    ("elapsed", "restore_allowed", "purge_allowed"),
    [
        (timedelta(seconds=29), False, False),
        (timedelta(seconds=30), True, False),
        (timedelta(hours=4) - timedelta(seconds=1), True, False),
        (timedelta(hours=4), True, True),
        (timedelta(days=30) - timedelta(seconds=1), True, True),
    ],
)
def test_restore_and_purge_windows(elapsed: timedelta, restore_allowed: bool, purge_allowed: bool) -> None:
    fields = deletion_fields(deleted_key(DELETED_AT), DELETED_AT + elapsed)
    assert fields["restoreAllowed"] is restore_allowed
    assert fields["purgeAllowed"] is purge_allowed


@pytest.mark.parametrize("elapsed", [timedelta(days=30), timedelta(days=89), timedelta(days=91)])
def test_after_thirty_days_the_restore_fields_are_gone(elapsed: timedelta) -> None:
    fields = deletion_fields(deleted_key(DELETED_AT), DELETED_AT + elapsed)
    assert "restoreAllowed" not in fields
    assert "restoreExpirationDate" not in fields
    assert fields["purgeAllowed"] is True
    assert fields["purgeScheduledOn"] == "2024-05-30T12:00:00Z"


def test_restore_ends_at_the_expiration_date_when_that_comes_first() -> None:
    expires = DELETED_AT + timedelta(days=10)
    key = deleted_key(DELETED_AT, expires_at=expires)
    fields = deletion_fields(key, DELETED_AT + timedelta(days=1))
    assert fields["restoreExpirationDate"] == "2024-03-11T12:00:00Z"
    assert "restoreAllowed" not in deletion_fields(key, expires)


def test_an_already_expired_key_is_never_restorable() -> None:
    key = deleted_key(DELETED_AT, expires_at=DELETED_AT - timedelta(days=1))
    assert "restoreAllowed" not in deletion_fields(key, DELETED_AT + timedelta(minutes=1))


def test_purge_response_has_no_restore_fields() -> None:
    fields = deletion_fields(deleted_key(DELETED_AT), DELETED_AT + timedelta(hours=5), purged=True)
    assert fields == {
        "deleted": True,
        "deletionDate": "2024-03-01T12:00:00Z",
        "deletedBy": "IBMid-1111111111",
        "purgeAllowed": True,
        "purgeAllowedFrom": "2024-03-01T16:00:00Z",
        "purgeScheduledOn": "2024-05-30T12:00:00Z",
    }


def test_destroyed_without_a_deletion_date_invents_no_dates() -> None:
    rendered = render_key(root_key(state=KeyState.DESTROYED), ctx=CTX, now=NOW)
    assert rendered["deleted"] is True
    assert "deletionDate" not in rendered
    assert "purgeAllowedFrom" not in rendered


# --- timestamps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2024, 3, 1, 12, 0, 0, 999999, tzinfo=UTC), "2024-03-01T12:00:00Z"),
        (datetime(2024, 3, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2))), "2024-03-01T12:00:00Z"),
        (datetime(2024, 3, 1, 12, 0, 0), "2024-03-01T12:00:00Z"),  # naive means UTC, not local
        (datetime(999, 1, 2, 3, 4, 5, tzinfo=UTC), "0999-01-02T03:04:05Z"),
    ],
)
def test_timestamps_are_whole_seconds_utc(value: datetime, text: str) -> None:
    assert format_timestamp(value) == text


def test_timestamps_in_a_rendered_key_are_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    key = root_key(created_at=datetime(2024, 3, 1, 14, 0, tzinfo=plus_two))
    assert render_key(key, ctx=CTX, now=NOW)["creationDate"] == "2024-03-01T12:00:00Z"


# --- minimal, versions, import tokens -----------------------------------------------------------


def test_minimal_representation_is_the_id() -> None:
    assert render_minimal_key(root_key()) == {"id": KEY_ID}


def test_render_version() -> None:
    version = KeyVersion(
        id=NEW_VERSION,
        key_id=KEY_ID,
        tenant=INSTANCE,
        number=2,
        created_at=datetime(2024, 3, 2, 8, 0, 0, 5, tzinfo=UTC),
        wrapped=WrappedKey(blob=b"\x00" * 40, length=32, kek_label="kek"),
    )
    assert render_version(version) == {"id": NEW_VERSION, "creationDate": "2024-03-02T08:00:00Z"}


@pytest.fixture(scope="module")
def public_key_der() -> bytes:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def import_token(public_key_der: bytes, **changes: object) -> ImportToken:
    token = ImportToken(
        id="token-1",
        tenant=INSTANCE,
        created_at=datetime(2020, 8, 18, 19, 54, 57, tzinfo=UTC),
        expires_at=datetime(2020, 8, 18, 19, 59, 57, tzinfo=UTC),
        max_retrievals=10,
        remaining_retrievals=9,
        nonce=base64.b64decode("8zJE9pKVdXVe/nLb"),
        key_bits=4096,
        public_key_der=public_key_der,
        hsm_object_id="obj-1",
    )
    return dataclasses.replace(token, **changes)


def test_import_token_metadata_like_e27(public_key_der: bytes) -> None:
    token = import_token(public_key_der, max_retrievals=2, remaining_retrievals=2)
    assert render_import_token(token, with_secret=False) == {
        "creationDate": "2020-08-18T19:54:57Z",
        "expirationDate": "2020-08-18T19:59:57Z",
        "maxAllowedRetrievals": 2,
        "remainingRetrievals": 2,
    }


def test_import_token_retrieval_like_e28(public_key_der: bytes) -> None:
    rendered = render_import_token(import_token(public_key_der), with_secret=True)
    assert rendered["nonce"] == "8zJE9pKVdXVe/nLb"
    assert (rendered["maxAllowedRetrievals"], rendered["remainingRetrievals"]) == (10, 9)
    # What the Go SDK and the tutorial do: base64 → PEM → PKIX public key.
    pem = base64.b64decode(rendered["payload"], validate=True)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert pem.endswith(b"\n-----END PUBLIC KEY-----\n")
    loaded = serialization.load_pem_public_key(pem)
    assert (
        loaded.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        == public_key_der
    )
    assert rendered["payload"].startswith("LS0tLS1CRUdJTiBQVUJMSUMgS0VZLS0t")  # as in IBM's CLI example


def test_pem_lines_are_64_columns(public_key_der: bytes) -> None:
    lines = public_key_pem(public_key_der).splitlines()
    body = lines[1:-1]
    assert all(len(line) == 64 for line in body[:-1])
    assert 0 < len(body[-1]) <= 64
