"""Audit events for work the daemon starts itself (no caller, no transport): automatic rotation.

The core reports what it did through a small protocol (`RotationAudit`); this adapter turns it
into the same `AuditEvent` a rotate call produces — Key Protect's ``kms.secrets.rotate`` — with
the scheduler's system principal, the key's instance, key id and new version, and no transport,
client or authentication method (there was no request). Going through the process's `AuditLog`
keeps its failure semantics: with ``fail_closed`` a known-broken log stops rotations before they
start (`ensure_available`).
"""

from __future__ import annotations

from hsmbridge.core.principal import SYSTEM_PRINCIPAL
from hsmbridge.core.rotation_scheduler import RotationEvent
from hsmbridge.security.audit import AuditLog, Outcome

ROTATE_EVENT = "kms.secrets.rotate"


class RotationAuditLog:
    """A `RotationAudit` over the process's audit log."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit

    def ensure_available(self) -> None:
        self._audit.ensure_available()

    def rotated(self, event: RotationEvent) -> None:
        self._audit.record(
            event=ROTATE_EVENT,
            outcome=Outcome.SUCCESS if event.succeeded else Outcome.FAILURE,
            principal=SYSTEM_PRINCIPAL.id,
            instance=event.tenant,
            key_id=event.key_id,
            key_version=event.version_id,
            reason=event.reason,
        )
