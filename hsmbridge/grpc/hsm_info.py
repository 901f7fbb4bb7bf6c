"""HsmService: what the HSM is and what the start-up probe found it can do."""

from __future__ import annotations

import grpc

from hsmbridge.grpc import convert
from hsmbridge.grpc.base import ServicerBase
from hsmbridge.grpc.errors import mapped
from hsmbridge.v1 import hsm_pb2, hsm_pb2_grpc


class HsmServicer(ServicerBase, hsm_pb2_grpc.HsmServiceServicer):
    SERVICE = "hsmbridge.v1.HsmService"

    @mapped
    async def GetHsmInfo(
        self, request: hsm_pb2.GetHsmInfoRequest, context: grpc.aio.ServicerContext
    ) -> hsm_pb2.HsmInfo:
        self.ctx(context)
        return convert.hsm_info(self.services.backend.info())
