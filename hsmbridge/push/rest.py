"""REST adapter of the cloud push, CCKM-style: `/api/v1/connections` and `/api/v1/cckm/{cloud}/keys`.

Mounted on the Key Protect REST app (same listener, same authentication: ``authorization:
Bearer`` and ``bluemix-instance`` for the tenant) and run through the same security gate, with
one ``hsmbridge.push.*`` action per route (security/authz.py) and one audit event per call. The
answers follow the seed's shapes (CCKM's key object with ``aws_param`` / ``ibm_param`` /
``huawei_param``); errors are ``{"code", "message", "target"?, "cloud"?, "cloud_code"?}`` with
the status mapped once here. Connection secrets are never rendered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from hsmbridge import errors as e
from hsmbridge.core.store.push_records import CloudKey, PushConnection
from hsmbridge.push.service import MaterialRequest, build
from hsmbridge.rest import headers
from hsmbridge.rest.bodies import read_json, require_object
from hsmbridge.rest.context import call_context, gated, state

log = logging.getLogger(__name__)
router = APIRouter(tags=["Push keys to cloud KMSs"])

# Most specific first: the first isinstance match wins.
_STATUS: tuple[tuple[type[e.HsmBridgeError], int], ...] = (
    (e.InvalidInput, 400),
    (e.NotFound, 404),
    (e.Conflict, 409),
    (e.Unauthenticated, 401),
    (e.PermissionDenied, 403),
    (e.ResourceExhausted, 429),
    (e.HsmUnavailable, 503),
    (e.StoreUnavailable, 503),
    (e.Unsupported, 501),
    (e.CloudUnavailable, 503),
    (e.CloudError, 502),
)


_ERROR_SCHEMA: dict[str, Any] = {
    "title": "PushError",
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {
            "type": "string",
            "description": "hsmbridge's reason (KEY_MATERIAL_MISMATCH, CLOUD_ERROR...)",
        },
        "message": {"type": "string"},
        "target": {"type": "string", "description": "the field at fault"},
        "cloud": {"type": "string", "description": "ibm, aws or huawei"},
        "cloud_code": {"type": "string", "description": "the cloud's own error code"},
    },
}
_ERROR_STATUSES = {
    "400": "Bad Request: a field is malformed or missing (`target` names it)",
    "401": "Unauthorized: missing or invalid credentials",
    "403": "Forbidden: the action is not granted",
    "404": "Not Found",
    "409": "Conflict: e.g. KEY_MATERIAL_MISMATCH, a connection in use",
    "413": "Content Too Large",
    "429": "Too Many Requests",
    "500": "Internal Server Error",
    "501": "Not Implemented: the HSM cannot produce the wrapping the cloud needs",
    "502": "Bad Gateway: the cloud refused (`cloud_code` is its own code)",
    "503": "Service Unavailable: the cloud, the HSM or the store did not answer",
    "504": "Gateway Timeout: the cloud did not answer in time",
}
#: documented on every push route: the answers in this dialect's error body
RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": _ERROR_SCHEMA}}}
    for status, text in _ERROR_STATUSES.items()
}


def error_response(request: Request, exc: BaseException) -> Response:
    status = 500
    body: dict[str, Any] = {"code": e.Reason.INTERNAL.value, "message": "Internal server error"}
    if isinstance(exc, e.HsmBridgeError) and not isinstance(exc, e.InternalError):
        status = next((s for cls, s in _STATUS if isinstance(exc, cls)), 500)
        if exc.metadata.get("cloud_code") == "timeout":
            status = 504
        elif exc.reason == e.Reason.BODY_TOO_LARGE:
            status = 413
        body = {"code": str(exc.reason), "message": exc.message}
        if exc.target:
            body["target"] = exc.target
        for name in ("cloud", "cloud_code"):
            if name in exc.metadata:
                body[name] = exc.metadata[name]
    if status >= 500:
        log.error("push request failed: %s (%s)", type(exc).__name__, body["code"])
    extra = headers.response_headers(request.headers)
    if isinstance(exc, e.ResourceExhausted) and "retry_after" in exc.metadata:
        extra["Retry-After"] = exc.metadata["retry_after"]
    return JSONResponse(body, status_code=status, headers=extra)


def _json(request: Request, body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, headers=headers.response_headers(request.headers))


Handler = Callable[..., Awaitable[Response]]


def push_endpoint(action: str) -> Callable[[Handler], Handler]:
    """Authenticate, scope, authorise `action`, rate-limit and audit, as the Key Protect routes."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def run(request: Request, *args: Any, **kwargs: Any) -> Response:
            try:
                async with gated(request, state(request).gate.authorizer.action(action)):
                    return await handler(request, *args, **kwargs)
            except Exception as exc:
                return error_response(request, exc)

        return run

    return decorate


def _push(request: Request) -> Any:
    """(ConnectionService, PushService), built once per app over its services."""
    app_state = request.app.state
    if getattr(app_state, "hsmbridge_push", None) is None:
        app_state.hsmbridge_push = build(state(request).services)
    return app_state.hsmbridge_push


def _time(value: Any) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def render_connection(conn: PushConnection) -> dict[str, Any]:
    settings = dict(conn.settings)
    return {
        "id": conn.id,
        "uri": f"hsmbridge:{conn.tenant}:connections:{conn.cloud}:{conn.id}",
        "name": conn.name,
        "cloud": conn.cloud,
        "createdAt": _time(conn.created_at),
        "updatedAt": _time(conn.updated_at),
        "createdBy": conn.created_by,
        **settings,
    }


def render_cloud_key(key: CloudKey, connection: PushConnection | None, params_name: str) -> dict[str, Any]:
    params = dict(key.cloud_params)
    if key.valid_to is not None and key.cloud == "aws":
        params["ValidTo"] = key.valid_to  # the caller's RFC 3339 text, nanoseconds and all (seed)
    return {
        "id": key.id,
        "uri": f"hsmbridge:{key.tenant}:cckm:{key.cloud}-key:{key.id}",
        "account": key.tenant,
        "createdAt": _time(key.created_at),
        "updatedAt": _time(key.updated_at),
        "kms_id": key.kms_id,
        "kms": connection.name if connection else None,
        "connection_id": key.connection_id,
        "synced_at": _time(key.synced_at),
        "rotation_status": "",
        "local_key_id": key.local_key_id,
        "local_key_name": key.local_key_name,
        "local_key_version_id": key.local_version_id,
        "key_check_value": key.kcv,
        "cloud_name": key.cloud,
        "key_type": "symmetric",
        "region": key.region,
        "gone": False,
        "key_material_origin": "hsmbridge" if key.pushed_at else None,
        "key_expiration": key.key_expiration,
        "valid_to": key.valid_to,
        "pushed_at": _time(key.pushed_at),
        params_name: params,
    }


_PARAMS = {"ibm": "ibm_param", "aws": "aws_param", "huawei": "huawei_param"}


def _render_key(request: Request, key: CloudKey) -> dict[str, Any]:
    connections, _ = _push(request)
    try:
        connection = connections.get(call_context(request), key.connection_id)
    except e.NotFound:
        connection = None
    return render_cloud_key(key, connection, _PARAMS[key.cloud])


async def _body(request: Request) -> dict[str, Any]:
    return require_object(await read_json(request), required=False)


# -- connections -------------------------------------------------------------------------------


@router.post(
    "/api/v1/connections",
    responses=RESPONSES,
    status_code=201,
    summary="Create a connection to a cloud KMS account",
)
@push_endpoint("hsmbridge.push.connections.create")
async def create_connection(request: Request) -> Response:
    connections, _ = _push(request)
    body = await _body(request)
    conn = await asyncio.to_thread(connections.create, call_context(request), body)
    return _json(request, render_connection(conn), 201)


@router.get("/api/v1/connections", responses=RESPONSES, summary="List connections")
@push_endpoint("hsmbridge.push.connections.read")
async def list_connections(request: Request) -> Response:
    connections, _ = _push(request)
    found = connections.list(call_context(request))
    return _json(request, {"total": len(found), "resources": [render_connection(c) for c in found]})


@router.get("/api/v1/connections/{ref}", responses=RESPONSES, summary="Get a connection (never its secrets)")
@push_endpoint("hsmbridge.push.connections.read")
async def get_connection(request: Request, ref: str) -> Response:
    connections, _ = _push(request)
    return _json(request, render_connection(connections.get(call_context(request), ref)))


@router.delete(
    "/api/v1/connections/{ref}",
    responses=RESPONSES,
    status_code=204,
    response_class=Response,
    summary="Delete a connection",
)
@push_endpoint("hsmbridge.push.connections.delete")
async def delete_connection(request: Request, ref: str) -> Response:
    connections, _ = _push(request)
    await asyncio.to_thread(connections.delete, call_context(request), ref)
    return Response(status_code=204, headers=headers.response_headers(request.headers))


@router.post(
    "/api/v1/connections/{ref}/test", responses=RESPONSES, summary="Test a connection: one authenticated call"
)
@push_endpoint("hsmbridge.push.connections.test")
async def test_connection(request: Request, ref: str) -> Response:
    connections, _ = _push(request)
    return _json(request, await asyncio.to_thread(connections.test, call_context(request), ref))


# -- cloud keys --------------------------------------------------------------------------------


@router.post(
    "/api/v1/cckm/{cloud}/keys",
    responses=RESPONSES,
    status_code=201,
    summary="Create (or link) a key with external origin in a cloud",
)
@push_endpoint("hsmbridge.push.keys.create")
async def create_cloud_key(request: Request, cloud: str) -> Response:
    _, push = _push(request)
    body = await _body(request)
    key = await asyncio.to_thread(push.create_key, call_context(request), cloud, body)
    return _json(request, _render_key(request, key), 201)


@router.get(
    "/api/v1/cckm/{cloud}/keys", responses=RESPONSES, summary="List the cloud keys fed by this hsmbridge"
)
@push_endpoint("hsmbridge.push.keys.read")
async def list_cloud_keys(request: Request, cloud: str) -> Response:
    _, push = _push(request)
    found = push.list_keys(call_context(request), cloud)
    return _json(request, {"total": len(found), "resources": [_render_key(request, k) for k in found]})


@router.get(
    "/api/v1/cckm/{cloud}/keys/{key_id}",
    responses=RESPONSES,
    summary="Get a cloud key (?sync=true: ask the cloud)",
)
@push_endpoint("hsmbridge.push.keys.read")
async def get_cloud_key(request: Request, cloud: str, key_id: str) -> Response:
    _, push = _push(request)
    sync = request.query_params.get("sync", "").lower() in ("1", "true", "yes")
    key = await asyncio.to_thread(push.get_key, call_context(request), cloud, key_id, sync=sync)
    return _json(request, _render_key(request, key))


@router.delete(
    "/api/v1/cckm/{cloud}/keys/{key_id}",
    responses=RESPONSES,
    status_code=204,
    response_class=Response,
    summary="Forget a cloud key (the cloud keeps it)",
)
@push_endpoint("hsmbridge.push.keys.delete")
async def delete_cloud_key(request: Request, cloud: str, key_id: str) -> Response:
    _, push = _push(request)
    await asyncio.to_thread(push.delete_key, call_context(request), cloud, key_id)
    return Response(status_code=204, headers=headers.response_headers(request.headers))


@router.post(
    "/api/v1/cckm/{cloud}/keys/{key_id}/import-material",
    responses=RESPONSES,
    summary="Import (or reimport the same) HSM key material into the cloud key",
)
@push_endpoint("hsmbridge.push.keys.import")
async def import_material(request: Request, cloud: str, key_id: str) -> Response:
    _, push = _push(request)
    material = MaterialRequest.from_body(await _body(request))
    key = await asyncio.to_thread(push.import_material, call_context(request), cloud, key_id, material)
    return _json(request, _render_key(request, key))


async def _refused(scope: dict[str, Any], error: e.HsmBridgeError) -> Response:
    """The answer to a request the transport guards refused (control characters, body size)
    before any route saw it: this dialect's error shape, like every other answer here."""
    return error_response(Request(scope), error)


def mount(app: FastAPI) -> None:
    """Called by rest/app.py: the push routes share the REST app, its state and its gate, and the
    guards in front of it answer /api/v1 requests in this dialect's shape."""
    app.include_router(router)
    app.state.error_shapes.register("/api/v1", _refused)
