"""Domain errors → gRPC status, mapped once, with a machine-readable `google.rpc.ErrorInfo`.

Clients branch on `ErrorInfo.reason` (the domain `Reason`), not on the message; the code gives
the coarse class a generic gRPC client understands (retry UNAVAILABLE, not INVALID_ARGUMENT).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from hsmbridge import errors as e

log = logging.getLogger(__name__)

ERROR_DOMAIN = "hsmbridge.dev"

# Most specific first: the first isinstance match wins.
_CODES: tuple[tuple[type[e.HsmBridgeError], grpc.StatusCode], ...] = (
    (e.IntegrityError, grpc.StatusCode.INVALID_ARGUMENT),
    (e.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (e.NotFound, grpc.StatusCode.NOT_FOUND),
    (e.Gone, grpc.StatusCode.FAILED_PRECONDITION),
    (e.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (e.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (e.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (e.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (e.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (e.HsmUnavailable, grpc.StatusCode.UNAVAILABLE),
    (e.StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (e.Unsupported, grpc.StatusCode.UNIMPLEMENTED),
    (e.CloudUnavailable, grpc.StatusCode.UNAVAILABLE),
    (e.CloudError, grpc.StatusCode.FAILED_PRECONDITION),
    (e.InternalError, grpc.StatusCode.INTERNAL),
)
_BY_REASON = {
    e.Reason.CONCURRENT_UPDATE: grpc.StatusCode.ABORTED,
    e.Reason.BODY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code_for(error: e.HsmBridgeError) -> grpc.StatusCode:
    by_reason = _BY_REASON.get(error.reason)  # type: ignore[call-overload]
    if by_reason is not None:
        return by_reason
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def status_proto(error: e.HsmBridgeError) -> status_pb2.Status:
    """The `google.rpc.Status` of an error: what a call aborts with, and a batch item's status."""
    code = status_code_for(error)
    info = error_details_pb2.ErrorInfo(reason=str(error.reason), domain=ERROR_DOMAIN, metadata=error.metadata)
    if error.target:
        info.metadata["target"] = error.target
    detail = any_pb2.Any()
    detail.Pack(info)
    details = [detail]
    retry_after = error.metadata.get("retry_after", "")
    if retry_after.isdigit():  # HSM outage, rate limit: the standard hint gRPC clients read
        retry = any_pb2.Any()
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=int(retry_after))))
        details.append(retry)
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=error.message, details=details)


OK_STATUS = status_pb2.Status(code=code_pb2.OK)


def to_status(error: e.HsmBridgeError) -> grpc.Status:
    return rpc_status.to_status(status_proto(error))


H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


#: The most items one batch (or stream message) may hold; a larger one is refused whole.
MAX_BATCH_ITEMS = 10_000


def batch_cost(request: Any) -> float:
    """A batch counts one rate-limit token per item; one over `MAX_BATCH_ITEMS` counts one token,
    since it is refused anyway (its size is checked before it is charged, so it cannot drive the
    tenant's bucket into debt)."""
    items = getattr(request, "items", None)
    count = len(items) if items is not None else 0
    return float(count) if 0 < count <= MAX_BATCH_ITEMS else 1.0


def mapped(handler: H) -> H:
    """Run an async unary handler inside the security gate (authenticate, authorise the RPC's IAM
    action for the tenant, rate-limit, audit once), and turn domain errors into their status and
    anything else into INTERNAL without leaking its text (it might come from a library that
    printed a buffer)."""

    from hsmbridge.grpc.context import CORRELATION_KEY, metadata_of, tenant_of
    from hsmbridge.security.authz import rpc_action

    methods: dict[type, str] = {}  # the full method name per servicer class, built once

    @functools.wraps(handler)
    async def run(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            method = methods.get(type(self))
            if method is None:
                method = methods[type(self)] = f"/{self.SERVICE}/{handler.__name__}"
            metadata = metadata_of(context)
            async with self.gate.acall(
                rpc_action(method, request),
                lambda: self.authenticator.identify_context(context),
                lambda: tenant_of(metadata),
                transport="grpc",
                client=context.peer(),
                correlation_id=metadata.get(CORRELATION_KEY),
                cost=batch_cost(request),
            ):
                return await handler(self, request, context)
        except e.HsmBridgeError as error:
            await context.abort_with_status(to_status(error))
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.error("unexpected %s in %s", type(exc).__name__, handler.__qualname__)
            await context.abort_with_status(to_status(e.InternalError("internal error")))

    return run  # type: ignore[return-value]
