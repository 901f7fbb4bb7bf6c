"""REST request metrics as a pure ASGI middleware.

Pure ASGI rather than Starlette's `BaseHTTPMiddleware`: the latter runs the app in a task and
streams the body through memory channels, which costs more than a whole wrap does. This one
wraps `send` to see the status and reads the matched route template (Starlette's router puts it
in `scope["route"]`), so series are per `/api/v2/keys/{id}/actions/wrap`, never per key id.
"""

from __future__ import annotations

import time
from typing import Any

from hsmbridge.metrics import Metrics

Scope = dict[str, Any]
Message = dict[str, Any]


class RestMetricsMiddleware:
    """Record `hsmbridge_rest_requests_total` and `hsmbridge_rest_request_seconds`."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises before starting a response

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            counter, histogram = self._metrics.rest_observer(scope["method"], template, status)
            counter.inc()
            histogram.observe(time.perf_counter() - started)
