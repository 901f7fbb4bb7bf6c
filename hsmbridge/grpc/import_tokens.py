"""ImportTokenService: RSA keygen takes ≈1 s for 4,096 bits, so creation runs in a thread."""

from __future__ import annotations

import asyncio

import grpc

from hsmbridge.core.import_tokens import DEFAULT_EXPIRATION, DEFAULT_KEY_BITS
from hsmbridge.grpc import convert
from hsmbridge.grpc.base import ServicerBase
from hsmbridge.grpc.errors import mapped
from hsmbridge.v1 import import_tokens_pb2, import_tokens_pb2_grpc


class ImportTokenServicer(ServicerBase, import_tokens_pb2_grpc.ImportTokenServiceServicer):
    SERVICE = "hsmbridge.v1.ImportTokenService"

    @mapped
    async def CreateImportToken(
        self, request: import_tokens_pb2.CreateImportTokenRequest, context: grpc.aio.ServicerContext
    ) -> import_tokens_pb2.ImportToken:
        ctx = self.ctx(context)
        token = await asyncio.to_thread(
            self.services.import_tokens.create,
            ctx,
            expiration_seconds=request.expiration_seconds or DEFAULT_EXPIRATION,
            max_retrievals=request.max_retrievals or 1,
            key_bits=request.key_bits or DEFAULT_KEY_BITS,
        )
        return convert.import_token(token, with_secret=False)

    @mapped
    async def GetImportToken(
        self, request: import_tokens_pb2.GetImportTokenRequest, context: grpc.aio.ServicerContext
    ) -> import_tokens_pb2.ImportToken:
        ctx = self.ctx(context)
        return convert.import_token(self.services.import_tokens.retrieve(ctx), with_secret=True)
