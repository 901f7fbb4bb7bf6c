"""The domain model: tenants own keys, keys own versions, tenants own one import token.

Plain dataclasses so the store, the services and the adapters share one vocabulary without any of
them importing a transport or the HSM. Times are timezone-aware UTC `datetime`s everywhere.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

DEFAULT_KEY_RING = "default"


class KeyState(enum.IntEnum):
    """NIST SP 800-57 states as Key Protect numbers them (4 is unused on purpose)."""

    ACTIVE = 1
    SUSPENDED = 2
    DEACTIVATED = 3
    DESTROYED = 5


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """Key material as it rests in the store: wrapped under the HSM's master KEK.

    `length` is the material's true length: SoftHSM2's RFC 5649 unwrap keeps the padding of
    generic secrets whose length is not a multiple of 8, so the store must remember it.
    """

    blob: bytes
    length: int
    kek_label: str
    mechanism: str = "AES_KEY_WRAP_PAD"
    #: "aes" (root keys: usable for GCM, never revealed) or "secret" (standard keys). Stored so the
    #: HSM layer can refuse to reveal root material even if a caller asks by mistake.
    kind: str = "aes"


@dataclass(slots=True)
class DualAuthDelete:
    enabled: bool = False
    set_by: str | None = None
    expires_at: datetime | None = None


@dataclass(slots=True)
class RotationPolicy:
    enabled: bool = False
    interval_month: int | None = None


@dataclass(slots=True)
class Key:
    id: str
    tenant: str
    name: str
    extractable: bool
    imported: bool
    state: KeyState
    created_at: datetime
    created_by: str
    updated_at: datetime
    current_version_id: str
    bit_length: int = 256
    description: str | None = None
    key_ring: str = DEFAULT_KEY_RING
    aliases: list[str] = field(default_factory=list)
    expires_at: datetime | None = None
    last_rotated_at: datetime | None = None
    state_changed_at: datetime | None = None
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    state_before_delete: KeyState | None = None
    dual_auth: DualAuthDelete = field(default_factory=DualAuthDelete)
    rotation: RotationPolicy | None = None
    #: Bumped on every write; the store uses it for optimistic concurrency.
    revision: int = 1

    @property
    def is_root(self) -> bool:
        return not self.extractable


@dataclass(frozen=True, slots=True)
class KeyVersion:
    id: str
    key_id: str
    tenant: str
    number: int
    created_at: datetime
    wrapped: WrappedKey


@dataclass(slots=True)
class ImportToken:
    """An RSA keypair inside the HSM; only `public_key_der` ever leaves it.

    `hsm_object_id` names the private key's token object so it survives daemon restarts.
    """

    id: str
    tenant: str
    created_at: datetime
    expires_at: datetime
    max_retrievals: int
    remaining_retrievals: int
    nonce: bytes
    key_bits: int
    public_key_der: bytes
    hsm_object_id: str
    created_by: str = ""
