"""Registrations (E29–E35): which cloud resources a key protects — modelled, transport-free.

There is no IBM service-to-service plumbing here, so a registration is stored data with Key
Protect's validation, and exactly one effect on the core: it guards key deletion (§4.3).
`RegistrationService.guard` is the `KeyService` deletion guard:
- any active registration with ``preventKeyDeletion`` blocks DELETE even with ``force``
  (409 ``PREV_KEY_DEL_ERR``: a retention policy cannot be overridden by the key owner);
- otherwise any active registration blocks DELETE without ``force`` (409 ``PROTECTED_RESOURCE_ERR``);
- ``force`` "removes any registrations": they leave every list and stop blocking, but are kept as
  *suspended* — Key Protect moves a deleted key's registrations to Suspended, and the deprecated
  E33 ``deactivate`` moves a suspended registration on to Deactivated (409
  ``REG_INVALID_STATE_ERR`` from any other state). The guard runs before the key's own write; if
  that write then fails for good, the registrations stay suspended (the caller sees the error
  and may retry the delete, which now finds nothing blocking).

CRNs (``crn:v1:<cname>:<ctype>:<service>:<location>:<scope>:<instance>:<type>:<resource>``): a
registered CRN has at most 10 segments, reaches at least the service instance (8th segment,
non-empty) and has no ``*``. A *query* CRN (``urlEncodedResourceCRNQuery``) has the same bounds,
may stop after any segment from the instance on (a prefix of the resource's segments), and may
use ``*`` only after the instance segment, where it matches any run of characters within one
segment (``bucket:my-*``).

Identity: registrations are keyed by (tenant, key, CRN). Creating an identical one again is not
an error (200 with the existing one); creating one with different properties is 409
``REGISTRATION_DUP_ERR``. Only root keys in the Active state take new registrations (422).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

from hsmbridge.core.clock import Clock
from hsmbridge.core.keys import KeyService
from hsmbridge.core.model import Key, KeyState
from hsmbridge.core.principal import CallContext
from hsmbridge.core.store.base import Registration, RegistrationQuery, RegistrationState, Store
from hsmbridge.errors import AlreadyExists, Conflict, InvalidInput, NotFound, Reason

MAX_CRN_SEGMENTS = 10
#: 0-based index of the service-instance segment; a CRN must reach it.
INSTANCE_SEGMENT = 7
MAX_CRN_LENGTH = 1024
MAX_DESCRIPTION = 1024
MAX_REGISTRATION_METADATA = 4096
PATH_PARAM = "urlEncodedResourceCRN"
QUERY_PARAM = "urlEncodedResourceCRNQuery"

_PRINTABLE_NO_SPACE = re.compile(r"[\x21-\x7e]+", re.ASCII)


def _crn_error(param: str, expectation: str) -> InvalidInput:
    return InvalidInput(
        f"The param '{param}' must be: {expectation}", reason=Reason.INVALID_FIELD, target=param
    )


def _segments(crn: Any, param: str) -> list[str]:
    if not isinstance(crn, str) or len(crn) > MAX_CRN_LENGTH or not _PRINTABLE_NO_SPACE.fullmatch(crn):
        raise _crn_error(param, "a CRN of printable characters without spaces")
    segments = crn.split(":")
    if len(segments) > MAX_CRN_SEGMENTS:
        raise _crn_error(param, f"specified to no more than {MAX_CRN_SEGMENTS} segments")
    if segments[0] != "crn" or len(segments) <= INSTANCE_SEGMENT or not segments[INSTANCE_SEGMENT]:
        raise _crn_error(param, "specified to at least the service instance.")
    return segments


def validate_resource_crn(crn: Any, *, param: str = PATH_PARAM) -> str:
    """A CRN to register: 8–10 segments reaching the service instance, no wildcard."""
    segments = _segments(crn, param)
    if any("*" in segment for segment in segments):
        raise _crn_error(param, "a CRN without wildcards")
    return str(crn)


@dataclass(frozen=True, slots=True)
class CrnPattern:
    """A parsed ``urlEncodedResourceCRNQuery``: matches a CRN segment by segment."""

    segments: tuple[str, ...]

    @classmethod
    def parse(cls, query: Any, *, param: str = QUERY_PARAM) -> CrnPattern:
        segments = _segments(query, param)
        if any("*" in segment for segment in segments[: INSTANCE_SEGMENT + 1]):
            raise _crn_error(param, "free of '*' in the first eight segments")
        return cls(tuple(segments))

    @property
    def literal_prefix(self) -> str:
        """The longest CRN prefix every match starts with (for the store to narrow by)."""
        out: list[str] = []
        for segment in self.segments:
            if "*" in segment:
                out.append(segment.split("*", 1)[0])
                return ":".join(out)
            out.append(segment)
        return ":".join(out)

    def matches(self, crn: str) -> bool:
        segments = crn.split(":")
        if len(segments) < len(self.segments):
            return False
        for want, have in zip(self.segments, segments, strict=False):
            if "*" in want:
                regex = ".*".join(re.escape(part) for part in want.split("*"))
                if not re.fullmatch(regex, have, re.DOTALL):
                    return False
            elif want != have:
                return False
        return True


def _validate_text(value: str | None, field: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise InvalidInput(
            f"The field '{field}' must be: a string of at most {limit} printable characters",
            reason=Reason.INVALID_FIELD,
            target=field,
        )
    return value


@dataclass(frozen=True, slots=True)
class RegistrationPatch:
    """E30 merge: None means "leave as it is"."""

    prevent_key_deletion: bool | None = None
    description: str | None = None
    registration_metadata: str | None = None


def _not_found() -> NotFound:
    return NotFound("Registration does not exist", reason=Reason.REGISTRATION_NOT_FOUND)


def _key_version_invalid(detail: str) -> InvalidInput:
    return InvalidInput(detail, reason=Reason.KEY_VERSION_INVALID, target="keyVersionId")


class RegistrationService:
    def __init__(self, store: Store, keys: KeyService, clock: Clock) -> None:
        self._store = store
        self._keys = keys
        self._clock = clock

    # -- reads -----------------------------------------------------------------------------------

    def list_for_key(
        self,
        ctx: CallContext,
        key: Key,
        *,
        pattern: CrnPattern | None = None,
        prevent_key_deletion: bool | None = None,
    ) -> list[Registration]:
        """E34: the key's active registrations, oldest first. `key` is already resolved (the
        caller owns ring checks), so a key of another tenant can never reach the store."""
        if key.tenant != ctx.tenant:  # pragma: no cover - defence in depth
            raise NotFound("Key does not exist", reason=Reason.KEY_NOT_FOUND)
        return self._list(ctx, RegistrationQuery(key_id=key.id), pattern, prevent_key_deletion)

    def list_all(
        self,
        ctx: CallContext,
        *,
        pattern: CrnPattern | None = None,
        prevent_key_deletion: bool | None = None,
        key_ring: str | None = None,
    ) -> list[Registration]:
        """E35: active registrations of every key in the tenant (or in one key ring)."""
        return self._list(ctx, RegistrationQuery(key_ring=key_ring), pattern, prevent_key_deletion)

    def _list(
        self,
        ctx: CallContext,
        query: RegistrationQuery,
        pattern: CrnPattern | None,
        prevent_key_deletion: bool | None,
    ) -> list[Registration]:
        query = replace(
            query,
            crn_prefix=pattern.literal_prefix if pattern else None,
            prevent_key_deletion=prevent_key_deletion,
        )
        found = self._store.list_registrations(ctx.tenant, query)
        return [r for r in found if pattern is None or pattern.matches(r.resource_crn)]

    def _active(self, ctx: CallContext, key: Key, crn: str) -> Registration:
        found = self._store.get_registration(ctx.tenant, key.id, crn)
        if found is None or found.state is not RegistrationState.ACTIVE:
            raise _not_found()
        return found

    # -- writes ----------------------------------------------------------------------------------

    def create(
        self,
        ctx: CallContext,
        key: Key,
        crn: str,
        *,
        prevent_key_deletion: bool = False,
        description: str | None = None,
        registration_metadata: str | None = None,
    ) -> tuple[Registration, bool]:
        """E29. Returns (registration, created); an identical registration is (existing, False)."""
        crn = validate_resource_crn(crn)
        description = _validate_text(description, "description", MAX_DESCRIPTION)
        registration_metadata = _validate_text(
            registration_metadata, "registrationMetadata", MAX_REGISTRATION_METADATA
        )
        if key.extractable:
            raise InvalidInput(
                "Requested action can only be completed with a root key.", reason=Reason.KEY_ROOT_REQUIRED
            )
        if key.state is not KeyState.ACTIVE:
            raise Conflict(
                "A key must be a root key (non-extractable) in the Activated (1) state.",
                reason=Reason.INVALID_STATE,
            )
        version = self._keys.current_version(ctx, key)
        now = self._clock.now()
        new = Registration(
            tenant=ctx.tenant,
            key_id=key.id,
            resource_crn=crn,
            prevent_key_deletion=bool(prevent_key_deletion),
            key_version_id=version.id,
            key_version_created_at=version.created_at,
            created_at=now,
            created_by=ctx.actor,
            updated_at=now,
            updated_by=ctx.actor,
            description=description,
            registration_metadata=registration_metadata,
        )
        with self._store.transaction() as tx:
            existing = tx.get_registration(ctx.tenant, key.id, crn)
            if existing is not None and existing.state is RegistrationState.ACTIVE:
                same = (existing.prevent_key_deletion, existing.description, existing.registration_metadata)
                if same == (new.prevent_key_deletion, new.description, new.registration_metadata):
                    return existing, False
                raise AlreadyExists("Registration already exists", reason=Reason.REGISTRATION_DUPLICATE)
            if existing is not None:
                # A suspended/deactivated leftover of a force-deleted and restored key: the
                # resource registers afresh.
                tx.delete_registration(ctx.tenant, key.id, crn)
            tx.insert_registration(new)
        return new, True

    def update(self, ctx: CallContext, key: Key, crn: str, patch: RegistrationPatch) -> Registration:
        """E30 merge: only the given properties change."""
        crn = validate_resource_crn(crn)
        changes: dict[str, Any] = {}
        if patch.prevent_key_deletion is not None:
            changes["prevent_key_deletion"] = bool(patch.prevent_key_deletion)
        if patch.description is not None:
            changes["description"] = _validate_text(patch.description, "description", MAX_DESCRIPTION)
        if patch.registration_metadata is not None:
            changes["registration_metadata"] = _validate_text(
                patch.registration_metadata, "registrationMetadata", MAX_REGISTRATION_METADATA
            )
        return self._write(ctx, key, crn, changes)

    def replace(
        self,
        ctx: CallContext,
        key: Key,
        crn: str,
        *,
        prevent_key_deletion: bool = False,
        description: str | None = None,
        registration_metadata: str | None = None,
        key_version_id: str | None = None,
    ) -> Registration:
        """E31 replace: absent properties take their defaults; the key version may move forward
        to another version of the same key, never back (422 ``KEY_VERSION_INVALID``)."""
        crn = validate_resource_crn(crn)
        changes: dict[str, Any] = {
            "prevent_key_deletion": bool(prevent_key_deletion),
            "description": _validate_text(description, "description", MAX_DESCRIPTION),
            "registration_metadata": _validate_text(
                registration_metadata, "registrationMetadata", MAX_REGISTRATION_METADATA
            ),
        }
        current = self._active(ctx, key, crn)
        if key_version_id is not None and key_version_id != current.key_version_id:
            version = self._keys.version(ctx, key_version_id) if isinstance(key_version_id, str) else None
            if version is None or version.key_id != key.id:
                raise _key_version_invalid("The key version does not belong to this key")
            registered = self._keys.version(ctx, current.key_version_id)
            if registered is not None and version.number < registered.number:
                raise _key_version_invalid(
                    "The key version is older than the version the resource is registered with"
                )
            changes["key_version_id"] = version.id
            changes["key_version_created_at"] = version.created_at
        return self._write(ctx, key, crn, changes)

    def _write(self, ctx: CallContext, key: Key, crn: str, changes: dict[str, Any]) -> Registration:
        with self._store.transaction() as tx:
            current = tx.get_registration(ctx.tenant, key.id, crn)
            if current is None or current.state is not RegistrationState.ACTIVE:
                raise _not_found()
            updated = replace(current, **changes, updated_at=self._clock.now(), updated_by=ctx.actor)
            tx.update_registration(updated)
        return updated

    def delete(self, ctx: CallContext, key: Key, crn: str) -> Registration:
        """E32: returns what was deleted (for ``prefer: return=representation``)."""
        crn = validate_resource_crn(crn)
        with self._store.transaction() as tx:
            current = tx.get_registration(ctx.tenant, key.id, crn)
            if current is None or current.state is not RegistrationState.ACTIVE:
                raise _not_found()
            tx.delete_registration(ctx.tenant, key.id, crn)
        return current

    def deactivate(self, ctx: CallContext, key: Key, crn: str) -> Registration:
        """E33 (deprecated): Suspended (2) → Deactivated (3); any other state is 409."""
        crn = validate_resource_crn(crn, param=QUERY_PARAM)
        with self._store.transaction() as tx:
            current = tx.get_registration(ctx.tenant, key.id, crn)
            if current is None:
                raise _not_found()
            if current.state is not RegistrationState.SUSPENDED:
                raise Conflict(
                    "For action deactivate, the registration must be in the Suspended (2) state.",
                    reason=Reason.REGISTRATION_INVALID_STATE,
                )
            updated = replace(
                current,
                state=RegistrationState.DEACTIVATED,
                updated_at=self._clock.now(),
                updated_by=ctx.actor,
            )
            tx.update_registration(updated)
        return updated

    # -- the deletion guard ------------------------------------------------------------------------

    def guard(self, ctx: CallContext, key: Key, force: bool) -> None:
        """`KeyService` deletion guard (see the module docstring for the three outcomes)."""
        by_key = RegistrationQuery(key_id=key.id)
        if not self._store.list_registrations(ctx.tenant, by_key):
            return  # the common case costs one read and no write lock
        with self._store.transaction() as tx:
            active = tx.list_registrations(ctx.tenant, by_key)
            if any(r.prevent_key_deletion for r in active):
                raise Conflict(
                    "The key cannot be deleted because it's protecting a cloud resource that has a "
                    "retention policy.",
                    reason=Reason.PREVENT_KEY_DELETION,
                )
            if active and not force:
                raise Conflict(
                    "The key cannot be deleted because the key has one or more associated resources.",
                    reason=Reason.PROTECTED_RESOURCE,
                )
            now = self._clock.now()
            for registration in active:
                tx.update_registration(
                    replace(
                        registration, state=RegistrationState.SUSPENDED, updated_at=now, updated_by=ctx.actor
                    )
                )
