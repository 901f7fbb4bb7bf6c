"""KeyService: key lifecycle over gRPC. HSM-heavy calls (generation, RSA import) run in a thread so
the event loop keeps serving wrap/unwrap meanwhile."""

from __future__ import annotations

import asyncio

import grpc

from hsmbridge.core.backend import wipe
from hsmbridge.core.external_keys import ORIGIN_EXTERNAL, ExternalKeyView
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import Key, KeyState
from hsmbridge.core.principal import CallContext
from hsmbridge.core.store.base import KeyQuery
from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.grpc import convert
from hsmbridge.grpc.base import ServicerBase
from hsmbridge.grpc.errors import mapped
from hsmbridge.v1 import keys_pb2, keys_pb2_grpc


def _spec(request: keys_pb2.CreateKeyRequest, **material: object) -> KeySpec:
    return KeySpec(
        name=request.name,
        description=request.description or None,
        extractable=request.extractable,
        aliases=list(request.aliases),
        expires_at=convert.from_timestamp(request.expire_time) if request.HasField("expire_time") else None,
        key_ring=request.key_ring or "default",
        dual_auth_delete=request.dual_auth_delete,
        **material,  # type: ignore[arg-type]
    )


class KeyServicer(ServicerBase, keys_pb2_grpc.KeyServiceServicer):
    SERVICE = "hsmbridge.v1.KeyService"

    def _key(self, ctx: CallContext, key: Key) -> keys_pb2.Key:
        current = self.services.keys.version(ctx, key.current_version_id)
        return convert.key(key, current, self.services.check_values.of(current) if current else None)

    @mapped
    async def CreateKey(
        self, request: keys_pb2.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.Key:
        ctx = self.ctx(context)
        key = await asyncio.to_thread(self.services.keys.create, ctx, _spec(request))
        return self._key(ctx, key)

    @mapped
    async def ImportKey(
        self, request: keys_pb2.ImportKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.Key:
        ctx = self.ctx(context)
        which = request.material.WhichOneof("material")
        if which == "plaintext":
            spec = _spec(request.key, payload=request.material.plaintext)
        elif which == "secure":
            spec = _spec(request.key, secure_import=convert.secure_material(request.material.secure))
        else:
            raise InvalidInput("ImportKey needs key material", reason=Reason.MISSING_FIELD, target="material")
        key = await asyncio.to_thread(self.services.keys.create, ctx, spec)
        return self._key(ctx, key)

    @mapped
    async def GetKey(
        self, request: keys_pb2.GetKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.Key:
        ctx = self.ctx(context)
        return self._key(ctx, self.services.keys.get(ctx, request.key_id))

    @mapped
    async def GetKeyPayload(
        self, request: keys_pb2.GetKeyPayloadRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.GetKeyPayloadResponse:
        ctx = self.ctx(context)
        keys = self.services.keys
        payload = keys.payload(ctx, keys.get(ctx, request.key_id))
        try:
            return keys_pb2.GetKeyPayloadResponse(payload=bytes(payload))
        finally:
            wipe(payload)

    @mapped
    async def ListKeys(
        self, request: keys_pb2.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.ListKeysResponse:
        ctx = self.ctx(context)
        limit = request.limit or 200
        if not 1 <= limit <= 5000 or request.offset < 0:
            raise InvalidInput(
                "limit must be 1–5000 and offset ≥ 0", reason=Reason.INVALID_FIELD, target="limit"
            )
        states = [convert.key_state(s) for s in request.states] or [
            KeyState.ACTIVE,
            KeyState.SUSPENDED,
            KeyState.DEACTIVATED,
        ]
        query = KeyQuery(
            states=states,
            extractable=request.extractable if request.HasField("extractable") else None,
            key_ring=request.key_ring or None,
            limit=limit,
            offset=request.offset,
        )
        keys = self.services.keys.list(ctx, query)
        return keys_pb2.ListKeysResponse(
            keys=[convert.key(k) for k in keys], total=self.services.keys.count(ctx, query)
        )

    @mapped
    async def RotateKey(
        self, request: keys_pb2.RotateKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.Key:
        ctx = self.ctx(context)
        which = request.material.WhichOneof("material") if request.HasField("material") else None
        material: dict[str, object] = {}
        if which == "plaintext":
            material["payload"] = request.material.plaintext
        elif which == "secure":
            material["secure_import"] = convert.secure_material(request.material.secure)
        key = await asyncio.to_thread(self.services.keys.rotate, ctx, request.key_id, **material)  # type: ignore[arg-type]
        return self._key(ctx, key)

    @mapped
    async def SetKeyState(
        self, request: keys_pb2.SetKeyStateRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.Key:
        ctx = self.ctx(context)
        if request.state == keys_pb2.KEY_STATE_ACTIVE:
            key = self.services.keys.enable(ctx, request.key_id)
        elif request.state == keys_pb2.KEY_STATE_SUSPENDED:
            key = self.services.keys.disable(ctx, request.key_id)
        else:
            raise InvalidInput(
                "state must be KEY_STATE_ACTIVE (enable) or KEY_STATE_SUSPENDED (disable)",
                reason=Reason.INVALID_FIELD,
                target="state",
            )
        return self._key(ctx, key)

    @mapped
    async def DeleteKey(
        self, request: keys_pb2.DeleteKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.Key:
        ctx = self.ctx(context)
        return self._key(ctx, self.services.keys.delete(ctx, request.key_id))

    @mapped
    async def ListKeyVersions(
        self, request: keys_pb2.ListKeyVersionsRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.ListKeyVersionsResponse:
        ctx = self.ctx(context)
        versions = self.services.keys.versions(ctx, request.key_id)
        check = self.services.check_values.of
        return keys_pb2.ListKeyVersionsResponse(versions=[convert.key_version(v, check(v)) for v in versions])

    # -- bring-your-own-key (core/external_keys.py) -----------------------------------------------

    def _external(self, ctx: CallContext, view: ExternalKeyView) -> keys_pb2.ExternalKey:
        record = view.record
        return keys_pb2.ExternalKey(
            key=self._key(ctx, view.key) if record.material_present else convert.key(view.key),
            alias=record.alias,
            description=record.description,
            material_present=view.material_usable,
            material_expire_time=convert.timestamp(record.material_expires_at),
            scheduled_deletion_time=convert.timestamp(record.scheduled_deletion_at),
        )

    @mapped
    async def CreateExternalKey(
        self, request: keys_pb2.CreateExternalKeyRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.ExternalKey:
        ctx = self.ctx(context)
        if not request.alias:
            raise InvalidInput("an alias is required", reason=Reason.MISSING_FIELD, target="alias")
        view = await asyncio.to_thread(
            self.services.external_keys.create,
            ctx,
            alias=request.alias,
            description=request.description,
            origin=ORIGIN_EXTERNAL,
        )
        return self._external(ctx, view)

    @mapped
    async def ImportKeyMaterial(
        self, request: keys_pb2.ImportKeyMaterialRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.ExternalKey:
        ctx = self.ctx(context)
        expires = (
            convert.from_timestamp(request.material_expire_time)
            if request.HasField("material_expire_time")
            else None
        )
        view = await asyncio.to_thread(
            self.services.external_keys.import_material,
            ctx,
            request.key_id,
            import_token=request.import_token,
            encrypted_material=request.encrypted_key_material,
            expires_at=expires,
        )
        return self._external(ctx, view)

    @mapped
    async def DeleteKeyMaterial(
        self, request: keys_pb2.DeleteKeyMaterialRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.ExternalKey:
        ctx = self.ctx(context)
        view = await asyncio.to_thread(self.services.external_keys.delete_material, ctx, request.key_id)
        return self._external(ctx, view)
