"""Cloud keys and import-material: the same-material rule and the order that keeps records true.

The order of an import, and why:

1. Everything that can be refused locally is refused first: the source tier, the source key
   (a root key of this tenant, usable), the expiry, and the **same-material rule** — the key
   check value of the source version (computed in the HSM) must equal the one recorded for the
   target key, if any. A refusal here (409) happens before any cloud call.
2. The target's import parameters are fetched, the material is wrapped for its public key inside
   the HSM, and the cloud's import call is made.
3. Only then is the record written (source key and version, check value, expiry, the cloud's view).
   A failure in 2 leaves the record exactly as it was: no record claims an import that did not
   happen. (A source key generated in 1 for an import that then fails stays in hsmbridge as an
   ordinary, unused key.)

Reimport uses the recorded version of the recorded source key even if that key rotated since:
"the same key" means the same material.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from hsmbridge.core.backend import KeyRef
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import Key, KeyState, KeyVersion
from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import KeyQuery
from hsmbridge.core.store.push_records import CloudKey, PushConnection
from hsmbridge.errors import Conflict, InvalidInput, NotFound, Reason
from hsmbridge.push.clouds.base import CloudClient, CloudKeySpec, Expiry, ImportParameters, WrappedMaterial
from hsmbridge.push.connections import ConnectionService, require_cloud
from hsmbridge.push.expiry import expiry_from

SOURCE_TIERS = ("local",)
#: bytes of AES material each cloud imports: Key Protect root keys 128/192/256-bit, AWS
#: SYMMETRIC_DEFAULT and Huawei AES_256 only 256-bit
MATERIAL_LENGTHS = {"ibm": (16, 24, 32), "aws": (32,), "huawei": (32,)}


@dataclass(frozen=True, slots=True)
class MaterialRequest:
    """The seed's import-material body."""

    source_key_tier: str | None = None
    source_key_identifier: str | None = None
    key_expiration: object = None
    valid_to: object = None

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> MaterialRequest:
        tier = body.get("source_key_tier")
        ident = body.get("source_key_identifier")
        for name, value in (("source_key_tier", tier), ("source_key_identifier", ident)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"{name} must be a string", reason=Reason.INVALID_FIELD, target=name)
        return cls(tier or None, ident or None, body.get("key_expiration"), body.get("valid_to"))


@dataclass(frozen=True, slots=True)
class _Source:
    key: Key
    version: KeyVersion
    kcv: str
    generated: bool


class PushService:
    def __init__(self, services: Services, connections: ConnectionService) -> None:
        self._services = services
        self._store: Any = services.store
        self._connections = connections

    # -- reads -----------------------------------------------------------------------------------

    def list_keys(self, ctx: CallContext, cloud: str) -> list[CloudKey]:
        return cast(list[CloudKey], self._store.list_cloud_keys(ctx.tenant, require_cloud(cloud)))

    def get_key(self, ctx: CallContext, cloud: str, key_id: str, *, sync: bool = False) -> CloudKey:
        record = self._store.get_cloud_key(ctx.tenant, key_id)
        if record is None or record.cloud != require_cloud(cloud):
            raise NotFound("cloud key not found", reason=Reason.NOT_FOUND)
        if sync:
            client = self._connections.client(self._connections.get(ctx, record.connection_id))
            self._record_view(record, client.describe(record.kms_id), pushed=False)
        return cast(CloudKey, record)

    def connection_of(self, ctx: CallContext, record: CloudKey) -> PushConnection:
        return self._connections.get(ctx, record.connection_id)

    def delete_key(self, ctx: CallContext, cloud: str, key_id: str) -> None:
        """Forget the record; the key in the cloud is left as it is."""
        record = self.get_key(ctx, cloud, key_id)
        with self._store.transaction() as tx:
            tx.delete_cloud_key(ctx.tenant, record.id)

    # -- create or link --------------------------------------------------------------------------

    def create_key(self, ctx: CallContext, cloud: str, body: Mapping[str, Any]) -> CloudKey:
        require_cloud(cloud)
        ref = body.get("connection")
        if not isinstance(ref, str) or not ref:
            raise InvalidInput(
                "connection (id or name) is required", reason=Reason.MISSING_FIELD, target="connection"
            )
        connection = self._connections.get(ctx, ref)
        if connection.cloud != cloud:
            raise InvalidInput(
                f"connection {connection.name!r} is a {connection.cloud} connection, not {cloud}",
                reason=Reason.INVALID_FIELD,
                target="connection",
            )
        kms_id = body.get("kms_id")
        if kms_id is not None and (not isinstance(kms_id, str) or not kms_id):
            raise InvalidInput(
                "kms_id must be the target key's id", reason=Reason.INVALID_FIELD, target="kms_id"
            )
        if kms_id is not None and self._store.find_cloud_key(ctx.tenant, connection.id, kms_id) is not None:
            raise Conflict("this cloud key is already linked", reason=Reason.ALREADY_EXISTS, target="kms_id")
        name = body.get("name") or body.get("alias") or f"hsmbridge-{uuid.uuid4().hex[:12]}"
        description = body.get("description")
        alias = body.get("alias")
        for field, value in (("name", name), ("description", description), ("alias", alias)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"{field} must be a string", reason=Reason.INVALID_FIELD, target=field)
        client = self._connections.client(connection)
        now = self._services.clock.now()
        record = CloudKey(
            tenant=ctx.tenant,
            id=str(uuid.uuid4()),
            cloud=cloud,
            connection_id=connection.id,
            kms_id="",
            created_at=now,
            updated_at=now,
            synced_at=now,
        )
        if kms_id is not None:  # link an existing key of the target
            self._record_view(record, client.describe(kms_id), pushed=False, write=False)
        elif client.creates_with_material:  # Key Protect: a root key is born by secure import
            request = MaterialRequest.from_body(body)
            expiry = expiry_from(request.key_expiration, request.valid_to, now)
            source = self._source(ctx, record, request)
            params = client.import_parameters(None, self._services.backend.export_wrappings())
            material = self._wrap(source, params)
            view = client.create_key(
                CloudKeySpec(name, description, alias), material=material, params=params, expiry=expiry
            )
            self._remember_source(record, source, expiry)
            self._record_view(record, view, pushed=True, write=False)
        else:
            view = client.create_key(CloudKeySpec(name, description, alias))
            self._record_view(record, view, pushed=False, write=False)
        with self._store.transaction() as tx:
            tx.insert_cloud_key(record)
        return record

    # -- import material -------------------------------------------------------------------------

    def import_material(
        self, ctx: CallContext, cloud: str, key_id: str, request: MaterialRequest
    ) -> CloudKey:
        record = self.get_key(ctx, cloud, key_id)
        now = self._services.clock.now()
        expiry = expiry_from(request.key_expiration, request.valid_to, now)
        source = self._source(ctx, record, request)
        client = self._connections.client(self.connection_of(ctx, record))
        params = client.import_parameters(record.kms_id, self._services.backend.export_wrappings())
        view = client.import_material(record.kms_id, params, self._wrap(source, params), expiry)
        self._remember_source(record, source, expiry)
        self._record_view(record, view, pushed=True)
        return record

    def _source(self, ctx: CallContext, record: CloudKey, request: MaterialRequest) -> _Source:
        """Resolve (or generate) the source, and apply the same-material rule: no cloud call yet."""
        tier = request.source_key_tier or "local"
        if tier not in SOURCE_TIERS:
            raise InvalidInput(
                f"source_key_tier {tier!r} is not supported; supported: {', '.join(SOURCE_TIERS)}",
                reason=Reason.INVALID_FIELD,
                target="source_key_tier",
            )
        ident = request.source_key_identifier
        if ident is None:
            if record.kcv is not None:
                raise Conflict(
                    "the cloud key already holds material from local key "
                    f"{record.local_key_id}; a reimport must name that key (source_key_identifier)",
                    reason=Reason.KEY_MATERIAL_MISMATCH,
                    target="source_key_identifier",
                )
            keys = self._services.keys
            key = keys.create(ctx, KeySpec(name=f"cckm-{record.cloud}-{record.id[:8]}"))
            version = keys.current_version(ctx, key)
            ctx.used(key.id, version.id)
            return _Source(key, version, self._services.check_values.of(version) or "", True)
        key = self._local_key(ctx, ident)
        if key.extractable:
            raise InvalidInput(
                "only root keys can be pushed; standard keys are secrets, not AES keys",
                reason=Reason.KEY_ROOT_REQUIRED,
                target="source_key_identifier",
            )
        if key.state is not KeyState.ACTIVE:
            raise Conflict(
                "the source key is not active", reason=Reason.INVALID_STATE, target="source_key_identifier"
            )
        keys = self._services.keys
        version = None
        if record.local_key_id == key.id and record.local_version_id:
            version = keys.version(ctx, record.local_version_id)
        version = version or keys.current_version(ctx, key)
        lengths = MATERIAL_LENGTHS[record.cloud]
        if version.wrapped.length not in lengths:
            bits = "/".join(str(n * 8) for n in lengths)
            raise InvalidInput(
                f"{record.cloud} imports only {bits}-bit keys; "
                f"{key.name!r} is {version.wrapped.length * 8}-bit",
                reason=Reason.INVALID_FIELD,
                target="source_key_identifier",
            )
        kcv = self._services.check_values.of(version) or ""
        if record.kcv is not None and record.kcv != kcv:
            raise Conflict(
                f"the cloud key holds other material (key check value {record.kcv}, from local key "
                f"{record.local_key_id}); a cloud key accepts only the same material again, and "
                f"{key.name!r} has key check value {kcv}",
                reason=Reason.KEY_MATERIAL_MISMATCH,
                target="source_key_identifier",
            )
        ctx.used(key.id, version.id)  # the audit event names the source key and version
        return _Source(key, version, kcv, False)

    def _local_key(self, ctx: CallContext, ident: str) -> Key:
        """By id or alias (KeyService.get), else by name; a name two keys share is ambiguous."""
        try:
            return self._services.keys.get(ctx, ident)
        except NotFound:
            pass
        found: list[Key] = []
        offset = 0
        while True:
            page = self._services.keys.list(ctx, KeyQuery(states=[KeyState.ACTIVE], limit=200, offset=offset))
            found += [k for k in page if k.name == ident]
            if len(page) < 200:
                break
            offset += 200
        if not found:
            raise NotFound(
                f"no local key with id, alias or name {ident!r}",
                reason=Reason.KEY_NOT_FOUND,
                target="source_key_identifier",
            )
        if len(found) > 1:
            raise Conflict(
                f"{len(found)} local keys are named {ident!r}: give the key id",
                reason=Reason.INVALID_STATE,
                target="source_key_identifier",
            )
        return found[0]

    def _wrap(self, source: _Source, params: ImportParameters) -> WrappedMaterial:
        backend = self._services.backend
        encrypted = backend.wrap_for_export(source.version.wrapped, params.public_key_der, params.wrapping)
        if params.nonce is None:
            return WrappedMaterial(encrypted)
        # Key Protect's proof of possession: the token's nonce, AES-GCM-encrypted under the material
        iv, sealed = backend.gcm_encrypt(KeyRef(source.version.id, source.version.wrapped), params.nonce, b"")
        return WrappedMaterial(encrypted, encrypted_nonce=sealed, iv=iv)

    def _remember_source(self, record: CloudKey, source: _Source, expiry: Expiry | None) -> None:
        record.local_key_id = source.key.id
        record.local_key_name = source.key.name
        record.local_version_id = source.version.id
        record.kcv = source.kcv
        record.key_expiration = expiry is not None
        record.valid_to = expiry.text if expiry is not None else None

    def _record_view(self, record: CloudKey, view: Any, *, pushed: bool, write: bool = True) -> None:
        now = self._services.clock.now()
        record.kms_id = view.kms_id
        record.region = view.region or record.region
        record.cloud_params = view.params
        record.synced_at = record.updated_at = now
        if pushed:
            record.pushed_at = now
        if write:
            with self._store.transaction() as tx:
                tx.update_cloud_key(record)


def build(services: Services, clients: Any = None) -> tuple[ConnectionService, PushService]:
    """The push services over the core services; `clients` builds a cloud client (tests swap it)."""
    from hsmbridge.push.clouds import client_for

    connections = ConnectionService(services.store, services.sealer, services.clock, clients or client_for)
    return connections, PushService(services, connections)


__all__ = ["CloudClient", "MaterialRequest", "PushService", "build"]
