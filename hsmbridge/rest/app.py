"""The Key Protect API v2 facade as a FastAPI application over the service layer.

One module per resource contributes an `APIRouter`; the order below matters where paths overlap:
`/api/v2/keys/registrations` must be matched before `/api/v2/keys/{id}`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from hsmbridge.core.services import Services
from hsmbridge.errors import HsmBridgeError, InvalidInput, NotFound, Reason, Unsupported
from hsmbridge.push import rest as push_rest
from hsmbridge.rest import context, openapi_errors
from hsmbridge.rest.context import RestAuthenticator, RestState, open_gate
from hsmbridge.rest.errors import Operation
from hsmbridge.rest.hygiene import CONTROL_CHARACTERS, ControlCharacterFilter
from hsmbridge.rest.limits import DEFAULT_MAX_BODY_BYTES, BodyLimit
from hsmbridge.rest.representation import RenderContext
from hsmbridge.rest.shapes import ErrorShapes, Scope
from hsmbridge.security.authz import rest_action
from hsmbridge.security.gate import SecurityGate

_ROUTING = Operation("Request", "processed")


def create_app(
    services: Services,
    authenticator: RestAuthenticator,
    render: RenderContext,
    metrics: Any = None,
    gate: SecurityGate | None = None,
    huawei: Any = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    error_shapes: ErrorShapes | None = None,
) -> FastAPI:
    """`gate`: the process's security gate (authorisation, rate limits, audit); by default
    authorisation only, with the standard role table. `huawei`: a `HuaweiAuthenticator` to also
    serve the Huawei Cloud KMS API v1.0 (hsmbridge/huawei/) through the same gate.
    `error_shapes`: the registry the request guards (control characters, body size) answer from;
    Key Protect registers ``/api/v2`` in it and Huawei ``/v1.0/`` (see rest/shapes.py)."""
    from hsmbridge.rest import (  # one module per resource
        actions,
        aliases,
        events,
        import_tokens,
        instance,
        key_policies,
        key_rings,
        keys,
        registrations,
    )

    # FastAPIOffline: /docs (Swagger UI) and /redoc load their scripts and CSS from files shipped
    # in the fastapi-offline wheel, under /static-offline-docs, instead of a CDN: a sidecar's
    # network is usually closed, and FastAPI's default pages are blank there.
    app = FastAPIOffline(
        title="hsmbridge — Key Protect API v2",
        description="IBM Key Protect API v2, served by hsmbridge over a PKCS#11 HSM.",
        version="2.0",
    )
    app.state.hsmbridge = RestState(services, authenticator, render, gate or open_gate())
    shapes = error_shapes if error_shapes is not None else ErrorShapes()
    shapes.register("/api/v2", _keyprotect_refusal)
    app.state.error_shapes = shapes
    # Starlette runs the last added outermost: metrics, then control characters, then body size.
    app.add_middleware(BodyLimit, shapes=shapes, max_bytes=max_body_bytes)
    app.add_middleware(ControlCharacterFilter, shapes=shapes)
    if metrics is not None:  # hsmbridge.metrics.Metrics: request counts and latency per route
        from hsmbridge.rest.middleware import RestMetricsMiddleware

        app.add_middleware(RestMetricsMiddleware, metrics=metrics)
    for module in (
        registrations,
        key_rings,
        key_policies,
        instance,
        import_tokens,
        events,
        aliases,
        actions,
        keys,
    ):
        app.include_router(module.router)
    if huawei is not None:
        from hsmbridge import huawei as huawei_api

        huawei_api.install(app, services, huawei, app.state.hsmbridge.gate)
        shapes.register(huawei_api.PATH_PREFIX, _huawei_refusal)
    push_rest.mount(app)  # /api/v1: pushing keys to cloud KMSs (hsmbridge/push/)

    openapi_errors.install(app)
    actions.install(app)  # innermost: every middleware above still applies to the hot actions

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/v1.0/"):  # Huawei routes never answer a Key Protect body
            return _huawei_routing_error(exc.status_code)
        if exc.status_code == 405:
            error: Exception = Unsupported("This method is not supported on this resource.")
        elif exc.status_code == 404:
            error = NotFound("The requested resource does not exist.", reason=Reason.NOT_FOUND)
        else:
            error = InvalidInput("The request could not be processed.")
        return context.error_response(request, error, _ROUTING)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/v1.0/"):
            return _huawei_routing_error(400)
        return context.error_response(request, InvalidInput("The request is malformed."), _ROUTING)

    return app


def _huawei_routing_error(status: int) -> Response:
    from hsmbridge.huawei import errors as huawei_errors
    from hsmbridge.huawei.context import error_response

    error: Exception = InvalidInput("Invalid request URL.")
    if status == 404:
        error = huawei_errors.coded(
            NotFound("Invalid request URL.", reason=Reason.NOT_FOUND), huawei_errors.INVALID_URL
        )
    elif status == 405:
        error = huawei_errors.coded(Unsupported("Invalid request URL."), huawei_errors.INVALID_URL)
    else:
        error = huawei_errors.coded(InvalidInput("Invalid request URL."), huawei_errors.INVALID_URL)
    return error_response(error)


async def _huawei_refusal(scope: Scope, error: HsmBridgeError) -> Response:
    """Huawei's body for a request the guards refused (413 for a body over the limit)."""
    from hsmbridge.huawei import errors as huawei_errors
    from hsmbridge.huawei.context import error_response

    if error.reason == Reason.BODY_TOO_LARGE:
        response = error_response(huawei_errors.coded(error, huawei_errors.TOO_LONG))
        response.status_code = 413
        return response
    return error_response(huawei_errors.coded(error, huawei_errors.INVALID_PARAMETER))


async def _keyprotect_refusal(scope: Scope, error: HsmBridgeError) -> Response:
    """Key Protect's answer to a request the guards refused: its error body, after the gate (so
    401 beats 400 as on every route, and an authenticated caller's refusal is audited and costs
    one rate-limit token like any refused call)."""
    request = Request(scope)
    action = rest_action(
        request.method,
        CONTROL_CHARACTERS.sub("_", scope["path"]),  # not url.path: urlsplit drops TAB/LF/CR
        CONTROL_CHARACTERS.sub("_", request.query_params.get("action") or ""),
    )
    if action is None:  # no route of the API: nothing to authenticate against
        return context.error_response(request, error, _ROUTING)
    try:
        async with context.gated(request, action):  # the gate every Key Protect route enters
            raise error
    except Exception as answered:
        return context.error_response(request, answered, _ROUTING)
