"""What every REST handler needs: the services, the caller, and one way to answer.

Handlers are written as `async def handler(request) -> Response` and decorated with
`@endpoint(Operations.X)`. The decorator runs the handler inside the security gate (authenticate,
scope to the instance, authorise the Key Protect IAM action of the route, rate-limit, and emit
exactly one audit event), and turns any exception into Key Protect's error body via
`errors.to_http_error` (the one mapping). Every response echoes `correlation-id`; a 429 carries
`Retry-After`. Handlers never build error bodies themselves.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.errors import HsmBridgeError, InternalError
from hsmbridge.rest import headers
from hsmbridge.rest.errors import Operation, to_http_error
from hsmbridge.rest.representation import RenderContext
from hsmbridge.security.authz import Action, Authorizer, AuthzConfig, rest_action
from hsmbridge.security.gate import CallRecord, SecurityGate, current_call
from hsmbridge.security.principals import Identity

log = logging.getLogger(__name__)


class RestAuthenticator(Protocol):
    def identify_rest(self, authorization: str | None) -> Identity: ...


def open_gate() -> SecurityGate:
    """Authorisation with the default role table, no rate limit, no audit sink: for tests and
    embedding; the daemon builds its gate from `[security]`."""
    return SecurityGate(Authorizer(AuthzConfig()))


@dataclass
class RestState:
    services: Services
    authenticator: RestAuthenticator
    render: RenderContext
    gate: SecurityGate = field(default_factory=open_gate)


def state(request: Request) -> RestState:
    return request.app.state.hsmbridge  # type: ignore[no-any-return]


def call_context(request: Request) -> CallContext:
    """The admitted caller of this request (set by `endpoint`'s gate)."""
    record = current_call()
    if record is None or record.instance is None:
        raise InternalError("REST handler ran outside the security gate")
    return CallContext(record.principal, record.instance, record.correlation_id, observer=record.key)


def json(
    request: Request, body: Any, status: int = 200, extra_headers: Mapping[str, str] | None = None
) -> Response:
    return JSONResponse(
        body,
        status_code=status,
        headers={**headers.response_headers(request.headers), **(extra_headers or {})},
    )


def empty(request: Request, status: int = 204, extra_headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        status_code=status, headers={**headers.response_headers(request.headers), **(extra_headers or {})}
    )


def error_response(request: Request, exc: BaseException, operation: Operation) -> Response:
    error = to_http_error(exc, operation)
    if error.status >= 500:
        log.error("%s failed: %s", operation.failure, type(exc).__name__)
    extra = headers.response_headers(request.headers)
    # a 429 from the rate limiter, a 503 of a store (or HSM) that will be back
    if isinstance(exc, HsmBridgeError) and "retry_after" in exc.metadata:
        extra["Retry-After"] = exc.metadata["retry_after"]
    return JSONResponse(error.body, status_code=error.status, headers=extra)


Handler = Callable[..., Awaitable[Response]]


def gated(request: Request, action: Action) -> AbstractAsyncContextManager[CallRecord]:
    """The security gate around one REST request: authenticate the ``authorization`` header, scope
    to ``bluemix-instance``, authorise `action`, rate-limit, audit once. Every REST dialect on this
    app (the Key Protect routes here, the cloud push in hsmbridge/push/rest.py) enters it."""
    st = state(request)
    authorization = headers.get_header(request.headers, "authorization")
    return st.gate.acall(
        action,
        lambda: st.authenticator.identify_rest(authorization),
        lambda: headers.require_instance(request.headers),
        transport="rest",
        client=f"{request.client.host}:{request.client.port}" if request.client else None,
        correlation_id=headers.correlation_id(request.headers),
    )


def endpoint(
    operation: Operation, *, operation_for: Callable[[Request], Operation] | None = None
) -> Callable[[Handler], Handler]:
    """`operation_for` picks the error wording per request (E6 words errors after its action)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: Request, *args: Any, **kwargs: Any) -> Response:
            op = operation_for(request) if operation_for is not None else operation
            try:
                st = state(request)
                authorization = headers.get_header(request.headers, "authorization")
                action = rest_action(request.method, request.url.path, request.query_params.get("action"))
                if action is None:  # E6 with an unknown ?action=: credentials first, then its 400
                    st.authenticator.identify_rest(authorization)
                    return await handler(request, *args, **kwargs)
                async with gated(request, action):
                    return await handler(request, *args, **kwargs)
            except Exception as exc:
                return error_response(request, exc, op)

        return run

    return decorate


def StaticTokenAuthenticator(tokens: Mapping[str, str]) -> RestAuthenticator:
    """Development bearer tokens {token: principal}, each with every right (see security/dev.py).
    Production authenticators come from `[security]` (security/config.py)."""
    from hsmbridge.security.dev import DevIdentities

    return DevIdentities(tokens, trust_principal_metadata=False)
