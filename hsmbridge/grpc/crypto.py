"""CryptoService: wrap, unwrap, rewrap. These are the hot path: they run on the event loop
(one short HSM call each, no thread hand-off) and wipe every plaintext buffer they own."""

from __future__ import annotations

import grpc

from hsmbridge.core.backend import wipe
from hsmbridge.grpc.base import ServicerBase
from hsmbridge.grpc.errors import mapped
from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc


class CryptoServicer(ServicerBase, crypto_pb2_grpc.CryptoServiceServicer):
    @mapped
    async def Wrap(
        self, request: crypto_pb2.WrapRequest, context: grpc.aio.ServicerContext
    ) -> crypto_pb2.WrapResponse:
        ctx = self.ctx(context)
        result = self.services.envelopes.wrap(ctx, request.key_id, request.plaintext or None, request.aad)
        response = crypto_pb2.WrapResponse(ciphertext=result.ciphertext, key_version_id=result.key_version_id)
        if result.generated_plaintext is not None:
            response.plaintext = bytes(result.generated_plaintext)
            wipe(result.generated_plaintext)
        return response

    @mapped
    async def Unwrap(
        self, request: crypto_pb2.UnwrapRequest, context: grpc.aio.ServicerContext
    ) -> crypto_pb2.UnwrapResponse:
        ctx = self.ctx(context)
        result = self.services.envelopes.unwrap(ctx, request.key_id, request.ciphertext, request.aad)
        try:
            return crypto_pb2.UnwrapResponse(
                plaintext=bytes(result.plaintext),
                key_version_id=result.key_version_id,
                rewrapped_ciphertext=result.rewrapped_ciphertext or b"",
                rewrapped_key_version_id=result.rewrapped_key_version_id or "",
            )
        finally:
            wipe(result.plaintext)

    @mapped
    async def Rewrap(
        self, request: crypto_pb2.RewrapRequest, context: grpc.aio.ServicerContext
    ) -> crypto_pb2.RewrapResponse:
        ctx = self.ctx(context)
        result = self.services.envelopes.rewrap(ctx, request.key_id, request.ciphertext, request.aad)
        return crypto_pb2.RewrapResponse(
            ciphertext=result.ciphertext,
            key_version_id=result.key_version_id,
            rewrapped_key_version_id=result.rewrapped_key_version_id,
        )
