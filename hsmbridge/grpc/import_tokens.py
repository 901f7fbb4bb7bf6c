"""ImportTokenService: RSA keygen takes ≈1 s for 4,096 bits, so creation runs in a thread."""

from __future__ import annotations

import asyncio

import grpc

from hsmbridge.core.backend import KeyWrapping
from hsmbridge.core.import_tokens import DEFAULT_EXPIRATION, DEFAULT_KEY_BITS
from hsmbridge.errors import InvalidInput, Reason
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

    @mapped
    async def GetImportParameters(
        self, request: import_tokens_pb2.GetImportParametersRequest, context: grpc.aio.ServicerContext
    ) -> import_tokens_pb2.ImportParameters:
        ctx = self.ctx(context)
        wrapping = _WRAPPING.get(request.wrapping)
        if wrapping is None:
            raise InvalidInput("unknown key wrapping", reason=Reason.INVALID_FIELD, target="wrapping")
        params = await asyncio.to_thread(
            self.services.external_keys.import_parameters, ctx, request.key_id, wrapping
        )
        return import_tokens_pb2.ImportParameters(
            key_id=request.key_id,
            public_key_der=params.public_key_der,
            import_token=params.import_token,
            expire_time=convert.timestamp(params.expires_at),
        )


_WRAPPING = {
    import_tokens_pb2.KEY_WRAPPING_UNSPECIFIED: KeyWrapping.OAEP_SHA256,
    import_tokens_pb2.KEY_WRAPPING_RSA_OAEP_SHA256: KeyWrapping.OAEP_SHA256,
    import_tokens_pb2.KEY_WRAPPING_RSA_OAEP_SHA1: KeyWrapping.OAEP_SHA1,
    import_tokens_pb2.KEY_WRAPPING_RSA_PKCS1_V1_5: KeyWrapping.PKCS1_V15,
}
