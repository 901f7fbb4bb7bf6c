"""What every REST handler needs: the services, the caller, and one way to answer.

Handlers are written as `async def handler(request) -> Response` and decorated with
`@endpoint(Operations.X)`: the decorator builds nothing but the error path — any exception becomes
Key Protect's error body via `errors.to_http_error` (the one mapping), and every response echoes
`correlation-id`. Handlers never build error bodies themselves.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from hsmbridge.core.principal import CallContext, Principal
from hsmbridge.core.services import Services
from hsmbridge.errors import Unauthenticated
from hsmbridge.rest import headers
from hsmbridge.rest.errors import Operation, to_http_error
from hsmbridge.rest.representation import RenderContext

log = logging.getLogger(__name__)


class RestAuthenticator(Protocol):
    def authenticate(self, authorization: str | None) -> Principal: ...


@dataclass
class StaticTokenAuthenticator:
    """Bearer tokens from a table {token: principal id}; tokens are kept only as SHA-256 digests
    and compared in constant time. The development server uses it with its printed dev token."""

    tokens: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._digests = {hashlib.sha256(t.encode()).digest(): p for t, p in self.tokens.items()}
        self.tokens = {}

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthenticated("Unauthorized: The user does not have access to the specified resource.")
        digest = hashlib.sha256(authorization[7:].strip().encode()).digest()
        match = None
        for known, principal in self._digests.items():
            if hmac.compare_digest(known, digest):
                match = principal
        if match is None:
            raise Unauthenticated("Unauthorized: The user does not have access to the specified resource.")
        return Principal(match)


@dataclass
class RestState:
    services: Services
    authenticator: RestAuthenticator
    render: RenderContext


def state(request: Request) -> RestState:
    return request.app.state.hsmbridge  # type: ignore[no-any-return]


def call_context(request: Request) -> CallContext:
    """Authenticate first (401 beats 400 for a missing instance), then scope to the instance."""
    st = state(request)
    principal = st.authenticator.authenticate(headers.get_header(request.headers, "authorization"))
    return CallContext(
        principal, headers.require_instance(request.headers), headers.correlation_id(request.headers)
    )


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
    return JSONResponse(
        error.body, status_code=error.status, headers=headers.response_headers(request.headers)
    )


Handler = Callable[..., Awaitable[Response]]


def endpoint(operation: Operation) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                return await handler(request, *args, **kwargs)
            except Exception as exc:
                return error_response(request, exc, operation)

        return run

    return decorate
