"""Which dialect's error shape answers a request that is refused before any route sees it.

Several REST dialects share one ASGI app (Key Protect at ``/api/v2``, Huawei KMS at
``/v1.0/{project_id}/kms/``, ...), and the transport-level guards in front of them (control
characters, body size) refuse requests before routing. Each answer must still be in the error
shape of the dialect the client speaks, so the guards ask this registry: a dialect registers a
path template and a renderer that turns a domain error into its own response, and may audit it
(only the dialect knows how to authenticate its callers). Longest template wins; a path no dialect
claims gets the fallback renderer.

A renderer is ``async (scope, error) -> Response``; `scope` is the ASGI scope of the refused
request (headers, client, path), `error` an `HsmBridgeError` whose reason says what was wrong.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from hsmbridge.errors import HsmBridgeError

Scope = dict[str, Any]
Renderer = Callable[[Scope, HsmBridgeError], Awaitable[Response]]


def _compile(template: str) -> re.Pattern[str]:
    """``/v1.0/{project_id}/kms/`` → a prefix pattern; ``{name}`` is one path segment."""
    parts = re.split(r"(\{[^}]*\})", template)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


async def plain_renderer(scope: Scope, error: HsmBridgeError) -> Response:
    """For paths no dialect claims: a minimal JSON body with the reason."""
    status = 413 if error.reason == "BODY_TOO_LARGE" else 400
    return JSONResponse({"error": {"code": str(error.reason), "message": error.message}}, status_code=status)


class ErrorShapes:
    def __init__(self, fallback: Renderer = plain_renderer) -> None:
        self._fallback = fallback
        self._shapes: list[tuple[int, re.Pattern[str], Renderer]] = []

    def register(self, template: str, renderer: Renderer) -> None:
        self._shapes.append((len(template), _compile(template), renderer))
        self._shapes.sort(key=lambda entry: -entry[0])

    def renderer_for(self, path: str) -> Renderer:
        for _, pattern, renderer in self._shapes:
            if pattern.match(path):
                return renderer
        return self._fallback

    async def respond(
        self, scope: Scope, receive: Any, send: Any, error: HsmBridgeError, *, close: bool = False
    ) -> None:
        """Answer the refused request in its dialect's shape; `close`: and end the connection
        (the request's body was not read)."""
        path = scope.get("path", "")
        response = await self.renderer_for(path)(scope, error)
        if close:
            response.headers["connection"] = "close"
        await response(scope, receive, send)
