"""Malformed request messages → INVALID_ARGUMENT, with one log line and no traceback.

grpc.aio deserialises a request before any servicer code runs; when protobuf refuses the bytes it
logs the `DecodeError` with a full traceback and answers UNKNOWN with the exception's text — a
client bug looks like a server bug, and a flood of garbage fills the log. This interceptor swaps
each method's request deserializer for one that never raises: a message that does not parse
becomes the `MALFORMED` marker, and the method's behaviour answers INVALID_ARGUMENT in its place
(unary requests) or raises `InvalidInput` from the request iterator (streams), where the
servicer's own error mapping (and the security gate's audit) handles it like any bad input.

It must be the innermost interceptor so the metrics interceptor counts these calls with the
status they got.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.grpc.errors import to_status
from hsmbridge.grpc.handler_cache import WrappingInterceptor

log = logging.getLogger(__name__)

MALFORMED_MSG = "the request message could not be parsed"


class _Malformed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MALFORMED"


#: What the deserializer returns for bytes that are not a valid message of the method's type.
MALFORMED: Any = _Malformed()


def _invalid() -> InvalidInput:
    return InvalidInput(MALFORMED_MSG, reason=Reason.BAD_BODY)


def _tolerant(method: str, deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or whatever a custom deserializer raises
            log.warning("malformed request message on %s: %s", method, type(exc).__name__)
            return MALFORMED

    return parse


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if request is MALFORMED:
            raise _invalid()
        yield request


class MalformedMessageInterceptor(WrappingInterceptor):
    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return _wrap(method, handler)


_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _wrap(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """The same handler with the tolerant deserializer, and a behaviour of the same kind as the
    original (grpc.aio dispatches on coroutine / async generator / plain function)."""
    streaming_in, streaming_out = handler.request_streaming, handler.response_streaming
    inner = (
        (handler.stream_stream if streaming_out else handler.stream_unary)
        if streaming_in
        else (handler.unary_stream if streaming_out else handler.unary_unary)
    )

    async def admit(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if streaming_in:
            return _checked(request)
        if request is MALFORMED:
            await context.abort_with_status(to_status(_invalid()))
        return request

    behaviour: Callable[..., Any]
    if streaming_out and inspect.isasyncgenfunction(inner):

        async def generate(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for response in inner(await admit(request, context), context):
                yield response

        behaviour = generate
    else:

        async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
            result = inner(await admit(request, context), context)
            if inspect.isawaitable(result):
                return await result
            if streaming_out and result is not None:  # a plain generator of responses
                for response in result:
                    await context.write(response)
                return None
            return result

        behaviour = run
    factory = _FACTORIES[streaming_in, streaming_out]
    return factory(behaviour, _tolerant(method, handler.request_deserializer), handler.response_serializer)
