"""Key lifecycle: create (generate or import), read, list, rotate, enable/disable, delete,
restore, purge, aliases and per-key policies — transport-free.

Every mutation is read → check (lifecycle.py) → optimistic write; a lost race re-reads and
re-checks (up to three times), so two replicas rotating one key cannot both succeed from the same
version. Key versions are immutable, so they are cached per process without invalidation.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from hsmbridge.core import lifecycle, validation
from hsmbridge.core.backend import CryptoBackend, KeyRef, MaterialKind, wipe
from hsmbridge.core.clock import Clock
from hsmbridge.core.import_tokens import ImportTokenService, SecureImport
from hsmbridge.core.model import (
    DEFAULT_KEY_RING,
    DualAuthDelete,
    Key,
    KeyState,
    KeyVersion,
    RotationPolicy,
    WrappedKey,
)
from hsmbridge.core.principal import CallContext
from hsmbridge.core.store.base import KeyQuery, Store
from hsmbridge.errors import (
    Conflict,
    Gone,
    IntegrityError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Reason,
    TooEarly,
)

log = logging.getLogger(__name__)

GENERATED_KEY_BYTES = 32
_MAX_RETRIES = 3
#: Key Protect's sync rule: not within an hour of the last lifecycle event or sync.
SYNC_INTERVAL = timedelta(hours=1)
#: What restore encrypts under the offered material and decrypts under the stored one: the two
#: are the same key iff the GCM tag verifies. Constant, because it proves nothing by itself.
_MATERIAL_PROBE = b"hsmbridge restore material check"

#: Called before a key is created: may refuse it (an instance policy forbids the kind of key) or
#: return the spec with instance-level defaults applied (policies that apply to new keys only).
AdmissionRule = Callable[[CallContext, "KeySpec"], "KeySpec"]
#: Called before material is supplied for an existing key (rotate, restore) with whether it came
#: through an import token: may refuse plain material (an instance policy enforces tokens).
MaterialRule = Callable[[CallContext, bool], None]
#: Called before a key is deleted with the caller's `force`: may refuse (registrations protect the
#: key) or clean up what a forced delete removes.
DeletionGuard = Callable[[CallContext, Key, bool], None]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """A request to create a key. `payload` or `secure_import` makes it an imported key."""

    name: str
    extractable: bool = False
    description: str | None = None
    payload: bytes | bytearray | None = None
    secure_import: SecureImport | None = None
    aliases: Sequence[str] = ()
    expires_at: datetime | None = None
    key_ring: str = DEFAULT_KEY_RING
    dual_auth_delete: bool | None = None
    rotation: RotationPolicy | None = None


class _VersionCache:
    """Key versions by id, for `ttl` seconds. A version's material never changes, but its
    *wrapping* does when the master KEK is rotated (kek_rotation.py): the TTL bounds how long a
    daemon keeps unwrapping through the old KEK, so the old KEK may be destroyed `ttl` seconds
    after the last rotation run without restarting anything."""

    def __init__(self, capacity: int = 10_000, ttl: float = 60.0) -> None:
        self._items: OrderedDict[str, tuple[float, KeyVersion]] = OrderedDict()
        self._capacity = capacity
        self.ttl = ttl
        self._lock = threading.Lock()

    def get(self, version_id: str) -> KeyVersion | None:
        with self._lock:
            item = self._items.get(version_id)
            if item is None:
                return None
            if item[0] < time.monotonic():
                del self._items[version_id]
                return None
            self._items.move_to_end(version_id)
            return item[1]

    def put(self, version: KeyVersion) -> None:
        with self._lock:
            self._items[version.id] = (time.monotonic() + self.ttl, version)
            if len(self._items) > self._capacity:
                self._items.popitem(last=False)

    def drop(self, version_ids: Sequence[str]) -> None:
        with self._lock:
            for version_id in version_ids:
                self._items.pop(version_id, None)


class _UseCache:
    """Keys as the envelope hot path sees them, for at most `ttl` seconds.

    Why: reading a key from SQLite was 40 % of a wrap's CPU. Every mutation in this process
    invalidates its entries at once; a mutation made by *another* process (worker, replica) is
    seen here within `ttl` — the documented bound on how long a disabled or deleted key can still
    wrap elsewhere. Entries are shared, read-only objects: mutations never start from them.
    """

    def __init__(self, ttl: float, capacity: int = 10_000) -> None:
        self.ttl = ttl
        self._capacity = capacity
        self._items: dict[tuple[str, str], tuple[float, Key]] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str, ref: str) -> Key | None:
        item = self._items.get((tenant, ref))
        if item is None or item[0] < time.monotonic():
            return None
        return item[1]

    def put(self, tenant: str, ref: str, key: Key) -> None:
        with self._lock:
            if len(self._items) >= self._capacity:
                self._items.clear()
            self._items[(tenant, ref)] = (time.monotonic() + self.ttl, key)

    def invalidate(self, tenant: str, key_id: str) -> None:
        with self._lock:
            for ref in [r for r, (_, k) in self._items.items() if r[0] == tenant and k.id == key_id]:
                del self._items[ref]


class KeyService:
    def __init__(
        self, store: Store, backend: CryptoBackend, clock: Clock, import_tokens: ImportTokenService
    ) -> None:
        self._store = store
        self._backend = backend
        self._clock = clock
        self._import_tokens = import_tokens
        self._versions = _VersionCache()
        self._use_cache = _UseCache(ttl=1.0)
        self.admission_rules: list[AdmissionRule] = []
        self.material_rules: list[MaterialRule] = []
        self.deletion_guards: list[DeletionGuard] = []
        # Last sync per (tenant, key id). In memory on purpose: the only effect of a sync here is
        # the one-hour 409 rule, and forgetting it on restart merely allows one early sync.
        self._synced: dict[tuple[str, str], datetime] = {}
        self._synced_lock = threading.Lock()

    # -- reads -----------------------------------------------------------------------------------

    def get(self, ctx: CallContext, key_id_or_alias: str) -> Key:
        """Resolve a key by id or alias within the caller's tenant, applying expiry lazily."""
        key = self._store.get_key(ctx.tenant, key_id_or_alias)
        if key is None and not validation.is_uuid(key_id_or_alias):
            key = self._store.get_key_by_alias(ctx.tenant, key_id_or_alias)
        if key is None:
            raise NotFound("Key does not exist", reason=Reason.KEY_NOT_FOUND)
        ctx.used(key.id)
        if lifecycle.apply_expiry(key, self._clock.now()):
            try:
                with self._store.transaction() as tx:
                    tx.update_key(key)
            except Conflict:
                return self.get(ctx, key_id_or_alias)
        return key

    def get_for_use(self, ctx: CallContext, key_id_or_alias: str) -> Key:
        """`get` for wrap/unwrap/rewrap: served from a short-lived cache (see `_UseCache`).

        The returned key is shared: callers read it, never mutate it.
        """
        key = self._use_cache.get(ctx.tenant, key_id_or_alias)
        if key is not None and lifecycle.effective_state(key, self._clock.now()) is key.state:
            ctx.used(key.id)
            return key
        key = self.get(ctx, key_id_or_alias)
        self._use_cache.put(ctx.tenant, key_id_or_alias, key)
        return key

    def invalidate(self, key: Key) -> None:
        """Drop cached views of `key` after a write made outside this service (policies, rings)."""
        self._use_cache.invalidate(key.tenant, key.id)

    _changed = invalidate

    def forget_versions(self, version_ids: Sequence[str]) -> None:
        """Drop cached versions whose stored material was deleted outside this service
        (core/external_keys.py deletes imported material and reimports it later)."""
        self._versions.drop(version_ids)

    def _check_material(self, ctx: CallContext, payload: object, secure_import: object) -> None:
        if payload is not None or secure_import is not None:
            for rule in self.material_rules:
                rule(ctx, secure_import is not None)

    def version(self, ctx: CallContext, version_id: str) -> KeyVersion | None:
        version = self._versions.get(version_id)
        if version is None:
            version = self._store.get_version(ctx.tenant, version_id)
            if version is not None:
                self._versions.put(version)
        if version is None or version.tenant != ctx.tenant:
            return None
        return version

    def current_version(self, ctx: CallContext, key: Key) -> KeyVersion:
        version = self.version(ctx, key.current_version_id)
        if version is None:
            raise NotFound("Key version does not exist", reason=Reason.KEY_NOT_FOUND)
        return version

    def list(self, ctx: CallContext, query: KeyQuery) -> list[Key]:
        now = self._clock.now()
        keys = self._store.list_keys(ctx.tenant, query)
        for key in keys:
            lifecycle.apply_expiry(key, now)  # presented now, persisted by the sweeper
        return keys

    def count(self, ctx: CallContext, query: KeyQuery) -> int:
        return self._store.count_keys(ctx.tenant, query)

    def versions(self, ctx: CallContext, key_id_or_alias: str) -> list[KeyVersion]:
        key = self.get(ctx, key_id_or_alias)
        return self._store.list_versions(ctx.tenant, key.id)

    def payload(self, ctx: CallContext, key: Key) -> bytearray:
        """A standard key's material. Root key material never leaves the HSM unwrapped."""
        if key.is_root:
            raise PermissionDenied("root key material never leaves the HSM")
        if key.state is KeyState.DESTROYED:
            raise Conflict("Key has been deleted", reason=Reason.INVALID_STATE)
        return self._backend.reveal_secret(self.current_version(ctx, key).wrapped)

    # -- create ----------------------------------------------------------------------------------

    def create(self, ctx: CallContext, spec: KeySpec) -> Key:
        for rule in self.admission_rules:
            spec = rule(ctx, spec)
        name = validation.validate_name(spec.name)
        description = validation.validate_description(spec.description)
        aliases = validation.validate_aliases(spec.aliases)
        now = self._clock.now()
        if spec.expires_at is not None and spec.expires_at <= now:
            raise InvalidInput(
                "The field 'expirationDate' must be: in the future",
                reason=Reason.INVALID_FIELD,
                target="expirationDate",
            )
        if spec.key_ring != DEFAULT_KEY_RING:
            validation.validate_key_ring_id(spec.key_ring)
            if not any(r.id == spec.key_ring for r in self._store.list_key_rings(ctx.tenant)):
                raise NotFound("Key ring does not exist", reason=Reason.KEY_RING_NOT_FOUND)
        for alias in aliases:
            if self._store.get_key_by_alias(ctx.tenant, alias) is not None:
                raise Conflict(
                    "One or more aliases are already associated with a key in the instance.",
                    reason=Reason.ALIAS_NOT_UNIQUE,
                    target="aliases",
                )
        wrapped, imported = self._material_for_new_key(ctx, spec)
        key_id = str(uuid.uuid4())
        key = Key(
            id=key_id,
            tenant=ctx.tenant,
            name=name,
            extractable=spec.extractable,
            imported=imported,
            state=KeyState.ACTIVE,
            created_at=now,
            created_by=ctx.actor,
            updated_at=now,
            current_version_id=key_id,
            bit_length=wrapped.length * 8,
            description=description,
            key_ring=spec.key_ring,
            aliases=aliases,
            expires_at=spec.expires_at,
            state_changed_at=now,
            dual_auth=DualAuthDelete(enabled=bool(spec.dual_auth_delete)),
            rotation=spec.rotation,
        )
        version = KeyVersion(
            id=key_id, key_id=key_id, tenant=ctx.tenant, number=1, created_at=now, wrapped=wrapped
        )
        with self._store.transaction() as tx:
            tx.ensure_tenant(ctx.tenant, now)
            tx.insert_key(key, version)
        ctx.used(key.id, version.id)
        return key

    def _material_for_new_key(self, ctx: CallContext, spec: KeySpec) -> tuple[WrappedKey, bool]:
        kind = MaterialKind.SECRET if spec.extractable else MaterialKind.AES
        if spec.secure_import is not None:
            if spec.extractable:
                raise InvalidInput(
                    "Standard keys cannot be imported with an import token",
                    reason=Reason.INVALID_FIELD,
                    target="encryptedNonce",
                )
            return self._import_tokens.unwrap(ctx, spec.secure_import), True
        if spec.payload is not None:
            validation.validate_material(spec.payload, root=not spec.extractable)
            return self._backend.wrap_material(kind, spec.payload), True
        return self._backend.generate_key(kind, GENERATED_KEY_BYTES), False

    # -- mutations -------------------------------------------------------------------------------

    def _mutate(self, ctx: CallContext, key_id_or_alias: str, change: Callable[[Key, datetime], None]) -> Key:
        for attempt in range(_MAX_RETRIES):
            key = self.get(ctx, key_id_or_alias)
            now = self._clock.now()
            change(key, now)
            key.updated_at = now
            try:
                with self._store.transaction() as tx:
                    tx.update_key(key)
                return key
            except Conflict as exc:
                if exc.reason is not Reason.CONCURRENT_UPDATE or attempt == _MAX_RETRIES - 1:
                    raise
            finally:
                self._changed(key)
        raise AssertionError("unreachable")

    def rotate(
        self,
        ctx: CallContext,
        key_id_or_alias: str,
        *,
        payload: bytes | bytearray | None = None,
        secure_import: SecureImport | None = None,
        expected_revision: int | None = None,
    ) -> Key:
        """`expected_revision` makes the rotation a compare-and-swap: it happens only over that
        revision of the key, and a lost race raises `Conflict(CONCURRENT_UPDATE)` instead of being
        retried (the rotation scheduler's claim: of two processes, exactly one rotates)."""
        self._check_material(ctx, payload, secure_import)
        key = self.get(ctx, key_id_or_alias)
        if expected_revision is not None and key.revision != expected_revision:
            raise Conflict("the key was changed meanwhile", reason=Reason.CONCURRENT_UPDATE)
        lifecycle.require_rotate(key, self._clock.now())
        if key.imported:
            if secure_import is not None:
                wrapped = self._import_tokens.unwrap(ctx, secure_import)
            elif payload is not None:
                validation.validate_material(payload, root=True)
                wrapped = self._backend.wrap_material(MaterialKind.AES, payload)
            else:
                raise InvalidInput(
                    "This root key was created with user-supplied key material: Key material is "
                    "required to perform a 'rotate' action",
                    reason=Reason.KEY_PAYLOAD_REQUIRED,
                    target="payload",
                )
        else:
            if payload is not None or secure_import is not None:
                raise InvalidInput(
                    "The key was generated by the service: rotate it without a payload",
                    reason=Reason.INVALID_FIELD,
                    target="payload",
                )
            wrapped = self._backend.generate_key(MaterialKind.AES, GENERATED_KEY_BYTES)

        for attempt in range(_MAX_RETRIES):
            now = self._clock.now()
            lifecycle.require_rotate(key, now)
            latest = self._store.list_versions(ctx.tenant, key.id)[0]
            version = KeyVersion(
                id=str(uuid.uuid4()),
                key_id=key.id,
                tenant=ctx.tenant,
                number=latest.number + 1,
                created_at=now,
                wrapped=wrapped,
            )
            key.current_version_id = version.id
            key.last_rotated_at = now
            key.updated_at = now
            key.bit_length = wrapped.length * 8
            try:
                with self._store.transaction() as tx:
                    tx.add_version(version)
                    tx.update_key(key)
                self._changed(key)
                ctx.used(key.id, version.id)
                return key
            except Conflict as exc:
                last = attempt == _MAX_RETRIES - 1 or expected_revision is not None
                if exc.reason is not Reason.CONCURRENT_UPDATE or last:
                    raise
                key = self.get(ctx, key_id_or_alias)
        raise AssertionError("unreachable")

    def disable(self, ctx: CallContext, key_id_or_alias: str) -> Key:
        def change(key: Key, now: datetime) -> None:
            lifecycle.require_disable(key)
            key.state = KeyState.SUSPENDED
            key.state_changed_at = now

        return self._mutate(ctx, key_id_or_alias, change)

    def enable(self, ctx: CallContext, key_id_or_alias: str) -> Key:
        def change(key: Key, now: datetime) -> None:
            lifecycle.require_enable(key, now)
            key.state = KeyState.ACTIVE
            key.state_changed_at = now

        return self._mutate(ctx, key_id_or_alias, change)

    def delete(self, ctx: CallContext, key_id_or_alias: str, *, force: bool = False) -> Key:
        def change(key: Key, now: datetime) -> None:
            lifecycle.require_delete(key)
            self._check_dual_authorization(ctx, key, now)
            for guard in self.deletion_guards:
                guard(ctx, key, force)
            key.state_before_delete = key.state
            key.state = KeyState.DESTROYED
            key.state_changed_at = now
            key.deleted_at = now
            key.deleted_by = ctx.actor
            key.dual_auth = DualAuthDelete(enabled=key.dual_auth.enabled)

        key = self._mutate(ctx, key_id_or_alias, change)
        self._forget_versions(ctx, key)
        return key

    def _check_dual_authorization(self, ctx: CallContext, key: Key, now: datetime) -> None:
        auth = key.dual_auth
        if not auth.enabled:
            return
        if (
            auth.set_by is None
            or auth.expires_at is None
            or auth.expires_at <= now
            or auth.set_by == ctx.actor
        ):
            raise Conflict(
                "1 prior authorization(s) are required for deletion, by a different user",
                reason=Reason.AUTHORIZATIONS_NOT_MET,
            )

    def restore(
        self,
        ctx: CallContext,
        key_id_or_alias: str,
        *,
        payload: bytes | bytearray | None = None,
        secure_import: SecureImport | None = None,
    ) -> Key:
        """Undo a delete. The daemon keeps the material until purge, so no payload is needed; a
        client that re-supplies one (the legacy Key Protect flow) must supply the *same* material,
        which is checked inside the HSM (`_require_same_material`)."""
        self._check_material(ctx, payload, secure_import)
        if payload is not None or secure_import is not None:
            key = self.get(ctx, key_id_or_alias)
            lifecycle.require_restore(key, self._clock.now())
            self._require_same_material(ctx, key, payload, secure_import)
            key_id_or_alias = key.id

        def change(key: Key, now: datetime) -> None:
            lifecycle.require_restore(key, now)
            previous = key.state_before_delete
            key.state = KeyState.DEACTIVATED if previous is KeyState.DEACTIVATED else KeyState.ACTIVE
            key.state_changed_at = now
            key.deleted_at = None
            key.deleted_by = None
            key.state_before_delete = None

        return self._mutate(ctx, key_id_or_alias, change)

    def _require_same_material(
        self,
        ctx: CallContext,
        key: Key,
        payload: bytes | bytearray | None,
        secure_import: SecureImport | None,
    ) -> None:
        """Refuse restore material that differs from the key's current version.

        Standard keys are revealable, so their secrets compare in constant time. Root material
        never leaves the HSM: the offered material is loaded as a temporary HSM key, a constant
        probe is GCM-encrypted under it and decrypted under the stored version; the tag verifies
        only if both are the same key. No key check value is ever exposed.
        """
        mismatch = InvalidInput(
            "The field 'payload' must be: the key material of the deleted key",
            reason=Reason.INVALID_FIELD,
            target="payload",
        )
        if not key.imported:
            raise InvalidInput(
                "The field 'payload' must be: omitted: the key material was generated by the service",
                reason=Reason.INVALID_FIELD,
                target="payload",
            )
        version = self.current_version(ctx, key)
        if key.extractable:
            if secure_import is not None or payload is None:
                raise InvalidInput(
                    "Standard keys cannot be imported with an import token",
                    reason=Reason.INVALID_FIELD,
                    target="encryptedNonce",
                )
            secret = self._backend.reveal_secret(version.wrapped)
            try:
                same = hmac.compare_digest(bytes(secret), bytes(payload))
            finally:
                wipe(secret)
            if not same:
                raise mismatch
            return
        if secure_import is not None:
            candidate = self._import_tokens.unwrap(ctx, secure_import)
        else:
            assert payload is not None
            validation.validate_material(payload, root=True)
            candidate = self._backend.wrap_material(MaterialKind.AES, payload)
        probe_id = f"restore-probe-{uuid.uuid4()}"
        try:
            iv, sealed = self._backend.gcm_encrypt(KeyRef(probe_id, candidate), _MATERIAL_PROBE, b"")
            opened = self._backend.gcm_decrypt(KeyRef(version.id, version.wrapped), iv, sealed, b"")
            wipe(opened)
        except IntegrityError:
            raise mismatch from None
        finally:
            self._backend.evict([probe_id, version.id])

    def purge(self, ctx: CallContext, key_id_or_alias: str) -> Key:
        key = self.get(ctx, key_id_or_alias)
        lifecycle.require_purge(key, self._clock.now())
        versions = self._store.list_versions(ctx.tenant, key.id)
        with self._store.transaction() as tx:
            tx.purge_key(ctx.tenant, key.id)
        self._changed(key)
        self._backend.evict([v.id for v in versions])
        self._versions.drop([v.id for v in versions])
        return key

    def set_key_for_deletion(self, ctx: CallContext, key_id_or_alias: str) -> Key:
        def change(key: Key, now: datetime) -> None:
            lifecycle._in(key, KeyState.ACTIVE)
            if not key.dual_auth.enabled:
                raise Conflict(
                    "The key is not dual auth enabled and cannot be set for deletion.",
                    reason=Reason.NOT_DUAL_AUTH,
                )
            key.dual_auth = DualAuthDelete(True, ctx.actor, now + lifecycle.DUAL_AUTH_WINDOW)

        return self._mutate(ctx, key_id_or_alias, change)

    def unset_key_for_deletion(self, ctx: CallContext, key_id_or_alias: str) -> Key:
        def change(key: Key, now: datetime) -> None:
            lifecycle._in(key, KeyState.ACTIVE)
            if not key.dual_auth.enabled:
                raise Conflict(
                    "The key is not dual auth enabled and cannot be set for deletion.",
                    reason=Reason.NOT_DUAL_AUTH,
                )
            key.dual_auth = DualAuthDelete(True)

        return self._mutate(ctx, key_id_or_alias, change)

    def move_to_key_ring(self, ctx: CallContext, key_id_or_alias: str, key_ring: str) -> Key:
        """E7 PATCH: the key ring is the one attribute a client may change. The target must
        exist in the caller's tenant (404 ``KEY_RING_NOT_FOUND_ERR``); a deleted key is 410."""
        validation.validate_key_ring_id(key_ring)
        if not any(ring.id == key_ring for ring in self._store.list_key_rings(ctx.tenant)):
            raise NotFound("Key ring does not exist", reason=Reason.KEY_RING_NOT_FOUND)

        def change(key: Key, now: datetime) -> None:
            if key.state is KeyState.DESTROYED:
                raise Gone(
                    "Key has already been deleted. Delete references to this key.",
                    reason=Reason.KEY_DELETED,
                )
            key.key_ring = key_ring

        return self._mutate(ctx, key_id_or_alias, change)

    def sync(self, ctx: CallContext, key_id_or_alias: str) -> Key:
        """E21: ask integrated services to re-read the key's state. There are none here, so a sync
        only enforces Key Protect's rules: root keys only, and not within an hour of the last
        lifecycle event (rotate, restore, disable, enable, delete, expiry) or sync."""
        key = self.get(ctx, key_id_or_alias)
        if key.extractable:
            raise InvalidInput(
                "Requested action can only be completed with a root key.", reason=Reason.KEY_ROOT_REQUIRED
            )
        now = self._clock.now()
        with self._synced_lock:
            events = [key.last_rotated_at, key.deleted_at, self._synced.get((ctx.tenant, key.id))]
            # state_changed_at is set at creation too; creation is not a lifecycle event to sync.
            if key.state_changed_at is not None and key.state_changed_at != key.created_at:
                events.append(key.state_changed_at)
            last = max((event for event in events if event is not None), default=None)
            if last is not None and now - last < SYNC_INTERVAL:
                raise TooEarly(
                    "The key has been synced or updated (i.e. rotated, restored, disabled, enabled, "
                    "deleted) within the last hour.",
                    reason=Reason.TOO_EARLY,
                )
            self._synced[(ctx.tenant, key.id)] = now
        return key

    def _forget_versions(self, ctx: CallContext, key: Key) -> None:
        """A deleted key's handles leave the HSM at once; restore reloads them on demand."""
        self._backend.evict([v.id for v in self._store.list_versions(ctx.tenant, key.id)])

    # -- aliases ---------------------------------------------------------------------------------

    def add_alias(self, ctx: CallContext, key_id_or_alias: str, alias: str) -> tuple[Key, bool]:
        """Returns (key, created); an alias the key already has is not an error."""
        validation.validate_alias(alias, target="alias")
        key = self.get(ctx, key_id_or_alias)
        # Count inside the transaction that adds, so concurrent additions cannot overrun the quota.
        with self._store.transaction() as tx:
            current = tx.get_key(ctx.tenant, key.id)
            if current is None:
                raise NotFound("Key does not exist", reason=Reason.KEY_NOT_FOUND)
            lifecycle.require_delete(current)  # 410: a deleted key takes no new alias, like any change
            key.aliases = current.aliases
            if alias in key.aliases:
                return key, False
            if len(key.aliases) >= validation.MAX_ALIASES_PER_KEY:
                raise Conflict("A key can have at most 5 aliases", reason=Reason.ALIAS_QUOTA)
            tx.add_alias(ctx.tenant, key.id, alias)
        key.aliases.append(alias)
        self._changed(key)
        return key, True

    def remove_alias(self, ctx: CallContext, key_id_or_alias: str, alias: str) -> None:
        key = self.get(ctx, key_id_or_alias)
        with self._store.transaction() as tx:
            removed = tx.remove_alias(ctx.tenant, key.id, alias)
        self._changed(key)
        if not removed:
            raise NotFound("Alias does not exist", reason=Reason.ALIAS_NOT_FOUND)
