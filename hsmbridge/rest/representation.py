"""Domain objects as Key Protect renders them (§2 key, E12 version, E27/E28 import token).

Pure functions of the model plus an explicit `now`: the derived deletion fields
(``purgeAllowed``, ``restoreAllowed``, ...) depend on the clock, and tests must pin it.

Rules worth knowing (all from §2 and §4.3 of the spec):
- timestamps are ``YYYY-MM-DDTHH:MM:SSZ`` in UTC, whole seconds;
- ``payload`` appears only when the caller passes `include_payload` (GET of a standard key, create
  with ``return=representation``); the renderer cannot tell whether that is allowed, so it never
  adds one on its own;
- ``keyVersion.creationDate`` is omitted for deleted keys;
- deleted keys gain ``deletionDate``/``deletedBy`` and the purge fields; the restore fields appear
  only while a restore is still possible (``now`` before ``restoreExpirationDate``) and never in a
  purge response (`purged=True`);
- the deprecated algorithm fields are constants or derived from ``bit_length``, kept only so that
  clients which read them do not break.
"""

from __future__ import annotations

import base64
import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hsmbridge.core.model import ImportToken, Key, KeyState, KeyVersion

KEY_TYPE = "application/vnd.ibm.kms.key+json"
DEPRECATED = "Deprecated"

#: §4.3 timing, relative to the deletion date.
PURGE_ALLOWED_AFTER = timedelta(hours=4)
RESTORE_WINDOW = timedelta(days=30)
RESTORE_NOT_BEFORE = timedelta(seconds=30)
PURGE_SCHEDULED_AFTER = timedelta(days=90)


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Deployment facts a CRN needs. `account` is the bare account ID; the ``a/`` is added here."""

    region: str
    account: str

    def crn(self, instance: str, resource_type: str, resource_id: str) -> str:
        account = self.account if self.account.startswith("a/") else f"a/{self.account}"
        return f"crn:v1:bluemix:public:kms:{self.region}:{account}:{instance}:{resource_type}:{resource_id}"


def format_timestamp(value: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` in UTC. A naive datetime is taken as UTC (the model's convention),
    never as local time."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    v = value.astimezone(UTC)
    # Not strftime: glibc's %Y does not zero-pad years before 1000, and RFC 3339 needs 4 digits.
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


def restore_expiration(key: Key) -> datetime | None:
    """``min(deletionDate + 30 d, expirationDate)``: restore ends with the window or the key's life."""
    if key.deleted_at is None:
        return None
    until = key.deleted_at + RESTORE_WINDOW
    if key.expires_at is not None and key.expires_at < until:
        until = key.expires_at
    return until


def is_deleted(key: Key) -> bool:
    return key.deleted_at is not None or key.state == KeyState.DESTROYED


def render_key(
    key: Key,
    *,
    ctx: RenderContext,
    now: datetime,
    version_created_at: datetime | None = None,
    include_payload: bytes | None = None,
    purged: bool = False,
) -> dict[str, Any]:
    """The §2 key representation.

    `version_created_at` is the creation date of ``key.current_version_id``; when the caller does
    not have it, the key's last rotation (or creation, for the first version) is the same instant
    by construction. `purged` renders a purge response: no restore fields.
    """
    deleted = is_deleted(key)
    out: dict[str, Any] = {
        "type": KEY_TYPE,
        "id": key.id,
        "name": key.name,
        "aliases": list(key.aliases),
    }
    if key.description:
        out["description"] = key.description
    out.update(
        {
            "state": int(key.state),
            "extractable": key.extractable,
            "keyRingID": key.key_ring,
            "crn": ctx.crn(key.tenant, "key", key.id),
            "imported": key.imported,
            "creationDate": format_timestamp(key.created_at),
            "createdBy": key.created_by,
            "algorithmType": DEPRECATED,
            "algorithmMetadata": {"bitLength": key.bit_length, "mode": DEPRECATED},
            "algorithmBitSize": key.bit_length,
            "algorithmMode": DEPRECATED,
            "lastUpdateDate": format_timestamp(key.updated_at),
        }
    )
    if key.last_rotated_at is not None:
        out["lastRotateDate"] = format_timestamp(key.last_rotated_at)
    if key.expires_at is not None:
        out["expirationDate"] = format_timestamp(key.expires_at)

    version: dict[str, Any] = {"id": key.current_version_id}
    if not deleted:
        created = version_created_at or key.last_rotated_at or key.created_at
        version["creationDate"] = format_timestamp(created)
    out["keyVersion"] = version
    out["dualAuthDelete"] = _render_dual_auth(key, now)
    if key.rotation is not None:
        rotation: dict[str, Any] = {"enabled": key.rotation.enabled}
        if key.rotation.interval_month is not None:
            rotation["interval_month"] = key.rotation.interval_month
        out["rotation"] = rotation
    out["deleted"] = deleted
    if deleted:
        out.update(_render_deletion(key, now, purged=purged))
    if include_payload is not None:
        out["payload"] = base64.b64encode(include_payload).decode("ascii")
    return out


def _render_dual_auth(key: Key, now: datetime) -> dict[str, Any]:
    """An authorization counts only until it expires; after that the key is no longer "set"."""
    dual = key.dual_auth
    pending = dual.enabled and dual.set_by is not None and (dual.expires_at is None or now < dual.expires_at)
    out: dict[str, Any] = {"enabled": dual.enabled, "keySetForDeletion": pending}
    if pending and dual.expires_at is not None:
        out["authExpiration"] = format_timestamp(dual.expires_at)
    return out


def _render_deletion(key: Key, now: datetime, *, purged: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if key.deleted_at is None:  # state 5 without a date: say "deleted", invent nothing
        return out
    deleted_at = key.deleted_at
    out["deletionDate"] = format_timestamp(deleted_at)
    if key.deleted_by is not None:
        out["deletedBy"] = key.deleted_by
    restore_until = restore_expiration(key)
    if not purged and restore_until is not None and now < restore_until:
        out["restoreAllowed"] = now >= deleted_at + RESTORE_NOT_BEFORE
        out["restoreExpirationDate"] = format_timestamp(restore_until)
    purge_from = deleted_at + PURGE_ALLOWED_AFTER
    out["purgeAllowed"] = now >= purge_from
    out["purgeAllowedFrom"] = format_timestamp(purge_from)
    out["purgeScheduledOn"] = format_timestamp(deleted_at + PURGE_SCHEDULED_AFTER)
    return out


def render_minimal_key(key: Key) -> dict[str, Any]:
    """``prefer: return=minimal`` on create (§8.1): only the identifier."""
    return {"id": key.id}


def render_version(version: KeyVersion, check_value: str | None = None) -> dict[str, Any]:
    """One E12 entry: ``{"id", "creationDate"}``, plus hsmbridge's ``keyCheckValue`` for root
    keys (an extra field the official SDKs ignore)."""
    out = {"id": version.id, "creationDate": format_timestamp(version.created_at)}
    if check_value is not None:
        out["keyCheckValue"] = check_value
    return out


def public_key_pem(public_key_der: bytes) -> str:
    """SubjectPublicKeyInfo DER as a PEM document (64-column base64, trailing newline)."""
    body = "\n".join(textwrap.wrap(base64.b64encode(public_key_der).decode("ascii"), 64))
    return f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n"


def render_import_token(token: ImportToken, *, with_secret: bool) -> dict[str, Any]:
    """E27 (metadata only) and E28 (`with_secret`: plus ``payload`` and ``nonce``).

    ``payload`` is base64 of the PEM, not of the DER: the Go SDK does base64 → ``pem.Decode`` and
    the tutorial pipes it through ``base64 --decode > PublicKey.pem``. The nonce is not secret in
    the cryptographic sense, but it is what proves possession of this token, so it is only shown
    on retrieval, like the public key.
    """
    out: dict[str, Any] = {
        "creationDate": format_timestamp(token.created_at),
        "expirationDate": format_timestamp(token.expires_at),
        "maxAllowedRetrievals": token.max_retrievals,
        "remainingRetrievals": token.remaining_retrievals,
    }
    if with_secret:
        out["payload"] = base64.b64encode(public_key_pem(token.public_key_der).encode("ascii")).decode(
            "ascii"
        )
        out["nonce"] = base64.b64encode(token.nonce).decode("ascii")
    return out
