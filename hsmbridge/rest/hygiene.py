"""Refuse control characters in the path or query string, on every route, before routing.

A percent-encoded TAB, LF or CR in a path parameter (``POST /api/v2/keys/%0A/actions/wrap``) used
to reach the handlers as a key id the IAM route table could not match, so the request ran outside
the security gate and answered 500 with no cause logged (issue 15). No identifier, alias, name or
query value of any dialect may contain a C0 control character or DEL, so they are refused here, as
400 in the dialect's own error shape (`shapes.ErrorShapes`), with one log line naming the part and
the character (never the value), before any handler, authenticator or store sees them.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.rest.errors import TARGET_TYPE
from hsmbridge.rest.shapes import ErrorShapes, Scope

log = logging.getLogger(__name__)

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
#: The same characters in decoded text (to make a path matchable or loggable).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


def control_character(raw: bytes) -> int | None:
    """The first C0 control character or DEL in `raw` once percent-decoded, if any."""
    if not raw:
        return None
    found = _CONTROL.search(raw)
    if found is None and b"%" in raw:  # percent-decoding is only needed when something is encoded
        found = _CONTROL.search(unquote_to_bytes(raw))
    return found.group()[0] if found else None


def refusal(part: str, char: int) -> InvalidInput:
    where = "path" if part == "path" else "query string"
    return InvalidInput(
        f"The {where} must not contain control characters",
        reason=Reason.INVALID_INPUT,
        target=part,
        metadata={TARGET_TYPE: "path_param" if part == "path" else "param", "char": f"0x{char:02x}"},
    )


class ControlCharacterFilter:
    """Pure ASGI (no per-request task or body copy): two regex scans of bytes per request."""

    def __init__(self, app: Any, shapes: ErrorShapes) -> None:
        self.app = app
        self._shapes = shapes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raw_path = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "surrogateescape")
            for part, raw in (("path", raw_path), ("query", scope.get("query_string", b""))):
                char = control_character(raw)
                if char is not None:
                    log.warning(
                        "refused %s %s: control character 0x%02x in the %s",
                        scope.get("method"),
                        _route_hint(scope),
                        char,
                        part,
                    )
                    await self._shapes.respond(scope, receive, send, refusal(part, char))
                    return
        await self.app(scope, receive, send)


def _route_hint(scope: Scope) -> str:
    """The path with every control character shown as ``?``, cut short: safe for one log line."""
    return CONTROL_CHARACTERS.sub("?", scope.get("path", ""))[:200].encode("ascii", "replace").decode()
