"""Request headers (spec §1.2): bluemix-instance, correlation-id, prefer, x-kms-key-ring."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from hsmbridge.errors import InvalidInput
from hsmbridge.rest.errors import Operations, to_http_error
from hsmbridge.rest.headers import (
    BLUEMIX_INSTANCE,
    CORRELATION_ID,
    KEY_TOTAL,
    Prefer,
    correlation_id,
    get_header,
    key_ring,
    parse_prefer,
    require_instance,
    response_headers,
    wants_representation,
)

INSTANCE = "a192d603-0b8d-452f-aac3-f9e1f95e7411"


def test_header_names() -> None:
    assert (BLUEMIX_INSTANCE, CORRELATION_ID, KEY_TOTAL) == (
        "bluemix-instance",
        "correlation-id",
        "Key-Total",
    )


def test_lookup_is_case_insensitive_for_starlette_headers_and_plain_dicts() -> None:
    assert get_header(Headers({"Bluemix-Instance": INSTANCE}), "bluemix-instance") == INSTANCE
    assert get_header({"Bluemix-Instance": INSTANCE}, "bluemix-instance") == INSTANCE
    assert get_header({}, "bluemix-instance") is None


# --- prefer ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("return=minimal", Prefer.MINIMAL),
        ("return=representation", Prefer.REPRESENTATION),
        ("Return = Representation", Prefer.REPRESENTATION),
        ("RETURN=MINIMAL", Prefer.MINIMAL),
        ('return="minimal"', Prefer.MINIMAL),
        ("respond-async, return=minimal", Prefer.MINIMAL),
        ("return=representation; charset=utf-8", Prefer.REPRESENTATION),
        ("  return=minimal  ", Prefer.MINIMAL),
        ("return=everything", None),
        ("respond-async", None),
        ("", None),
        (None, None),
    ],
)
def test_prefer_parsing(value: str | None, expected: Prefer | None) -> None:
    assert parse_prefer(value) is expected


def test_defaults_differ_by_endpoint() -> None:
    # create/restore return the key unless asked not to; delete/purge return nothing unless asked.
    assert wants_representation(None, default=True) is True
    assert wants_representation("return=minimal", default=True) is False
    assert wants_representation(None, default=False) is False
    assert wants_representation("return=representation", default=False) is True
    assert wants_representation("return=bogus", default=False) is False


# --- correlation-id ---------------------------------------------------------------------------------


def test_correlation_id_is_echoed() -> None:
    headers = {"correlation-id": "c27b7948-4a1f-4cbd-8770-cb3616888e27"}
    assert response_headers(headers) == {"correlation-id": "c27b7948-4a1f-4cbd-8770-cb3616888e27"}


@pytest.mark.parametrize("value", ["", "has space", "x" * 129, "tab\there", "naïve"])
def test_unsafe_correlation_ids_are_not_echoed(value: str) -> None:
    assert correlation_id({"correlation-id": value}) is None
    assert response_headers({"correlation-id": value}, generate=lambda: "generated") == {
        "correlation-id": "generated"
    }


def test_a_missing_correlation_id_can_be_generated() -> None:
    assert response_headers({}) == {}
    assert correlation_id({}, generate=lambda: "generated") == "generated"


# --- key ring ---------------------------------------------------------------------------------------


def test_key_ring_header() -> None:
    assert key_ring({"x-kms-key-ring": "example-key-ring"}) == "example-key-ring"
    assert key_ring({"X-Kms-Key-Ring": " default "}) == "default"
    assert key_ring({"x-kms-key-ring": "  "}) is None
    assert key_ring({}) is None


# --- bluemix-instance -------------------------------------------------------------------------------


def test_the_instance_scopes_everything() -> None:
    assert require_instance({"bluemix-instance": INSTANCE}) == INSTANCE
    assert require_instance(Headers({"Bluemix-Instance": f" {INSTANCE} "})) == INSTANCE
    assert require_instance({"bluemix-instance": "tenant-a"}) == "tenant-a"


@pytest.mark.parametrize("headers", [{}, {"bluemix-instance": ""}, {"bluemix-instance": "   "}])
def test_a_missing_instance_is_a_400_naming_the_header(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidInput) as caught:
        require_instance(headers)
    status, body = to_http_error(caught.value, Operations.LIST_KEYS)
    assert status == 400
    assert body["resources"][0]["reasons"][0] == {
        "code": "MISSING_FIELD_ERR",
        "message": "The param 'bluemix-instance' is required.",
        "status": 400,
        "moreInfo": "https://cloud.ibm.com/apidocs/key-protect",
        "target": {"type": "param", "name": "bluemix-instance"},
    }


@pytest.mark.parametrize("value", ["a:b", "acct/inst", "-leading-dash", "x" * 129, "in stance", "é"])
def test_an_instance_that_cannot_be_a_crn_segment_is_invalid(value: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        require_instance({"bluemix-instance": value})
    reason = to_http_error(caught.value, Operations.LIST_KEYS).body["resources"][0]["reasons"][0]
    assert reason["code"] == "INVALID_PARAM_ERR"
    assert reason["target"] == {"type": "param", "name": "bluemix-instance"}
