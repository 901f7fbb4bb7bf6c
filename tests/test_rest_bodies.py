"""Request bodies and fields as Key Protect clients send them (spec §1.2, §6.2, §8.3, §8.4)."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.rest.bodies import (
    b64decode_field,
    b64encode,
    coerce_bool,
    coerce_int,
    get_field,
    has_field,
    parse_json,
    parse_rfc3339,
    parse_timestamp_field,
    read_json,
    require_field,
    require_object,
    require_str,
)
from hsmbridge.rest.errors import Operations, to_http_error


def make_request(body: bytes, content_type: str | None) -> Request:
    """A real Starlette request whose body arrives in two chunks, as over a socket."""
    headers = [(b"content-type", content_type.encode())] if content_type is not None else []
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v2/keys",
        "headers": headers,
        "query_string": b"",
    }
    return Request(scope, receive)


def read(body: bytes, content_type: str | None = None) -> Any:
    return asyncio.run(read_json(make_request(body, content_type)))


def reason(exc: InvalidInput, operation=Operations.CREATE_KEY) -> dict:
    return to_http_error(exc, operation).body["resources"][0]["reasons"][0]


CREATE_BODY = {
    "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
    "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "Root-key", "extractable": False}],
}


# --- read_json: Content-Type is not trusted -----------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,  # the Go SDK sends none
        "application/json",
        "application/vnd.ibm.kms.key+json",
        "application/vnd.ibm.kms.key_action_wrap+json",
        "text/plain",
        "application/x-www-form-urlencoded",
    ],
)
def test_the_body_is_json_whatever_content_type_says(content_type: str | None) -> None:
    assert read(json.dumps(CREATE_BODY).encode(), content_type) == CREATE_BODY


@pytest.mark.parametrize("body", [b"", b"   ", b"\r\n"])
def test_an_empty_body_is_none(body: bytes) -> None:
    assert read(body, "application/json") is None


def test_wrap_with_an_empty_object_is_an_empty_object() -> None:
    assert read(b"{}") == {}


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b'{"plaintext": }',
        b"not json",
        b'{"a": NaN}',
        b"[Infinity]",
        b"1e999",
        b"\xff\xfe\x00",
        b"[" * 100_000,
    ],
)
def test_invalid_json_is_bad_body(body: bytes) -> None:
    with pytest.raises(InvalidInput) as caught:
        read(body)
    assert caught.value.reason is Reason.BAD_BODY
    assert reason(caught.value)["code"] == "BAD_BODY_ERR"


def test_bad_json_errors_never_quote_the_input() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_json(b'{"payload": "c2VjcmV0", oops}')
    assert "c2VjcmV0" not in caught.value.message


def test_utf8_bom_is_tolerated() -> None:
    assert parse_json(b"\xef\xbb\xbf{}") == {}


def test_require_object() -> None:
    assert require_object(None, required=False) == {}
    assert require_object({"ciphertext": "x"}) == {"ciphertext": "x"}
    with pytest.raises(InvalidInput) as caught:
        require_object(None)  # unwrap with no body
    assert reason(caught.value, Operations.UNWRAP)["code"] == "NO_BODY_ERR"
    with pytest.raises(InvalidInput) as caught:
        require_object(["ciphertext"])
    assert reason(caught.value)["code"] == "BAD_BODY_ERR"


# --- fields -------------------------------------------------------------------------------------


def test_go_sdk_keyringid_matches_keyringid() -> None:
    assert get_field({"KeyRingID": "new-key-ring"}, "keyRingID") == "new-key-ring"
    assert has_field({"KeyRingID": "new-key-ring"}, "keyRingID")


def test_the_exact_name_wins_over_case_variants() -> None:
    assert get_field({"keyRingID": "exact", "KeyRingID": "other"}, "keyRingID") == "exact"


def test_two_case_variants_without_the_exact_name_are_ambiguous() -> None:
    with pytest.raises(InvalidInput) as caught:
        get_field({"KeyRingID": "a", "KEYRINGID": "b"}, "keyRingID")
    assert caught.value.reason is Reason.BAD_BODY


def test_absent_fields() -> None:
    assert get_field({}, "name") is None
    assert get_field({}, "name", "default") == "default"
    assert not has_field({}, "name")
    assert has_field({"name": None}, "name")


def test_required_fields() -> None:
    with pytest.raises(InvalidInput) as caught:
        require_field({"aad": []}, "ciphertext")
    assert reason(caught.value, Operations.UNWRAP) == {
        "code": "MISSING_FIELD_ERR",
        "message": "The field 'ciphertext' is required.",
        "status": 400,
        "moreInfo": "https://cloud.ibm.com/apidocs/key-protect",
        "target": {"type": "field", "name": "ciphertext"},
    }
    with pytest.raises(InvalidInput):
        require_field({"ciphertext": None}, "ciphertext")
    assert require_str({"name": "Root-key"}, "name") == "Root-key"
    with pytest.raises(InvalidInput) as caught:
        require_str({"name": 7}, "name")
    assert reason(caught.value)["code"] == "INVALID_FIELD_ERR"


# --- base64 -------------------------------------------------------------------------------------

SEED_PLAINTEXT = "tF9ss0W9HQUVkddcjSeGg/MqZFs2CVh/FFKLPLLnOwY="


def test_seed_plaintext_decodes_to_a_32_byte_dek() -> None:
    assert len(b64decode_field(SEED_PLAINTEXT, "plaintext")) == 32


def test_seed_nonce_and_iv_decode_to_12_bytes() -> None:
    assert len(b64decode_field("8zJE9pKVdXVe/nLb", "nonce")) == 12
    assert len(b64decode_field("puQrzDX7gU1TcTTx", "iv")) == 12
    assert len(b64decode_field("DVy/Dbk37X8gSVwRA5U6vrHdWQy8T2ej+riIVw==", "encryptedNonce")) == 28


@pytest.mark.parametrize(
    "value",
    [
        "tF9ss0W9HQUVkddcjSeGg/MqZFs2CVh/FFKLPLLnOwY",  # padding missing
        "tF9ss0W9HQUVkddcjSeGg_MqZFs2CVh_FFKLPLLnOwY=",  # URL-safe alphabet
        "tF9ss0W9 HQUVkddcjSeGg/MqZFs2CVh/FFKLPLLnOwY=",  # a space
        "tF9ss0W9HQUVkddcjSeGg/MqZFs2CVh/FFKLPLLnOwY=AAAA",  # data after padding
        "A",
        "AB=",
        "====",
        "dGVzdA==dGVzdA==",
        42,
        None,
        ["dGVzdA=="],
    ],
)
def test_anything_but_standard_padded_base64_is_invalid_field(value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        b64decode_field(value, "plaintext", expectation="a base64 encoded key material")
    assert reason(caught.value, Operations.WRAP) == {
        "code": "INVALID_FIELD_ERR",
        "message": "The field 'plaintext' must be: a base64 encoded key material",
        "status": 400,
        "moreInfo": "https://cloud.ibm.com/apidocs/key-protect",
        "target": {"type": "field", "name": "plaintext"},
    }


def test_line_breaks_are_ignored_like_gos_decoder_does() -> None:
    wrapped = SEED_PLAINTEXT[:20] + "\r\n" + SEED_PLAINTEXT[20:] + "\n"
    assert b64decode_field(wrapped, "payload") == base64.b64decode(SEED_PLAINTEXT)


def test_the_default_expectation_is_the_rotate_payload_wording() -> None:
    with pytest.raises(InvalidInput) as caught:
        b64decode_field("%%%", "payload")
    assert caught.value.message == "The field 'payload' must be: a base64 encoded value"


def test_empty_string_is_empty_bytes() -> None:
    assert b64decode_field("", "plaintext") == b""


@given(st.binary(max_size=300))
def test_base64_round_trips(data: bytes) -> None:
    assert b64decode_field(b64encode(data), "payload") == data


@given(st.text(max_size=80))
def test_base64_accepts_exactly_what_strict_stdlib_decoding_accepts(text: str) -> None:
    try:
        decoded = b64decode_field(text, "payload")
    except InvalidInput as exc:
        assert exc.reason is Reason.INVALID_FIELD
        return
    cleaned = text.replace("\r", "").replace("\n", "")
    assert decoded == base64.b64decode(cleaned, validate=True)
    assert b64encode(decoded) == cleaned


# --- numbers, booleans, timestamps ---------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [(600, 600), ("600", 600), ("+600", 600), (86400, 86400)])
def test_import_token_expiration_accepts_integers_and_numeric_strings(value: Any, expected: int) -> None:
    assert coerce_int(value, "expiration", minimum=300, maximum=86400, default=600) == expected


@pytest.mark.parametrize(
    "value", [299, 86401, "6e2", "600.0", 600.0, True, "", " 600", "٦٠٠", "1_000", [600]]
)
def test_import_token_expiration_rejects_the_rest(value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        coerce_int(value, "expiration", minimum=300, maximum=86400, default=600)
    assert caught.value.message == "The field 'expiration' must be: an integer between 300 and 86400"
    assert caught.value.target == "expiration"


def test_absent_numbers_take_the_default_or_are_missing() -> None:
    assert coerce_int(None, "expiration", minimum=300, maximum=86400, default=600) == 600
    assert coerce_int(None, "maxAllowedRetrievals", minimum=1, maximum=500, default=1) == 1
    with pytest.raises(InvalidInput) as caught:
        coerce_int(None, "interval_month", minimum=1, maximum=12)
    assert caught.value.reason is Reason.MISSING_FIELD


def test_go_sdk_sends_minus_one_interval_to_get_the_range_error() -> None:
    with pytest.raises(InvalidInput) as caught:
        coerce_int(-1, "interval_month", minimum=1, maximum=12)
    assert caught.value.message == "The field 'interval_month' must be: an integer between 1 and 12"


@pytest.mark.parametrize(
    ("value", "expected"), [(True, True), (False, False), ("false", False), ("TRUE", True), ("False", False)]
)
def test_prevent_key_deletion_accepts_booleans_and_their_strings(value: Any, expected: bool) -> None:
    assert coerce_bool(value, "preventKeyDeletion") is expected


@pytest.mark.parametrize("value", ["yes", "1", 1, 0, "", "t", [True]])
def test_booleans_reject_everything_else(value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        coerce_bool(value, "preventKeyDeletion")
    assert caught.value.message == "The field 'preventKeyDeletion' must be: a boolean"


def test_absent_booleans() -> None:
    assert coerce_bool(None, "extractable", default=False) is False
    with pytest.raises(InvalidInput):
        coerce_bool(None, "enabled")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-10-12T07:20:50.52Z", datetime(2019, 10, 12, 7, 20, 50, 520000, tzinfo=UTC)),
        ("2020-12-04T06:51:18.505860192Z", datetime(2020, 12, 4, 6, 51, 18, 505860, tzinfo=UTC)),
        ("2020-08-12T23:38:09Z", datetime(2020, 8, 12, 23, 38, 9, tzinfo=UTC)),
        ("2020-08-12t23:38:09z", datetime(2020, 8, 12, 23, 38, 9, tzinfo=UTC)),
        ("2020-08-13T01:38:09+02:00", datetime(2020, 8, 12, 23, 38, 9, tzinfo=UTC)),
        ("2020-08-12T20:08:09-03:30", datetime(2020, 8, 12, 23, 38, 9, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps(text: str, expected: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text",
    [
        "2020-08-12 23:38:09Z",  # no T
        "2020-08-12T23:38:09",  # no offset
        "2020-08-12",
        "2020-13-12T23:38:09Z",
        "2020-02-30T23:38:09Z",
        "2020-08-12T24:00:00Z",
        "2020-08-12T23:38:60Z",
        "2020-08-12T23:38:09+24:00",
        "2020-08-12T23:38:09.Z",
        "2020-08-12T23:38:09.1234567890Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-23:59",
        "２０２０-08-12T23:38:09Z",
        "YYYY-MM-DDTHH:mm:SSZ",
    ],
)
def test_not_rfc3339(text: str) -> None:
    assert parse_rfc3339(text) is None


def test_timestamp_fields() -> None:
    assert parse_timestamp_field("2020-08-12T23:38:09Z", "expirationDate") == datetime(
        2020, 8, 12, 23, 38, 9, tzinfo=UTC
    )
    with pytest.raises(InvalidInput) as caught:
        parse_timestamp_field("tomorrow", "timestamp")
    assert caught.value.message == "The field 'timestamp' must be: a valid RFC3339 timestamp"
    with pytest.raises(InvalidInput):
        parse_timestamp_field(1597275489, "expirationDate")


@given(st.text(max_size=40))
def test_rfc3339_parser_never_raises(text: str) -> None:
    parsed = parse_rfc3339(text)
    assert parsed is None or parsed.tzinfo is UTC
