"""Key Protect API v2: ``POST /api/v2/event_ack`` (E36) — acknowledging key lifecycle events.

Integrated services acknowledge Hyperwarp lifecycle events here. There is no event bus behind
this facade, so an acknowledgement is validated the way Key Protect validates it and then only
logged (one line per event, for operators correlating with the services that sent it); the
answer is 204. What is checked, per resource of the ``event_acknowledge+json`` collection
(one, or several for the "BatchEvents" form):
- ``eventId``: a non-empty string (``MISSING_FIELD_ERR`` when absent);
- ``timestamp``: RFC 3339. Key Protect answers a missing *or* malformed one with
  ``MISSING_FIELD_ERR`` "The field 'timestamp' must be: a valid RFC3339 timestamp", and so do we;
- ``adopterKeyState``: a string when given; ``keyStateData``: an object when given, whose
  ``keyVersion`` is a string when given.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.rest.bodies import get_field, parse_rfc3339, read_json
from hsmbridge.rest.collections import parse_collection
from hsmbridge.rest.context import call_context, empty, endpoint
from hsmbridge.rest.errors import Operations, bad_body, invalid_field, missing_field

log = logging.getLogger(__name__)

router = APIRouter(tags=["Events"])

#: A batch larger than this is not an acknowledgement but a flood.
MAX_EVENTS = 1000
MAX_TEXT = 256


def _invalid_timestamp() -> InvalidInput:
    return InvalidInput(
        "The field 'timestamp' must be: a valid RFC3339 timestamp",
        reason=Reason.MISSING_FIELD,
        target="timestamp",
    )


def _text(resource: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = get_field(resource, name)
    if value is None or value == "":
        if required:
            raise missing_field(name)
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise invalid_field(name, f"a string of at most {MAX_TEXT} printable characters")
    return value


def validate_event(resource: dict[str, Any]) -> dict[str, Any]:
    """One acknowledgement, checked; returns the fields worth logging."""
    event_id = _text(resource, "eventId", required=True)
    timestamp = get_field(resource, "timestamp")
    if not isinstance(timestamp, str) or parse_rfc3339(timestamp) is None:
        raise _invalid_timestamp()
    state = _text(resource, "adopterKeyState", required=False)
    key_version = None
    data = get_field(resource, "keyStateData")
    if data is not None:
        if not isinstance(data, dict):
            raise invalid_field("keyStateData", "an object")
        key_version = _text(data, "keyVersion", required=False)
    return {"event_id": event_id, "adopter_key_state": state, "key_version": key_version}


@router.post(
    "/api/v2/event_ack",
    summary="Acknowledge key lifecycle events (E36)",
    description="204. Body: an `event_acknowledge+json` collection of one or more events.",
    status_code=204,
)
@endpoint(Operations.EVENT_ACK)
async def event_ack(request: Request) -> Response:
    ctx = call_context(request)
    resources = parse_collection(
        await read_json(request),
        max_resources=MAX_EVENTS,
        too_many=lambda: bad_body(f"at most {MAX_EVENTS} events per request"),
    )
    events = [validate_event(resource) for resource in resources]
    for event in events:
        log.info(
            "event acknowledged",
            extra={"tenant": ctx.tenant, "actor": ctx.actor, "correlation_id": ctx.correlation_id, **event},
        )
    return empty(request, 204)
