"""``POST /api/v2/event_ack`` (E36) over raw HTTP: validation, 204, batches, quirks."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from rest_fixtures import Api

pytest_plugins = ("services_fixtures", "rest_fixtures")
pytestmark = pytest.mark.softhsm

PATH = "/api/v2/event_ack"
ACK = "application/vnd.ibm.kms.event_acknowledge+json"


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "eventId": "f2bd5ba6-0000-4000-8000-000000000001",
        "adopterKeyState": "DEK_ENABLED",
        "timestamp": "2026-01-01T00:00:00Z",
        "keyStateData": {"keyVersion": "fadedbee-0000-0000-0000-1234567890ab"},
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def acks(*events: dict[str, Any], total: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"collectionType": ACK, "collectionTotal": len(events) if total is None else total},
        "resources": list(events),
    }


def reason(response: httpx.Response) -> dict[str, Any]:
    return response.json()["resources"][0]["reasons"][0]  # type: ignore[no-any-return]


def test_an_acknowledgement_is_204_with_no_body_and_is_logged(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="hsmbridge.rest.events"):
        response = api.post(PATH, json=acks(event()), headers=api.kp(correlation_id="c-e"))
    assert (response.status_code, response.content) == (204, b"")
    assert response.headers["correlation-id"] == "c-e"
    record = next(r for r in caplog.records if r.name == "hsmbridge.rest.events")
    assert record.__dict__["event_id"] == "f2bd5ba6-0000-4000-8000-000000000001"
    assert record.__dict__["tenant"] == api.instance


def test_batches_fractional_timestamps_offsets_and_no_content_type(api: Api) -> None:
    batch = acks(
        event(eventId="e-1", timestamp="2019-10-12T07:20:50.52Z"),
        event(eventId="e-2", timestamp="2026-01-01T01:00:00+01:00", keyStateData=None, adopterKeyState=None),
    )
    response = api.post(PATH, content=json.dumps(batch).encode(), headers=api.kp())
    assert response.status_code == 204, response.text


@pytest.mark.parametrize(
    "timestamp", [None, "", "yesterday", "2026-01-01", "2026-01-01 00:00:00Z", 1700000000]
)
def test_a_missing_or_malformed_timestamp_is_missing_field(api: Api, timestamp: Any) -> None:
    payload = event()
    if timestamp is None:
        del payload["timestamp"]
    else:
        payload["timestamp"] = timestamp
    response = api.post(PATH, json=acks(payload), headers=api.kp())
    assert response.status_code == 400
    assert reason(response)["code"] == "MISSING_FIELD_ERR"
    assert reason(response)["message"] == "The field 'timestamp' must be: a valid RFC3339 timestamp"
    assert reason(response)["target"] == {"type": "field", "name": "timestamp"}
    assert response.json()["resources"][0]["errorMsg"] == (
        "Bad Request: Event could not be acknowledged. See 'reasons' for more details."
    )


@pytest.mark.parametrize(
    ("payload", "code", "target"),
    [
        (event(eventId=None), "MISSING_FIELD_ERR", "eventId"),
        (event(eventId=""), "MISSING_FIELD_ERR", "eventId"),
        (event(eventId=42), "INVALID_FIELD_ERR", "eventId"),
        (event(adopterKeyState=["DEK_ENABLED"]), "INVALID_FIELD_ERR", "adopterKeyState"),
        (event(keyStateData="v1"), "INVALID_FIELD_ERR", "keyStateData"),
        (event(keyStateData={"keyVersion": 3}), "INVALID_FIELD_ERR", "keyVersion"),
    ],
)
def test_bad_fields_are_400(api: Api, payload: dict[str, Any], code: str, target: str) -> None:
    response = api.post(PATH, json=acks(payload), headers=api.kp())
    assert (response.status_code, reason(response)["code"]) == (400, code)
    assert reason(response)["target"]["name"] == target


def test_one_bad_event_in_a_batch_fails_the_request(api: Api) -> None:
    response = api.post(PATH, json=acks(event(), event(timestamp="nope")), headers=api.kp())
    assert (response.status_code, reason(response)["code"]) == (400, "MISSING_FIELD_ERR")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (None, "NO_BODY_ERR"),
        ({"metadata": {}, "resources": [event()]}, "BAD_BODY_ERR"),
        (acks(event(), total=3), "COLLECTION_TOTAL_MISMATCH_ERR"),
        (acks(), "BAD_BODY_ERR"),
        ({"eventId": "bare", "timestamp": "2026-01-01T00:00:00Z"}, "BAD_BODY_ERR"),
    ],
)
def test_bad_envelopes_are_400(api: Api, body: Any, code: str) -> None:
    if body is None:
        response = api.post(PATH, headers=api.kp())
    else:
        response = api.post(PATH, json=body, headers=api.kp())
    assert (response.status_code, reason(response)["code"]) == (400, code)


def test_credentials_and_instance_are_required(api: Api) -> None:
    assert api.post(PATH, json=acks(event()), headers={"bluemix-instance": api.instance}).status_code == 401
    response = api.post(PATH, json=acks(event()), headers={"authorization": "Bearer alice-token"})
    assert response.status_code == 400
    assert reason(response)["target"] == {"type": "param", "name": "bluemix-instance"}
