"""gRPC adapter of the cloud push: `hsmbridge.v1.PushService`, the same operations as the REST
routes (push/rest.py) over the same services, through the same gate (`mapped`)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from google.protobuf import struct_pb2
from google.protobuf.json_format import ParseDict

from hsmbridge.core.store.push_records import CloudKey, PushConnection
from hsmbridge.grpc.base import ServicerBase
from hsmbridge.grpc.convert import timestamp
from hsmbridge.grpc.errors import mapped
from hsmbridge.push.service import MaterialRequest, build
from hsmbridge.v1 import push_pb2, push_pb2_grpc


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    ParseDict(_jsonable(value), out)
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def connection_message(conn: PushConnection) -> push_pb2.Connection:
    settings = {k: str(v) for k, v in conn.settings.items() if k != "secrets_set"}
    return push_pb2.Connection(
        id=conn.id,
        name=conn.name,
        cloud=conn.cloud,
        settings=settings,
        secrets_set=list(conn.settings.get("secrets_set", [])),
        created_by=conn.created_by,
        create_time=timestamp(conn.created_at),
        update_time=timestamp(conn.updated_at),
    )


def cloud_key_message(key: CloudKey) -> push_pb2.CloudKey:
    return push_pb2.CloudKey(
        id=key.id,
        cloud=key.cloud,
        connection_id=key.connection_id,
        kms_id=key.kms_id,
        region=key.region or "",
        local_key_id=key.local_key_id or "",
        local_key_name=key.local_key_name or "",
        local_key_version_id=key.local_version_id or "",
        key_check_value=key.kcv or "",
        key_expiration=key.key_expiration,
        valid_to=key.valid_to or "",
        cloud_params=_struct(key.cloud_params),
        key_material_origin="hsmbridge" if key.pushed_at else "",
        synced_time=timestamp(key.synced_at),
        push_time=timestamp(key.pushed_at),
        create_time=timestamp(key.created_at),
        update_time=timestamp(key.updated_at),
    )


def _source(source: push_pb2.MaterialSource) -> dict[str, Any]:
    return {
        "source_key_tier": source.source_key_tier or None,
        "source_key_identifier": source.source_key_identifier or None,
        "key_expiration": source.key_expiration,
        "valid_to": source.valid_to or None,
    }


class PushServicer(ServicerBase, push_pb2_grpc.PushServiceServicer):
    SERVICE = "hsmbridge.v1.PushService"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections, self.push = build(self.services)

    @mapped
    async def CreateConnection(
        self, request: push_pb2.CreateConnectionRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.Connection:
        body: dict[str, Any] = {
            "name": request.name,
            "cloud": request.cloud,
            **request.settings,
            **request.secrets,
        }
        if request.timeout:
            body["timeout"] = request.timeout
        conn = await asyncio.to_thread(self.connections.create, self.ctx(context), body)
        return connection_message(conn)

    @mapped
    async def ListConnections(
        self, request: push_pb2.ListConnectionsRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.ListConnectionsResponse:
        found = self.connections.list(self.ctx(context))
        return push_pb2.ListConnectionsResponse(connections=[connection_message(c) for c in found])

    @mapped
    async def GetConnection(
        self, request: push_pb2.GetConnectionRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.Connection:
        return connection_message(self.connections.get(self.ctx(context), request.connection))

    @mapped
    async def DeleteConnection(
        self, request: push_pb2.DeleteConnectionRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.DeleteConnectionResponse:
        await asyncio.to_thread(self.connections.delete, self.ctx(context), request.connection)
        return push_pb2.DeleteConnectionResponse()

    @mapped
    async def TestConnection(
        self, request: push_pb2.TestConnectionRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.TestConnectionResponse:
        result = await asyncio.to_thread(self.connections.test, self.ctx(context), request.connection)
        return push_pb2.TestConnectionResponse(ok=bool(result.get("ok")), details=_struct(result))

    @mapped
    async def CreateCloudKey(
        self, request: push_pb2.CreateCloudKeyRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.CloudKey:
        body = {
            "connection": request.connection,
            "name": request.name or None,
            "description": request.description or None,
            "alias": request.alias or None,
            "kms_id": request.kms_id or None,
            **_source(request.source),
        }
        key = await asyncio.to_thread(self.push.create_key, self.ctx(context), request.cloud, body)
        return cloud_key_message(key)

    @mapped
    async def ListCloudKeys(
        self, request: push_pb2.ListCloudKeysRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.ListCloudKeysResponse:
        found = self.push.list_keys(self.ctx(context), request.cloud)
        return push_pb2.ListCloudKeysResponse(keys=[cloud_key_message(k) for k in found])

    @mapped
    async def GetCloudKey(
        self, request: push_pb2.GetCloudKeyRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.CloudKey:
        ctx = self.ctx(context)
        key = await asyncio.to_thread(self.push.get_key, ctx, request.cloud, request.id, sync=request.sync)
        return cloud_key_message(key)

    @mapped
    async def DeleteCloudKey(
        self, request: push_pb2.DeleteCloudKeyRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.DeleteCloudKeyResponse:
        await asyncio.to_thread(self.push.delete_key, self.ctx(context), request.cloud, request.id)
        return push_pb2.DeleteCloudKeyResponse()

    @mapped
    async def ImportMaterial(
        self, request: push_pb2.ImportMaterialRequest, context: grpc.aio.ServicerContext
    ) -> push_pb2.CloudKey:
        material = MaterialRequest.from_body(_source(request.source))
        ctx = self.ctx(context)
        key = await asyncio.to_thread(self.push.import_material, ctx, request.cloud, request.id, material)
        return cloud_key_message(key)


def register(server: grpc.aio.Server, services: Any, authenticator: Any, gate: Any) -> str:
    """Called by grpc/server.py; returns the service name for reflection and health."""
    push_pb2_grpc.add_PushServiceServicer_to_server(PushServicer(services, authenticator, gate), server)
    return push_pb2.DESCRIPTOR.services_by_name["PushService"].full_name
