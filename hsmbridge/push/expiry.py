"""`valid_to` and `key_expiration`, as the seed defines them, and what each cloud can express.

`valid_to` is RFC 3339 with up to nine fractional digits (the seed's example has nanoseconds);
Python's datetime keeps microseconds, so the instant is truncated to microseconds for the clouds
while the caller's own text is stored and echoed unchanged. `key_expiration: true` with a
`valid_to` means the material expires (AWS KEY_MATERIAL_EXPIRES, Huawei `expiration_time` in
epoch seconds, Key Protect `expirationDate` at creation only); false means it does not.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.push.clouds.base import Expiry

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(text: str, field: str = "valid_to") -> datetime:
    match = _RFC3339.match(text)
    if match is None:
        raise InvalidInput(
            f"{field} must be an RFC 3339 date-time such as 2027-12-04T06:51:18.505860192Z",
            reason=Reason.INVALID_FIELD,
            target=field,
        )
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0").ljust(6, "0")[:6])
    offset = timedelta(0)
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        local = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=UTC
        )
    except ValueError:
        raise InvalidInput(
            f"{field} is not a valid date-time", reason=Reason.INVALID_FIELD, target=field
        ) from None
    return local - offset


def expiry_from(key_expiration: object, valid_to: object, now: datetime) -> Expiry | None:
    """The request's expiry, or None for material that does not expire; 400 for any mismatch."""
    if key_expiration is not None and not isinstance(key_expiration, bool):
        raise InvalidInput(
            "key_expiration must be true or false", reason=Reason.INVALID_FIELD, target="key_expiration"
        )
    if valid_to is not None and not isinstance(valid_to, str):
        raise InvalidInput(
            "valid_to must be an RFC 3339 string", reason=Reason.INVALID_FIELD, target="valid_to"
        )
    if not key_expiration:
        if valid_to:
            raise InvalidInput(
                "valid_to needs key_expiration: true (material without expiry has no valid_to)",
                reason=Reason.INVALID_FIELD,
                target="valid_to",
            )
        return None
    if not valid_to:
        raise InvalidInput(
            "key_expiration: true needs valid_to", reason=Reason.MISSING_FIELD, target="valid_to"
        )
    at = parse_rfc3339(valid_to)
    if at <= now:
        raise InvalidInput("valid_to must be in the future", reason=Reason.INVALID_FIELD, target="valid_to")
    return Expiry(at=at, text=valid_to)
