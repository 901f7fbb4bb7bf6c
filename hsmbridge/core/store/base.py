"""The repository interface every store backend implements (SQLite now, PostgreSQL later).

Why a protocol and not an ORM: the services need a dozen precise operations with precise
transactional guarantees, and a second backend must be able to prove it offers exactly those.
The same test suite (tests/test_store.py) runs against every backend.

Rules every backend keeps:
- Every lookup is scoped by tenant: a key id from another tenant is simply not found.
- Writes happen inside `transaction()`; a key with its first version, a rotation (new version +
  key update), or an import-token replacement is stored entirely or not at all.
- `update_key` is optimistic: it succeeds only if the stored `revision` still equals
  `key.revision`, then stores `revision + 1` and sets it on the passed object. A lost race raises
  `Conflict(reason="CONCURRENT_UPDATE")`; callers retry from a fresh read.
- Unique violations (alias, key ring) raise `AlreadyExists`; nothing else leaks driver errors.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from hsmbridge.core.store.external import ExternalRows

from hsmbridge.core.model import ImportToken, Key, KeyState, KeyVersion, WrappedKey


@dataclass(frozen=True, slots=True)
class KeyQuery:
    """Filters for listing keys; `None` means "any"."""

    states: Sequence[KeyState] | None = None
    extractable: bool | None = None
    key_ring: str | None = None
    limit: int = 200
    offset: int = 0


@dataclass(frozen=True, slots=True)
class KeyRing:
    id: str
    tenant: str
    created_at: datetime | None
    created_by: str | None


@dataclass(frozen=True, slots=True)
class InstancePolicy:
    policy_type: str
    data: dict[str, Any]
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class StoreReader(Protocol):
    def get_key(self, tenant: str, key_id: str) -> Key | None: ...
    def get_key_by_alias(self, tenant: str, alias: str) -> Key | None: ...
    def list_keys(self, tenant: str, query: KeyQuery) -> list[Key]: ...
    def count_keys(self, tenant: str, query: KeyQuery) -> int: ...
    def get_version(self, tenant: str, version_id: str) -> KeyVersion | None: ...
    def list_versions(self, tenant: str, key_id: str) -> list[KeyVersion]:
        """Newest first (highest `number` first)."""
        ...

    def list_versions_not_under_kek(
        self, kek_label: str, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[KeyVersion]:
        """All tenants: versions whose material is wrapped under any KEK but `kek_label`, ordered
        by (tenant, id) and starting after the `after` cursor. Master KEK rotation pages through
        it; a rewrapped version drops out of it, which is what makes the rotation resumable."""
        ...

    def count_versions_by_kek(self) -> dict[str, int]:
        """All tenants: how many versions each KEK label wraps (rotation progress, and proof that
        an old KEK wraps nothing any more before it is destroyed)."""
        ...

    def list_rotation_candidates(
        self, rotated_before: datetime, *, after: tuple[str, str] | None = None, limit: int = 500
    ) -> list[tuple[str, str]]:
        """All tenants: (tenant, key id) of Active, generated root keys with an enabled rotation
        policy whose last rotation (or creation) is before `rotated_before`, ordered by (tenant,
        id) after the `after` cursor. The rotation scheduler pages through it and re-reads each
        key before deciding: this only narrows the scan to keys that can possibly be due."""
        ...

    def get_import_token(self, tenant: str) -> ImportToken | None: ...
    def list_import_tokens_expired_before(self, when: datetime) -> list[ImportToken]:
        """All tenants: the sweeper uses it to destroy expired keypairs in the HSM."""
        ...

    def list_key_rings(self, tenant: str) -> list[KeyRing]: ...
    def get_instance_policies(self, tenant: str) -> list[InstancePolicy]: ...
    def get_key_policy_records(self, tenant: str, key_id: str) -> list[KeyPolicyRecord]:
        """The key's policy metadata rows, ordered by policy type."""
        ...

    def get_registration(self, tenant: str, key_id: str, resource_crn: str) -> Registration | None: ...
    def list_registrations(self, tenant: str, query: RegistrationQuery) -> list[Registration]:
        """Every match (no paging: callers filter CRN patterns first), oldest first."""
        ...


class StoreTransaction(StoreReader, Protocol):
    def ensure_tenant(self, tenant: str, now: datetime) -> None: ...
    def insert_key(self, key: Key, first_version: KeyVersion | None) -> None:
        """Store a new key with its aliases and its first version; None: a key whose material is
        still to be imported (an external key pending import, core/external_keys.py)."""
        ...

    @property
    def external(self) -> ExternalRows:
        """External keys and bound import parameters (migration 003, core/store/external.py)."""
        ...

    def update_key(self, key: Key) -> None:
        """Optimistic write of every mutable field (see module docstring). Aliases are not touched."""
        ...

    def add_version(self, version: KeyVersion) -> None: ...
    def replace_wrapped(self, tenant: str, version_id: str, expected: WrappedKey, new: WrappedKey) -> bool:
        """Master KEK rotation: store `new` (the same material wrapped under another KEK) in place
        of `expected`. Optimistic like `update_key`, but a lost race is not an error: False when
        the version is gone (purged) or no longer holds exactly `expected` (another rotation run
        got there first), so the caller skips it. Nothing else about the version changes."""
        ...

    def add_alias(self, tenant: str, key_id: str, alias: str) -> None: ...
    def remove_alias(self, tenant: str, key_id: str, alias: str) -> bool: ...
    def purge_key(self, tenant: str, key_id: str) -> None:
        """Remove the key, its versions and aliases for good."""
        ...

    def put_import_token(self, token: ImportToken) -> ImportToken | None:
        """Store the tenant's token, replacing (and returning) the previous one if any."""
        ...

    def update_import_token(self, token: ImportToken) -> None: ...
    def delete_import_token(self, tenant: str, token_id: str) -> None: ...
    def create_key_ring(self, ring: KeyRing) -> None: ...
    def delete_key_ring(self, tenant: str, ring_id: str) -> None: ...
    def put_instance_policy(self, tenant: str, policy: InstancePolicy) -> None: ...
    def put_key_policy_record(self, record: KeyPolicyRecord) -> None:
        """Upsert; on replace the original `id`, `created_at` and `created_by` are kept."""
        ...

    def insert_registration(self, registration: Registration) -> None:
        """`AlreadyExists` if (tenant, key, CRN) is taken; `NotFound` if the key does not exist."""
        ...

    def update_registration(self, registration: Registration) -> None:
        """Write every mutable field; `NotFound` (REGISTRATION_NOT_FOUND) if it does not exist."""
        ...

    def delete_registration(self, tenant: str, key_id: str, resource_crn: str) -> bool: ...


class Store(StoreReader, Protocol):
    """Reads outside a transaction see committed data; writes need `transaction()`."""

    def migrate(self) -> None:
        """Apply pending schema migrations (idempotent)."""
        ...

    def schema_version(self) -> int: ...
    def transaction(self) -> AbstractContextManager[StoreTransaction]: ...
    def ping(self) -> None:
        """Raise if the database does not answer (readiness)."""
        ...

    def close(self) -> None: ...


# --- key policies and registrations (migration 002) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPolicyRecord:
    """Who set a key policy, and when. The policy's value lives on the `Key` (``dual_auth``,
    ``rotation``) because the lifecycle reads it there; this is only what the E23 representation
    adds to it."""

    tenant: str
    key_id: str
    policy_type: str  # "rotation" | "dualAuthDelete"
    id: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str


class RegistrationState(enum.IntEnum):
    """A registration's life: active until its key is force-deleted, then suspended until the
    integrated service deactivates it (E33)."""

    ACTIVE = 1
    SUSPENDED = 2
    DEACTIVATED = 3


@dataclass(frozen=True, slots=True)
class Registration:
    """A cloud resource (by CRN) that a key protects (E29). Keyed by (tenant, key_id, resource_crn)."""

    tenant: str
    key_id: str
    resource_crn: str
    prevent_key_deletion: bool
    key_version_id: str
    key_version_created_at: datetime
    created_at: datetime
    created_by: str
    updated_at: datetime
    updated_by: str
    description: str | None = None
    registration_metadata: str | None = None
    state: RegistrationState = RegistrationState.ACTIVE


@dataclass(frozen=True, slots=True)
class RegistrationQuery:
    """Filters for `list_registrations`; `None` means "any".

    `crn_prefix` is a literal prefix of ``resource_crn`` (wildcard patterns are matched by the
    caller); `key_ring` selects registrations of keys currently in that ring.
    """

    key_id: str | None = None
    key_ring: str | None = None
    crn_prefix: str | None = None
    prevent_key_deletion: bool | None = None
    states: Sequence[RegistrationState] | None = (RegistrationState.ACTIVE,)
