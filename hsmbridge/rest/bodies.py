"""Reading request bodies and their fields the way Key Protect clients actually send them.

Why this is lenient where it is, and strict elsewhere:
- Content-Type is not trusted (§1.2, §8.3): the Go SDK sends none, others send vnd types or
  ``application/json``. Every body is parsed as JSON whatever the header says; 415 never happens.
- The Go SDK sends ``{"KeyRingID": ...}`` for ``keyRingID`` (§8.4), and the Key Protect server
  itself is Go, whose JSON decoder matches names case-insensitively. `get_field` does the same:
  the exact name first, then a unique case-insensitive match.
- Some documented examples quote numbers and booleans (``"expiration": "600"``,
  ``"preventKeyDeletion": "false"``), so `coerce_int`/`coerce_bool` accept those strings too.
- Base64 is the standard alphabet with padding, as Go's ``base64.StdEncoding`` decodes it: a
  value is either that or a 400 ``INVALID_FIELD_ERR`` naming the field, never a silent guess.

Every failure is a domain `InvalidInput` built by `hsmbridge.rest.errors`, so the error table
decides the wire shape. Messages never echo the offending value: it may be key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Protocol

from hsmbridge.rest.errors import bad_body, invalid_field, missing_field, no_body

_MISSING: Any = object()

#: Go's encoding/json rejects NaN and Infinity; so do we.
_JSON_CONSTANTS = frozenset({"NaN", "Infinity", "-Infinity"})

_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_B64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", re.ASCII)
_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


class _HasBody(Protocol):
    async def body(self) -> bytes: ...


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def parse_json(raw: bytes | str) -> Any | None:
    """Parse a body: blank → None, otherwise JSON or ``BAD_BODY_ERR``."""
    if isinstance(raw, bytes | bytearray) and not raw.strip():
        return None
    if isinstance(raw, str) and not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        # Position only: the message of a JSONDecodeError never quotes the input, but keep it ours.
        raise bad_body(f"invalid JSON at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError):  # bad encoding, NaN/Infinity, absurd nesting
        raise bad_body("invalid JSON") from None


async def read_json(request: _HasBody) -> Any | None:
    """The request body as JSON whatever Content-Type says; an empty body is None."""
    return parse_json(await request.body())


def require_object(body: Any, *, required: bool = True) -> dict[str, Any]:
    """A non-collection body (wrap, unwrap, rotate, import_token, PATCH) as a dict.

    `required=False` turns a missing body into ``{}`` (wrap, rotate of a generated key); a
    required one answers ``NO_BODY_ERR`` as Key Protect does for unwrap/rewrap.
    """
    if body is None:
        if required:
            raise no_body()
        return {}
    if not isinstance(body, dict):
        raise bad_body("the body must be a JSON object")
    return body


# --- fields ---------------------------------------------------------------------------------


def _find(obj: Mapping[str, Any], name: str) -> Any:
    if name in obj:
        return obj[name]
    folded = name.casefold()
    matches = [key for key in obj if isinstance(key, str) and key.casefold() == folded]
    if len(matches) > 1:
        raise bad_body(f"the field '{name}' is given more than once")
    return obj[matches[0]] if matches else _MISSING


def get_field(obj: Mapping[str, Any], name: str, default: Any = None) -> Any:
    """`obj[name]`, else its one case-insensitive match (Go SDK's ``KeyRingID``), else `default`.

    Two case-variants of the same name (``keyRingID`` and ``KeyRingID``) but no exact one is
    ambiguous and answers ``BAD_BODY_ERR`` rather than picking one.
    """
    value = _find(obj, name)
    return default if value is _MISSING else value


def has_field(obj: Mapping[str, Any], name: str) -> bool:
    return _find(obj, name) is not _MISSING


def require_field(obj: Mapping[str, Any], name: str) -> Any:
    """The field's value; absent or null answers ``MISSING_FIELD_ERR`` ("The field 'x' is required.")."""
    value = get_field(obj, name)
    if value is None:
        raise missing_field(name)
    return value


def require_str(obj: Mapping[str, Any], name: str, *, expectation: str = "a string") -> str:
    value = require_field(obj, name)
    if not isinstance(value, str):
        raise invalid_field(name, expectation)
    return value


def b64decode_field(value: Any, field: str, *, expectation: str = "a base64 encoded value") -> bytes:
    """Decode standard, padded base64 strictly; anything else is ``INVALID_FIELD_ERR`` for `field`.

    CR and LF are ignored (Go's decoder does the same, and ``base64`` CLIs wrap long output);
    any other character outside the alphabet, a missing ``=`` or a short final group is an error.
    `expectation` completes Key Protect's sentence: "The field 'plaintext' must be: <expectation>".
    """
    if not isinstance(value, str):
        raise invalid_field(field, expectation)
    text = value.replace("\r", "").replace("\n", "")
    if not _B64_RE.fullmatch(text):
        raise invalid_field(field, expectation)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # pragma: no cover - the regex admits only valid input
        raise invalid_field(field, expectation) from None


def b64encode(data: bytes) -> str:
    """Standard base64 with padding: the only encoding Key Protect clients decode."""
    return base64.b64encode(data).decode("ascii")


def coerce_bool(value: Any, field: str, *, default: bool | None = None) -> bool:
    """A JSON boolean, or the strings "true"/"false" in any case (registrations quote it).

    None (absent or null) gives `default`, or ``MISSING_FIELD_ERR`` when there is none.
    """
    if value is None:
        if default is None:
            raise missing_field(field)
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
    raise invalid_field(field, "a boolean")


def coerce_int(
    value: Any,
    field: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    default: int | None = None,
) -> int:
    """A JSON integer or a decimal string of one (``"600"``), within [`minimum`, `maximum`].

    Booleans and floats are refused, as Go's decoder refuses them for an int field. None (absent or
    null) gives `default`, or ``MISSING_FIELD_ERR`` when there is none.
    """
    if value is None:
        if default is None:
            raise missing_field(field)
        return default
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _INT_RE.fullmatch(value) and len(value) <= 20:
        number = int(value)
    if (
        number is None
        or (minimum is not None and number < minimum)
        or (maximum is not None and number > maximum)
    ):
        raise invalid_field(field, _range_text(minimum, maximum))
    return number


def _range_text(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f"an integer between {minimum} and {maximum}"
    if minimum is not None:
        return f"an integer greater than or equal to {minimum}"
    if maximum is not None:
        return f"an integer less than or equal to {maximum}"
    return "an integer"


def parse_rfc3339(text: str) -> datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime, or None when `text` is not one.

    Accepts up to 9 fractional digits (Go's RFC3339Nano, Thales' examples) and truncates them to
    microseconds; requires the ``T`` and an explicit offset, as RFC 3339 does.
    """
    if not isinstance(text, str):
        return None
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        if zulu:
            tz: timezone = UTC
        else:
            hours, minutes = int(off_h), int(off_m)
            if hours > 23 or minutes > 59:
                return None
            offset = timedelta(hours=hours, minutes=minutes)
            tz = timezone(-offset if sign == "-" else offset)
        micro = int((fraction or "0").ljust(6, "0")[:6])
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz
        )
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_timestamp_field(value: Any, field: str) -> datetime:
    """A body timestamp (``expirationDate``, ``timestamp``) or ``INVALID_FIELD_ERR``."""
    parsed = parse_rfc3339(value) if isinstance(value, str) else None
    if parsed is None:
        raise invalid_field(field, "a valid RFC3339 timestamp")
    return parsed
