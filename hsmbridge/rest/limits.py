"""REST resource limits: the request body size, the time to send headers, idle connections and
connections per worker.

Why each one (issue 15: one authenticated 400 MB body took a worker to 1.43 GB; 3,000 connections
that never finished their headers were all held open):

- `BodyLimit` (ASGI): a declared ``Content-Length`` over the limit is answered 413 before a byte
  of the body is read; a body without one (chunked) is counted as it is received and refused the
  moment it passes the limit. The server stops reading the socket when nobody consumes the body
  (uvicorn's flow control), so memory stays at the limit plus one read buffer. The 413 is in the
  dialect's shape (`shapes.ErrorShapes`) with ``Connection: close``, so the server closes the
  connection instead of reading and discarding the rest.
- `header_timeout`: uvicorn has an idle (keep-alive) timeout but none for a connection that opens
  and then sends its request line and headers slowly, or not at all (slowloris). `guard_protocol`
  subclasses whichever HTTP protocol uvicorn uses (h11 or httptools; both keep the request in
  flight as ``self.cycle`` and call ``on_response_complete``) with a timer armed when the
  connection opens and after each response: when it fires and no request is in flight, the
  connection has had `header_timeout` seconds to send one request's headers and has not, and is
  closed.
- `idle_timeout` and `max_connections` are uvicorn's own ``timeout_keep_alive`` and
  ``limit_concurrency`` (over the cap a request is answered 503 at once, in both protocols).
"""

from __future__ import annotations

import logging
from typing import Any

from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.rest.shapes import ErrorShapes, Scope

log = logging.getLogger(__name__)

#: The largest valid Key Protect request is an event acknowledgement of 1,000 events with three
#: 256-character fields each: about 3.2 MB if every character takes four UTF-8 bytes. Everything
#: else is far smaller (a wrap with 100 AAD strings is ~160 KB).
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024


def too_large(limit: int) -> InvalidInput:
    return InvalidInput(f"The request body is larger than {limit} bytes", reason=Reason.BODY_TOO_LARGE)


class BodyTooLarge(InvalidInput):
    """Raised from `receive` when a body passes the limit; the endpoint maps it like any domain
    error (413, audited), and `BodyLimit` answers for routes that do not."""

    def __init__(self, limit: int) -> None:
        super().__init__(too_large(limit).message, reason=Reason.BODY_TOO_LARGE)


#: After a 413 the rest of the body is unread: without this, uvicorn (h11 and httptools alike)
#: would keep the connection and read and discard the remainder (400 MB at loopback speed).
CLOSE = (b"connection", b"close")


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


class BodyLimit:
    def __init__(self, app: Any, shapes: ErrorShapes, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self._shapes = shapes
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared is not None and declared > self._max:
            log.warning(
                "refused %s: declared body of %d bytes over the %d limit",
                scope["method"],
                declared,
                self._max,
            )
            await self._shapes.respond(scope, receive, send, BodyTooLarge(self._max), close=True)
            return
        received = 0
        overflow = False
        started = False
        replaced = False  # the app answered the overflow with something else: ours goes out instead

        async def counted() -> dict[str, Any]:
            nonlocal received, overflow
            if overflow:
                raise BodyTooLarge(self._max)
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self._max:
                    overflow = True
                    log.warning("refused %s: body passed the %d byte limit", scope["method"], self._max)
                    raise BodyTooLarge(self._max)
            return message

        async def watched(message: dict[str, Any]) -> None:
            nonlocal started, replaced
            if message["type"] == "http.response.start":
                if overflow and message["status"] != 413:
                    replaced = True
                elif overflow:
                    message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
                started = True
            if not replaced:
                await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if started and not replaced:
                raise
            replaced = True
        if replaced:
            await self._shapes.respond(scope, receive, send, BodyTooLarge(self._max), close=True)


# --- uvicorn ------------------------------------------------------------------------------------


def guard_protocol(base: type, header_timeout: float) -> type:
    """`base` (uvicorn's h11 or httptools protocol class) with a header-read deadline."""

    class HeaderDeadline(base):  # type: ignore[misc, valid-type]
        _deadline: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_deadline()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

        def _arm_deadline(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._deadline = None
            if not self.transport.is_closing():
                self._deadline = self.loop.call_later(header_timeout, self._deadline_passed)

        def _deadline_passed(self) -> None:
            self._deadline = None
            cycle = self.cycle
            if (cycle is None or cycle.response_complete) and not self.transport.is_closing():
                log.info(
                    "closed a connection that sent no complete request headers in %.0f s", header_timeout
                )
                self.transport.close()

    HeaderDeadline.__name__ = f"HeaderDeadline{base.__name__}"
    return HeaderDeadline


def apply_to_uvicorn(
    config: Any, *, header_timeout: float, idle_timeout: float, max_connections: int
) -> None:
    """Set the limits on a `uvicorn.Config` before it is loaded: whatever its ``http`` protocol
    (a name such as ``"auto"``, ``"h11"``, ``"httptools"``, or a class), it gets the deadline."""
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    if isinstance(config.http, str):
        base = import_from_string(HTTP_PROTOCOLS.get(config.http, config.http))
    else:
        base = config.http
    config.http = guard_protocol(base, header_timeout)
    config.timeout_keep_alive = idle_timeout
    config.limit_concurrency = max_connections
