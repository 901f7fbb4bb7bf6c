"""Keys whose material the owner brings: pending import, bound import parameters, expiring material,
deletion of the material, reimport of the same material, and deletion scheduled days ahead.

Why in the core: this is the bring-your-own-key model of Huawei KMS (and AWS KMS), not a wire
detail; a dialect adapter only spells it. The pieces reuse what exists:
- the key itself is a core `Key` (state, versions, envelope encryption through `EnvelopeService`);
  what the core `Key` has no column for lives in `external_keys` (migration 003);
- import parameters take an RSA keypair from the import-keypair pool, and the import token is the
  binding (key id, tenant, keypair, wrapping, expiry) sealed under an HSM-held key
  (core/sealing.py), plus an `import_parameters` row so that a token is used once;
- the material is RSA-unwrapped inside the HSM into an AES key and wrapped under the master KEK
  like every imported key (`CryptoBackend.import_wrapped_key`);
- "the same material" on reimport is checked inside the HSM the way Key Protect's restore checks
  it: a constant sealed under the first material must open under the new one. The seal is kept
  after the material is deleted; it reveals nothing about the key.

Errors carry a dialect-neutral `CONDITION` in their metadata (``pending_import``,
``pending_deletion``…), so an adapter picks its own code without the core knowing any.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from base64 import b64decode, b64encode
from binascii import Error as BinasciiError
from dataclasses import dataclass
from datetime import datetime, timedelta

from hsmbridge.core.backend import CryptoBackend, KeyRef, KeyWrapping, MaterialKind, wipe
from hsmbridge.core.clock import Clock
from hsmbridge.core.import_tokens import ImportTokenService
from hsmbridge.core.keys import KeyService
from hsmbridge.core.model import Key, KeyState, KeyVersion, WrappedKey
from hsmbridge.core.principal import CallContext
from hsmbridge.core.sealing import Sealer
from hsmbridge.core.store.base import Store
from hsmbridge.core.store.external import ExternalKey, ImportParameters
from hsmbridge.errors import (
    Conflict,
    HsmBridgeError,
    IntegrityError,
    InvalidInput,
    NotFound,
    Reason,
)

log = logging.getLogger(__name__)

#: Metadata key naming which rule refused an operation (for the adapters' error codes).
CONDITION = "condition"
PENDING_IMPORT = "pending_import"
NOT_PENDING_IMPORT = "not_pending_import"
NOT_EXTERNAL = "not_external"
PENDING_DELETION = "pending_deletion"
NOT_PENDING_DELETION = "not_pending_deletion"
DISABLED = "disabled"
NOT_DISABLED = "not_disabled"
NOT_ENABLED = "not_enabled"
MATERIAL_MISMATCH = "material_mismatch"
TOKEN_REJECTED = "token_rejected"

ORIGIN_KMS = "kms"
ORIGIN_EXTERNAL = "external"
#: Expired material is unusable at once and deleted this long after (Huawei's seed 004).
MATERIAL_DELETION_DELAY = timedelta(hours=24)
IMPORT_PARAMETERS_TTL = timedelta(hours=24)
IMPORT_KEY_BITS = 2048
_SEAL_PURPOSE = "import-parameters"
_CHECK_PROBE = b"hsmbridge external key material check"
_CHECK_ID = "material-check-"


def refused(error: HsmBridgeError, condition: str) -> HsmBridgeError:
    error.metadata[CONDITION] = condition
    return error


def _state_error(message: str, condition: str) -> HsmBridgeError:
    return refused(Conflict(message, reason=Reason.INVALID_STATE), condition)


def _token_error() -> HsmBridgeError:
    # One answer for tampered, expired, reused and foreign tokens: the caller learns nothing more.
    return refused(
        InvalidInput("Invalid import_token.", reason=Reason.INVALID_FIELD, target="import_token"),
        TOKEN_REJECTED,
    )


@dataclass(frozen=True, slots=True)
class ExternalKeyView:
    """A key as the BYOK model sees it at one instant."""

    key: Key
    record: ExternalKey
    now: datetime

    @property
    def material_usable(self) -> bool:
        expires = self.record.material_expires_at
        return self.record.material_present and (expires is None or self.now < expires)

    @property
    def pending_deletion(self) -> bool:
        return self.record.scheduled_deletion_at is not None


@dataclass(frozen=True, slots=True)
class BoundImportParameters:
    public_key_der: bytes
    import_token: str
    expires_at: datetime


class ExternalKeyService:
    def __init__(
        self,
        store: Store,
        keys: KeyService,
        backend: CryptoBackend,
        clock: Clock,
        import_tokens: ImportTokenService,
        sealer: Sealer,
    ) -> None:
        self._store = store
        self._keys = keys
        self._backend = backend
        self._clock = clock
        self._import_tokens = import_tokens
        self._sealer = sealer
        #: RSAES-PKCS1-v1_5 import wrapping (a padding-oracle risk): off unless the operator sets
        #: ``huawei.allow_pkcs1_v15`` (the daemon copies it here, for every transport).
        self.allow_pkcs1_v15 = False

    # -- create and read ---------------------------------------------------------------------

    def create(self, ctx: CallContext, *, alias: str, description: str, origin: str) -> ExternalKeyView:
        """A new key: with generated material (``kms``) or pending import (``external``)."""
        if origin not in (ORIGIN_KMS, ORIGIN_EXTERNAL):
            raise InvalidInput("Invalid origin.", reason=Reason.INVALID_FIELD, target="origin")
        now = self._clock.now()
        key_id = str(uuid.uuid4())
        version = None
        if origin == ORIGIN_KMS:
            wrapped = self._backend.generate_key(MaterialKind.AES, 32)
            version = KeyVersion(
                id=key_id, key_id=key_id, tenant=ctx.tenant, number=1, created_at=now, wrapped=wrapped
            )
        key = Key(
            id=key_id,
            tenant=ctx.tenant,
            name=key_id,
            extractable=False,
            imported=origin == ORIGIN_EXTERNAL,
            state=KeyState.ACTIVE,
            created_at=now,
            created_by=ctx.actor,
            updated_at=now,
            current_version_id=key_id,
            state_changed_at=now,
        )
        record = ExternalKey(
            tenant=ctx.tenant,
            key_id=key_id,
            alias=alias,
            description=description,
            origin=origin,
            material_present=version is not None,
            material_version_id=key_id,
            created_at=now,
        )
        with self._store.transaction() as tx:
            tx.ensure_tenant(ctx.tenant, now)
            tx.insert_key(key, version)
            tx.external.put_external_key(record)
        ctx.used(key_id, version.id if version else None)
        return ExternalKeyView(key, record, now)

    def get(self, ctx: CallContext, key_id: str) -> ExternalKeyView:
        key = self._keys.get(ctx, key_id)
        with self._store.transaction() as tx:
            record = tx.external.get_external_key(ctx.tenant, key.id)
        if record is None:  # a key of this tenant made through another API: not one of ours
            raise NotFound("Key does not exist", reason=Reason.KEY_NOT_FOUND)
        view = ExternalKeyView(key, record, self._clock.now())
        return self._apply_due(ctx, view)

    def list(self, ctx: CallContext, *, after: str | None, limit: int) -> tuple[list[ExternalKeyView], int]:
        with self._store.transaction() as tx:
            records = tx.external.list_external_keys(ctx.tenant, after=after, limit=limit)
            total = tx.external.count_external_keys(ctx.tenant)
        now = self._clock.now()
        views = []
        for record in records:
            key = self._store.get_key(ctx.tenant, record.key_id)
            if key is not None:
                views.append(ExternalKeyView(key, record, now))
        return views, total

    def for_use(self, ctx: CallContext, key_id: str) -> ExternalKeyView:
        """The key, refused unless it can encrypt now: enabled, with usable material."""
        view = self.get(ctx, key_id)
        if view.pending_deletion:
            raise _state_error(
                "The key is in the Pending deletion status and cannot be used.", PENDING_DELETION
            )
        if not view.material_usable:
            raise _state_error("The key is pending import and cannot be used.", PENDING_IMPORT)
        if view.key.state is not KeyState.ACTIVE:
            raise _state_error("The key has been disabled and cannot be used.", DISABLED)
        return view

    def _write(
        self, ctx: CallContext, view: ExternalKeyView, record: ExternalKey, key: Key | None = None
    ) -> None:
        with self._store.transaction() as tx:
            if key is not None:
                key.updated_at = self._clock.now()
                tx.update_key(key)
            tx.external.put_external_key(record)
        self._keys.invalidate(view.key)

    # -- metadata and state ------------------------------------------------------------------

    def set_alias(self, ctx: CallContext, key_id: str, alias: str) -> ExternalKeyView:
        view = self._mutable(ctx, key_id)
        record = view.record.but(alias=alias)
        self._write(ctx, view, record)
        return ExternalKeyView(view.key, record, view.now)

    def set_description(self, ctx: CallContext, key_id: str, description: str) -> ExternalKeyView:
        view = self._mutable(ctx, key_id)
        record = view.record.but(description=description)
        self._write(ctx, view, record)
        return ExternalKeyView(view.key, record, view.now)

    def _mutable(self, ctx: CallContext, key_id: str) -> ExternalKeyView:
        view = self.get(ctx, key_id)
        if view.pending_deletion:
            raise _state_error("The key is in the Pending deletion status.", PENDING_DELETION)
        return view

    def enable(self, ctx: CallContext, key_id: str) -> ExternalKeyView:
        view = self._mutable(ctx, key_id)
        if view.key.state is not KeyState.SUSPENDED:
            raise _state_error("The key is not disabled.", NOT_DISABLED)
        return self._set_state(ctx, view, KeyState.ACTIVE)

    def disable(self, ctx: CallContext, key_id: str) -> ExternalKeyView:
        view = self._mutable(ctx, key_id)
        if view.key.state is not KeyState.ACTIVE or not view.material_usable:
            raise _state_error("The key is not enabled.", NOT_ENABLED)
        return self._set_state(ctx, view, KeyState.SUSPENDED)

    def _set_state(self, ctx: CallContext, view: ExternalKeyView, state: KeyState) -> ExternalKeyView:
        key = view.key
        key.state = state
        key.state_changed_at = self._clock.now()
        self._write(ctx, view, view.record, key)
        return ExternalKeyView(key, view.record, view.now)

    def schedule_deletion(self, ctx: CallContext, key_id: str, pending_days: int) -> ExternalKeyView:
        """Unusable at once (the key is disabled), deleted for good `pending_days` later."""
        view = self.get(ctx, key_id)
        if view.pending_deletion:
            raise _state_error("The key is in the Pending deletion status.", PENDING_DELETION)
        key = view.key
        key.state = KeyState.SUSPENDED
        key.state_changed_at = view.now
        record = view.record.but(scheduled_deletion_at=view.now + timedelta(days=pending_days))
        self._write(ctx, view, record, key)
        self._forget_cached(key)
        return ExternalKeyView(key, record, view.now)

    def cancel_deletion(self, ctx: CallContext, key_id: str) -> ExternalKeyView:
        """The key comes back disabled, as Huawei's and AWS's do."""
        view = self.get(ctx, key_id)
        if not view.pending_deletion:
            raise _state_error("The key is not in the Pending deletion status.", NOT_PENDING_DELETION)
        record = view.record.but(scheduled_deletion_at=None)
        self._write(ctx, view, record)
        return ExternalKeyView(view.key, record, view.now)

    # -- import ------------------------------------------------------------------------------

    def _require_pending_import(self, view: ExternalKeyView) -> None:
        if view.record.origin != ORIGIN_EXTERNAL:
            raise _state_error("The key must be an imported one.", NOT_EXTERNAL)
        if view.pending_deletion:
            raise _state_error("The key is in the Pending deletion status.", PENDING_DELETION)
        if view.material_usable:
            raise _state_error("The key is not in the Pending import status.", NOT_PENDING_IMPORT)

    def import_parameters(
        self, ctx: CallContext, key_id: str, wrapping: KeyWrapping
    ) -> BoundImportParameters:
        """An RSA-2048 public key generated in the HSM and a token binding it to this key."""
        if wrapping is KeyWrapping.PKCS1_V15 and not self.allow_pkcs1_v15:
            raise InvalidInput(
                "RSAES_PKCS1_V1_5 wrapping is disabled because PKCS#1 v1.5 decryption is open to "
                "padding-oracle attacks; use RSA-OAEP, or set huawei.allow_pkcs1_v15 = true.",
                reason=Reason.INVALID_FIELD,
                target="wrapping_algorithm",
            )
        view = self.get(ctx, key_id)
        self._require_pending_import(view)
        pool = self._import_tokens.pool
        pooled = pool.take(IMPORT_KEY_BITS) if pool is not None else None
        if pooled is not None:
            object_id, public_der = pooled.object_id, pooled.public_key_der
        else:
            object_id = uuid.uuid4().hex
            public_der = self._backend.create_import_keypair(object_id, IMPORT_KEY_BITS)
        now = self._clock.now()
        expires = now + IMPORT_PARAMETERS_TTL
        token_id = str(uuid.uuid4())
        binding = {
            "id": token_id,
            "key_id": view.key.id,
            "tenant": ctx.tenant,
            "keypair": object_id,
            "wrapping": wrapping.value,
            "expires": int(expires.timestamp()),
            "spki_sha256": _sha256_hex(public_der),
        }
        try:
            sealed = self._sealer.seal(_SEAL_PURPOSE, json.dumps(binding).encode(), ctx.tenant.encode())
            with self._store.transaction() as tx:
                tx.external.insert_import_parameters(
                    ImportParameters(ctx.tenant, token_id, view.key.id, object_id, expires)
                )
        except BaseException:
            self._destroy_keypair(object_id)
            raise
        ctx.used(view.key.id)
        return BoundImportParameters(public_der, b64encode(sealed).decode(), expires)

    def _open_token(self, ctx: CallContext, key_id: str, token: str) -> tuple[dict[str, object], KeyWrapping]:
        try:
            sealed = b64decode(token, validate=True)
            opened = self._sealer.open(_SEAL_PURPOSE, sealed, ctx.tenant.encode())
        except (BinasciiError, ValueError, HsmBridgeError):
            raise _token_error() from None
        try:
            binding = json.loads(bytes(opened))
        except ValueError:
            raise _token_error() from None
        finally:
            wipe(opened)
        if (
            not isinstance(binding, dict)
            or binding.get("tenant") != ctx.tenant
            or binding.get("key_id") != key_id
            or not isinstance(binding.get("expires"), int)
            or binding["expires"] <= self._clock.now().timestamp()
        ):
            raise _token_error()
        try:
            wrapping = KeyWrapping(binding.get("wrapping"))
        except ValueError:
            raise _token_error() from None
        return binding, wrapping

    def import_material(
        self,
        ctx: CallContext,
        key_id: str,
        *,
        import_token: str,
        encrypted_material: bytes,
        expires_at: datetime | None = None,
    ) -> ExternalKeyView:
        view = self.get(ctx, key_id)
        self._require_pending_import(view)
        now = self._clock.now()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput(
                "Invalid expiration_time.", reason=Reason.INVALID_FIELD, target="expiration_time"
            )
        binding, wrapping = self._open_token(ctx, view.key.id, import_token)
        try:
            with self._store.transaction() as tx:
                used = tx.external.consume_import_parameters(ctx.tenant, str(binding["id"]))
        except NotFound:
            raise _token_error() from None
        object_id = used.hsm_object_id
        if object_id != binding.get("keypair"):
            raise _token_error()
        try:
            wrapped = self._backend.import_wrapped_key(object_id, encrypted_material, wrapping)
        except IntegrityError:
            raise InvalidInput(
                "Invalid encrypted_key_material: it does not decrypt with the import parameters.",
                reason=Reason.INVALID_FIELD,
                target="encrypted_key_material",
            ) from None
        finally:
            self._destroy_keypair(object_id)  # single use: the keypair never unwraps again
        if wrapped.length != 32:
            raise InvalidInput(
                "Invalid encrypted_key_material: the key material must be 256 bits.",
                reason=Reason.INVALID_FIELD,
                target="encrypted_key_material",
            )
        version_id = view.record.material_version_id or view.key.id
        check = self._material_check(version_id, wrapped, view.record.material_check)
        version = KeyVersion(
            id=version_id, key_id=view.key.id, tenant=ctx.tenant, number=1, created_at=now, wrapped=wrapped
        )
        key = view.key
        key.current_version_id = version_id
        key.state = KeyState.ACTIVE
        key.state_changed_at = now
        key.updated_at = now
        record = view.record.but(
            material_present=True,
            material_version_id=version_id,
            material_check=check,
            material_expires_at=expires_at,
        )
        with self._store.transaction() as tx:
            tx.external.delete_key_versions(ctx.tenant, key.id)
            tx.add_version(version)
            tx.update_key(key)
            tx.external.put_external_key(record)
        self._forget_cached(key)
        ctx.used(key.id, version_id)
        return ExternalKeyView(key, record, now)

    def _material_check(self, version_id: str, candidate: WrappedKey, previous: bytes | None) -> bytes:
        """Prove a reimport is the first material (inside the HSM), or make the proof for later.

        The check value is the probe GCM-sealed under the material: iv ‖ ciphertext ‖ tag.
        """
        probe_id = _CHECK_ID + str(uuid.uuid4())
        ref = KeyRef(probe_id, candidate)
        try:
            if previous is not None:
                try:
                    opened = self._backend.gcm_decrypt(ref, previous[:12], previous[12:], version_id.encode())
                except IntegrityError:
                    raise refused(
                        InvalidInput(
                            "The key material must be the same as the key material imported before.",
                            reason=Reason.INVALID_FIELD,
                            target="encrypted_key_material",
                        ),
                        MATERIAL_MISMATCH,
                    ) from None
                wipe(opened)
                return previous
            iv, sealed = self._backend.gcm_encrypt(ref, _CHECK_PROBE, version_id.encode())
            return iv + sealed
        finally:
            self._backend.evict([probe_id])

    def delete_material(self, ctx: CallContext, key_id: str) -> ExternalKeyView:
        """Destroy the stored material now; the key returns to pending import."""
        view = self.get(ctx, key_id)
        if view.record.origin != ORIGIN_EXTERNAL:
            raise _state_error("The key must be an imported one.", NOT_EXTERNAL)
        if view.pending_deletion:
            raise _state_error("The key is in the Pending deletion status.", PENDING_DELETION)
        if not view.record.material_present:
            raise _state_error("The key is pending import.", PENDING_IMPORT)
        return self._forget_material(view)

    def _forget_material(self, view: ExternalKeyView) -> ExternalKeyView:
        record = view.record.but(material_present=False, material_expires_at=None)
        with self._store.transaction() as tx:
            tx.external.delete_key_versions(view.key.tenant, view.key.id)
            tx.external.put_external_key(record)
        self._forget_cached(view.key)
        return ExternalKeyView(view.key, record, view.now)

    def _forget_cached(self, key: Key) -> None:
        """No process-local cache may keep using material that is gone or a key that changed."""
        self._keys.invalidate(key)
        self._keys.forget_versions([key.current_version_id])
        self._backend.evict([key.current_version_id])

    # -- time ---------------------------------------------------------------------------------

    def _apply_due(self, ctx: CallContext, view: ExternalKeyView) -> ExternalKeyView:
        """Lazily do what the sweeper would: delete expired material 24 h on, delete due keys."""
        record = view.record
        if record.scheduled_deletion_at is not None and record.scheduled_deletion_at <= view.now:
            self._purge(ctx.tenant, view.key)
            raise NotFound("Key does not exist", reason=Reason.KEY_NOT_FOUND)
        expires = record.material_expires_at
        if record.material_present and expires is not None and expires + MATERIAL_DELETION_DELAY <= view.now:
            return self._forget_material(view)
        return view

    def _purge(self, tenant: str, key: Key) -> None:
        with self._store.transaction() as tx:
            tx.purge_key(tenant, key.id)
        self._forget_cached(key)

    def sweep(self) -> int:
        """All tenants: purge keys whose scheduled deletion is due, delete material 24 h after it
        expired, destroy the keypairs of expired import parameters. Returns how many were done."""
        now = self._clock.now()
        done = 0
        with self._store.transaction() as tx:
            due = tx.external.list_external_keys_due(now)
            expired_tokens = tx.external.list_import_parameters_expired(now)
        for record in due:
            key = self._store.get_key(record.tenant, record.key_id)
            if key is None:
                continue
            if record.scheduled_deletion_at is not None and record.scheduled_deletion_at <= now:
                self._purge(record.tenant, key)
                done += 1
            elif (
                record.material_expires_at is not None
                and record.material_expires_at + MATERIAL_DELETION_DELAY <= now
            ):
                self._forget_material(ExternalKeyView(key, record, now))
                done += 1
        for token in expired_tokens:
            if not token.used:  # a used token's keypair was destroyed when it was used
                self._destroy_keypair(token.hsm_object_id)
                done += 1
            with self._store.transaction() as tx:
                tx.external.delete_import_parameters(token.tenant, token.id)
        return done

    def _destroy_keypair(self, object_id: str) -> None:
        try:
            self._backend.destroy_import_keypair(object_id)
        except HsmBridgeError as exc:
            log.warning("could not destroy import keypair %s: %s", object_id, exc.reason)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
