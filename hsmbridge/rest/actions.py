"""Key Protect API v2: key actions (E13–E21) and the deprecated ``POST /keys/{id}?action=`` (E6).

Wrap, unwrap and rewrap are one short HSM call each (a cached GCM handle), so they run on the
event loop; rotate may generate or import material and runs in a worker thread. Statuses are the
ones clients branch on: 200 with a JSON body for wrap/unwrap/rewrap, 204 with an empty body for
rotate, enable, disable, (un)setKeyForDeletion and sync — rotate stays 204 even when ``prefer``
asks for a representation, as Key Protect's does.

Wrap/unwrap/rewrap responses carry ``application/vnd.ibm.kms.key_action+json``, Key Protect's
media type for them (IBM's Python SDK examples call ``.json()`` on ``wrap_key`` results, which
only happens for a non-``application/json`` type).

Secrets: the DEK plaintext is decoded into a `bytearray`, base64-encoded once for the response
and wiped; it is never logged and never part of an error message.

Wrap, unwrap and rewrap are also served by `HotActions`, an ASGI layer inside the app's
middleware (metrics, body limits) that hands a matching request straight to the same
gate-wrapped handler FastAPI would call, skipping the router scan, dependency solving and
request/response wrappers: those cost more CPU than the wrap itself (docs/BENCHMARKS.md). The
FastAPI routes stay registered, so OpenAPI documents them and anything the fast path does not
take (a root path, a trailing slash, another method) goes through FastAPI unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from hsmbridge.core.backend import wipe
from hsmbridge.core.principal import CallContext
from hsmbridge.rest import headers
from hsmbridge.rest import keys as key_routes
from hsmbridge.rest.bodies import b64decode_field, b64encode, get_field, read_json, require_object
from hsmbridge.rest.context import call_context, empty, endpoint
from hsmbridge.rest.errors import Operation, Operations, invalid_field, invalid_param, missing_field

router = APIRouter(tags=["Key actions"])

KEY_ACTION_MEDIA_TYPE = "application/vnd.ibm.kms.key_action+json"
_PLAINTEXT = "a base64 encoded key material"
_CIPHERTEXT = "the original base64 encoded ciphertext from the wrap operation"


def _aad(body: Mapping[str, Any]) -> list[str]:
    aad = get_field(body, "aad")
    if aad is None:
        return []
    if not isinstance(aad, list) or not all(isinstance(item, str) for item in aad):
        raise invalid_field("aad", "an array of strings")
    return aad


def _ciphertext(body: Mapping[str, Any]) -> bytes:
    value = get_field(body, "ciphertext")
    if value is None or value == "":
        raise missing_field("ciphertext")
    return b64decode_field(value, "ciphertext", expectation=_CIPHERTEXT)


class KeyActionResponse(Response):
    """Key Protect's key-action media type, rendered by orjson: the same compact UTF-8 JSON as
    Starlette's `JSONResponse` (the bodies are strings and objects of strings) at a fraction of
    the cost."""

    media_type = KEY_ACTION_MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _action_response(request: Request, body: dict[str, Any]) -> Response:
    return KeyActionResponse(body, headers=headers.response_headers(request.headers))


# --- the actions, as plain coroutines so E6 can dispatch to them -------------------------------------


async def wrap(request: Request, ctx: CallContext, id: str, body: Any) -> Response:
    obj = require_object(body, required=False)
    raw = get_field(obj, "plaintext")
    plaintext = bytearray(b64decode_field(raw, "plaintext", expectation=_PLAINTEXT)) if raw else None
    aad = _aad(obj)
    key_routes.check_key_ring(request, ctx, id)
    try:
        result = key_routes.services(request).envelopes.wrap(ctx, id, plaintext, aad)
    finally:
        wipe(plaintext)
    out: dict[str, Any] = {}
    if result.generated_plaintext is not None:
        out["plaintext"] = b64encode(bytes(result.generated_plaintext))
        wipe(result.generated_plaintext)
    out["ciphertext"] = b64encode(result.ciphertext)
    out["keyVersion"] = {"id": result.key_version_id}
    return _action_response(request, out)


async def unwrap(request: Request, ctx: CallContext, id: str, body: Any) -> Response:
    obj = require_object(body)
    ciphertext = _ciphertext(obj)
    aad = _aad(obj)
    key_routes.check_key_ring(request, ctx, id)
    result = key_routes.services(request).envelopes.unwrap(ctx, id, ciphertext, aad)
    try:
        out: dict[str, Any] = {
            "plaintext": b64encode(bytes(result.plaintext)),
            "keyVersion": {"id": result.key_version_id},
        }
    finally:
        wipe(result.plaintext)
    if result.rewrapped_ciphertext is not None:
        out["ciphertext"] = b64encode(result.rewrapped_ciphertext)
        out["rewrappedKeyVersion"] = {"id": result.rewrapped_key_version_id}
    return _action_response(request, out)


async def rewrap(request: Request, ctx: CallContext, id: str, body: Any) -> Response:
    obj = require_object(body)
    ciphertext = _ciphertext(obj)
    aad = _aad(obj)
    key_routes.check_key_ring(request, ctx, id)
    result = key_routes.services(request).envelopes.rewrap(ctx, id, ciphertext, aad)
    return _action_response(
        request,
        {
            "ciphertext": b64encode(result.ciphertext),
            "keyVersion": {"id": result.key_version_id},
            "rewrappedKeyVersion": {"id": result.rewrapped_key_version_id},
        },
    )


async def rotate(request: Request, ctx: CallContext, id: str, body: Any) -> Response:
    obj = require_object(body, required=False)
    payload, secure = key_routes.parse_material(obj)
    key = key_routes.resolve_key(request, ctx, id)
    try:
        with key_routes.import_failures(secure):
            await asyncio.to_thread(
                key_routes.services(request).keys.rotate, ctx, key.id, payload=payload, secure_import=secure
            )
    finally:
        wipe(payload)
    return empty(request)


def _simple(
    method: Callable[[Any], Callable[..., Any]],
) -> Callable[[Request, CallContext, str, Any], Awaitable[Response]]:
    """An action with no body and a 204 answer; `method` picks the KeyService method."""

    async def run(request: Request, ctx: CallContext, id: str, body: Any) -> Response:
        key = key_routes.resolve_key(request, ctx, id)
        method(key_routes.services(request).keys)(ctx, key.id)
        return empty(request)

    return run


set_key_for_deletion = _simple(lambda keys: keys.set_key_for_deletion)
unset_key_for_deletion = _simple(lambda keys: keys.unset_key_for_deletion)
enable = _simple(lambda keys: keys.enable)
disable = _simple(lambda keys: keys.disable)
sync = _simple(lambda keys: keys.sync)

Action = Callable[[Request, CallContext, str, Any], Awaitable[Response]]

#: E6's actions: name → (handler, the Operation its errors are worded after).
ACTIONS: Mapping[str, tuple[Action, Operation]] = {
    "wrap": (wrap, Operations.WRAP),
    "unwrap": (unwrap, Operations.UNWRAP),
    "rewrap": (rewrap, Operations.REWRAP),
    "rotate": (rotate, Operations.ROTATE),
    "restore": (key_routes.restore, Operations.RESTORE_KEY),
    "enable": (enable, Operations.ENABLE),
    "disable": (disable, Operations.DISABLE),
    "setKeyForDeletion": (set_key_for_deletion, Operations.SET_KEY_FOR_DELETION),
    "unsetKeyForDeletion": (unset_key_for_deletion, Operations.UNSET_KEY_FOR_DELETION),
}


# --- E13–E21 routes ---------------------------------------------------------------------------------

#: The actions `HotActions` serves without FastAPI's per-request layer: path → gated handler.
HOT_ACTIONS = ("wrap", "unwrap", "rewrap")
_HOT_HANDLERS: dict[str, Callable[[Request, str], Awaitable[Response]]] = {}


def _route(
    path: str, action: Action, operation: Operation, summary: str, description: str, **extra: Any
) -> None:
    @router.post(f"/api/v2/keys/{{id}}/actions/{path}", summary=summary, description=description, **extra)
    @endpoint(operation)
    async def handler(request: Request, id: str) -> Response:
        ctx = call_context(request)
        return await action(request, ctx, id, await read_json(request))

    handler.__name__ = f"action_{path}"
    if path in HOT_ACTIONS:
        _HOT_HANDLERS[path] = handler


_route(
    "wrap",
    wrap,
    Operations.WRAP,
    "Wrap a key (E13)",
    "Encrypt a DEK (`plaintext`, base64) under the latest version, or generate a 32-byte one. "
    "Optional `aad` (array of strings) must be repeated on unwrap.",
    openapi_extra=key_routes.body_doc({"plaintext": "tF9ss0W9HQUVkddcjSeGg/MqZFs2CVh/FFKLPLLnOwY="}),
)
_route(
    "unwrap",
    unwrap,
    Operations.UNWRAP,
    "Unwrap a key (E14)",
    "Decrypt a WDEK wrapped by any retained version; an old version's WDEK comes back rewrapped "
    "as `ciphertext` with `rewrappedKeyVersion`.",
    openapi_extra=key_routes.body_doc({"ciphertext": "<WDEK from wrap>", "aad": []}),
)
_route(
    "rewrap",
    rewrap,
    Operations.REWRAP,
    "Rewrap a key (E15)",
    "Re-encrypt a WDEK under the latest version without revealing the DEK.",
    openapi_extra=key_routes.body_doc({"ciphertext": "<WDEK from wrap>", "aad": []}),
)
_route(
    "rotate",
    rotate,
    Operations.ROTATE,
    "Rotate a root key (E16)",
    "New version; imported keys need a new `payload` (plain or secure import). 204. One per hour.",
    status_code=204,
)
_route(
    "setKeyForDeletion",
    set_key_for_deletion,
    Operations.SET_KEY_FOR_DELETION,
    "Authorize deletion (E17)",
    "First authorization of a dual-authorization delete; valid for 7 days. 204.",
    status_code=204,
)
_route(
    "unsetKeyForDeletion",
    unset_key_for_deletion,
    Operations.UNSET_KEY_FOR_DELETION,
    "Cancel a deletion authorization (E18)",
    "204.",
    status_code=204,
)
_route("enable", enable, Operations.ENABLE, "Enable a key (E19)", "Suspended → Active.", status_code=204)
_route("disable", disable, Operations.DISABLE, "Disable a key (E20)", "Active → Suspended.", status_code=204)
_route(
    "sync",
    sync,
    Operations.SYNC,
    "Sync associated resources (E21)",
    "Root keys only; not within an hour of the last lifecycle event or sync. 204.",
    status_code=204,
)


# --- E6, the deprecated dispatcher --------------------------------------------------------------------------


def _e6_operation(request: Request) -> Operation:
    entry = ACTIONS.get(request.query_params.get("action") or "")
    return entry[1] if entry is not None else Operations.KEY_ACTION


@router.post(
    "/api/v2/keys/{id}",
    summary="Invoke an action on a key (E6, deprecated)",
    description="`?action=` one of " + ", ".join(ACTIONS) + "; as the per-action endpoints.",
    deprecated=True,
)
@endpoint(Operations.KEY_ACTION, operation_for=_e6_operation)
async def key_action(request: Request, id: str) -> Response:
    raw = request.query_params.get("action") or ""
    entry = ACTIONS.get(raw)
    if entry is None:
        if not raw:
            raise missing_field("action", target_type="param")
        raise invalid_param("action", f"one of [{', '.join(ACTIONS)}]")
    return await entry[0](request, call_context(request), id, await read_json(request))


# --- the hot actions without FastAPI's per-request layer ---------------------------------------------


class HotActions:
    """ASGI: POST /api/v2/keys/{id}/actions/(wrap|unwrap|rewrap) → the route's own gated handler.

    Matching uses each route's own compiled path pattern, so `{id}` means exactly what it means
    to Starlette; `scope["route"]` is set to the FastAPI route so the metrics middleware labels
    the request with its template as before. Installed as the innermost user middleware
    (`install`), so every middleware the app has (metrics, body limits) still wraps it.
    """

    def __init__(self, app: Any, routes: Mapping[str, tuple[APIRoute, Any]]) -> None:
        self.app = app
        self._routes = dict(routes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            path: str = scope["path"]
            entry = self._routes.get(path.rpartition("/")[2])
            if entry is not None:
                route, handler = entry
                match = route.path_regex.match(path)
                if match is not None:
                    key_id = match.group("id")
                    scope["route"] = route
                    scope["path_params"] = {"id": key_id}
                    response = await handler(Request(scope, receive, send), key_id)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def install(app: Any) -> None:
    """Serve the hot actions through `HotActions` in `app` (after its other middleware is added)."""
    from starlette.middleware import Middleware

    routes: dict[str, tuple[APIRoute, Any]] = {}
    for route in router.routes:
        if isinstance(route, APIRoute):
            name = route.path.rpartition("/")[2]
            if route.path == f"/api/v2/keys/{{id}}/actions/{name}" and name in _HOT_HANDLERS:
                routes[name] = (route, _HOT_HANDLERS[name])
    assert set(routes) == set(HOT_ACTIONS), "every hot action has its route"
    app.user_middleware.append(Middleware(HotActions, routes=routes))
