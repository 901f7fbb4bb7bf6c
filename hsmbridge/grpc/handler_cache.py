"""A grpc.aio server interceptor that rewraps each method's handler once, not once per call.

The generic handlers return the same handler object for a method every time, so an interceptor
that decorates handlers can build its wrapper on the first call of a method and hand the cached
wrapper back afterwards; the per-call cost is one dict lookup and an identity check (a handler that
was replaced, e.g. by a re-registered service, gets a fresh wrapper).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Subclasses say how to wrap one method's handler in `wrap_handler`."""

    def __init__(self) -> None:
        self._handlers: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def wrap_handler(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._handlers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap_handler(method, handler)
        self._handlers[method] = (handler, wrapped)
        return wrapped
