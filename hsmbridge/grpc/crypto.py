"""CryptoService: wrap, unwrap, rewrap. These are the hot path: they run on the event loop
(one short HSM call each, no thread hand-off) and wipe every plaintext buffer they own."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sized

import grpc

from hsmbridge.core.backend import wipe
from hsmbridge.core.envelopes import RewrapOutcome, UnwrapOutcome, WrapOutcome
from hsmbridge.core.principal import CallContext
from hsmbridge.errors import HsmBridgeError, InternalError, InvalidInput, Reason
from hsmbridge.grpc.base import ServicerBase
from hsmbridge.grpc.context import CORRELATION_KEY, metadata_of, tenant_of
from hsmbridge.grpc.errors import MAX_BATCH_ITEMS, batch_cost, mapped, status_proto, to_status
from hsmbridge.security.authz import rpc_action
from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc

log = logging.getLogger(__name__)


class CryptoServicer(ServicerBase, crypto_pb2_grpc.CryptoServiceServicer):
    SERVICE = "hsmbridge.v1.CryptoService"

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


# --- batches and the bulk stream -----------------------------------------------------------------


# Items are read straight from the protobuf request (no per-item copy; an item's empty key id
# means the batch's). An OK item's status is left unset: an unset google.rpc.Status reads as
# code 0 = OK in every protobuf runtime, and copying one into each result was 3 µs per item.


def wrap_batch_response(outcomes: list[WrapOutcome]) -> crypto_pb2.WrapBatchResponse:
    response = crypto_pb2.WrapBatchResponse()
    add = response.results.add
    for outcome in outcomes:
        result = add()
        if isinstance(outcome, HsmBridgeError):
            result.status.CopyFrom(status_proto(outcome))
            continue
        result.response.ciphertext = outcome.ciphertext
        result.response.key_version_id = outcome.key_version_id
        if outcome.generated_plaintext is not None:
            result.response.plaintext = bytes(outcome.generated_plaintext)
            wipe(outcome.generated_plaintext)
    return response


def unwrap_batch_response(outcomes: list[UnwrapOutcome]) -> crypto_pb2.UnwrapBatchResponse:
    response = crypto_pb2.UnwrapBatchResponse()
    add = response.results.add
    for outcome in outcomes:
        result = add()
        if isinstance(outcome, HsmBridgeError):
            result.status.CopyFrom(status_proto(outcome))
            continue
        result.response.plaintext = bytes(outcome.plaintext)
        wipe(outcome.plaintext)
        result.response.key_version_id = outcome.key_version_id
        result.response.rewrapped_ciphertext = outcome.rewrapped_ciphertext or b""
        result.response.rewrapped_key_version_id = outcome.rewrapped_key_version_id or ""
    return response


def rewrap_batch_response(outcomes: list[RewrapOutcome]) -> crypto_pb2.RewrapBatchResponse:
    response = crypto_pb2.RewrapBatchResponse()
    add = response.results.add
    for outcome in outcomes:
        result = add()
        if isinstance(outcome, HsmBridgeError):
            result.status.CopyFrom(status_proto(outcome))
            continue
        result.response.ciphertext = outcome.ciphertext
        result.response.key_version_id = outcome.key_version_id
        result.response.rewrapped_key_version_id = outcome.rewrapped_key_version_id
    return response


def _check_size(items: Sized) -> None:
    if len(items) > MAX_BATCH_ITEMS:
        raise InvalidInput(
            f"a batch holds at most {MAX_BATCH_ITEMS} items", reason=Reason.INVALID_FIELD, target="items"
        )


class BatchCryptoServicer(CryptoServicer):
    """The batch RPCs and the bulk stream; the unary RPCs come from `CryptoServicer`."""

    @mapped
    async def WrapBatch(
        self, request: crypto_pb2.WrapBatchRequest, context: grpc.aio.ServicerContext
    ) -> crypto_pb2.WrapBatchResponse:
        ctx = self.ctx(context)
        _check_size(request.items)
        return wrap_batch_response(self.services.batches.wrap(ctx, request.items, request.key_id))

    @mapped
    async def UnwrapBatch(
        self, request: crypto_pb2.UnwrapBatchRequest, context: grpc.aio.ServicerContext
    ) -> crypto_pb2.UnwrapBatchResponse:
        ctx = self.ctx(context)
        _check_size(request.items)
        return unwrap_batch_response(self.services.batches.unwrap(ctx, request.items, request.key_id))

    @mapped
    async def RewrapBatch(
        self, request: crypto_pb2.RewrapBatchRequest, context: grpc.aio.ServicerContext
    ) -> crypto_pb2.RewrapBatchResponse:
        ctx = self.ctx(context)
        _check_size(request.items)
        return rewrap_batch_response(self.services.batches.rewrap(ctx, request.items, request.key_id))

    async def CryptoStream(
        self,
        requests: AsyncIterator[crypto_pb2.CryptoStreamRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[crypto_pb2.CryptoStreamResponse]:
        """Admitted once for the stream; then every message is authorised, rate-limited (one
        token per item) and audited as its own wrap/unwrap/rewrap."""
        method = f"/{self.SERVICE}/CryptoStream"
        metadata = metadata_of(context)
        try:
            async with self.gate.acall(
                rpc_action(method),
                lambda: self.authenticator.identify_context(context),
                lambda: tenant_of(metadata),
                transport="grpc",
                client=context.peer(),
                correlation_id=metadata.get(CORRELATION_KEY),
            ) as record:
                ctx = self.ctx(context)
                async for request in requests:
                    action = rpc_action(method, request)
                    cost = batch_cost(getattr(request, request.WhichOneof("batch") or "wrap"))
                    allowed = None
                    try:
                        allowed = self.gate.admit_more(record, action, cost)
                        response = self._stream_batch(ctx, request)
                    except Exception as error:
                        if allowed is not None:  # charged, then refused: it costs one token
                            self.gate.refund(record, allowed.action_class, cost)
                        await self.gate.aaudit_more(record, action, error)
                        raise
                    await self.gate.aaudit_more(record, action)
                    yield response
        except HsmBridgeError as error:
            await context.abort_with_status(to_status(error))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            # As `mapped` does for unary RPCs: never let grpc send the exception's text (it may
            # come from a library that printed a buffer) as an UNKNOWN status.
            log.error("unexpected %s in CryptoStream", type(exc).__name__)
            await context.abort_with_status(to_status(InternalError("internal error")))

    def _stream_batch(
        self, ctx: CallContext, request: crypto_pb2.CryptoStreamRequest
    ) -> crypto_pb2.CryptoStreamResponse:
        batches = self.services.batches
        which = request.WhichOneof("batch")
        response = crypto_pb2.CryptoStreamResponse(sequence=request.sequence)
        if which == "wrap":
            _check_size(request.wrap.items)
            batch = request.wrap
            response.wrap.CopyFrom(wrap_batch_response(batches.wrap(ctx, batch.items, batch.key_id)))
        elif which == "unwrap":
            _check_size(request.unwrap.items)
            response.unwrap.CopyFrom(
                unwrap_batch_response(batches.unwrap(ctx, request.unwrap.items, request.unwrap.key_id))
            )
        elif which == "rewrap":
            _check_size(request.rewrap.items)
            response.rewrap.CopyFrom(
                rewrap_batch_response(batches.rewrap(ctx, request.rewrap.items, request.rewrap.key_id))
            )
        else:
            raise InvalidInput(
                "a stream message needs a wrap, unwrap or rewrap batch",
                reason=Reason.MISSING_FIELD,
                target="batch",
            )
        return response
