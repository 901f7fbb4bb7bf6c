"""Pure parts of the cloud push: RFC 3339 with nanoseconds, the expiry rules, the retry policy,
connection field validation, and the choice of wrapping (native first)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hsmbridge.core.backend import ExportWrapping
from hsmbridge.errors import CloudError, CloudUnavailable, InvalidInput, Unsupported
from hsmbridge.push.clouds.base import Retryable, choose_wrapping, with_retries
from hsmbridge.push.connections import split_fields
from hsmbridge.push.expiry import expiry_from, parse_rfc3339

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "2020-12-04T06:51:18.505860192Z",
            datetime(2020, 12, 4, 6, 51, 18, 505860, tzinfo=UTC),
        ),  # the seed's
        ("2020-12-04T06:51:18Z", datetime(2020, 12, 4, 6, 51, 18, tzinfo=UTC)),
        ("2020-12-04t06:51:18.5z", datetime(2020, 12, 4, 6, 51, 18, 500000, tzinfo=UTC)),
        ("2020-12-04T08:51:18.000000001+02:00", datetime(2020, 12, 4, 6, 51, 18, tzinfo=UTC)),
        ("2020-12-03T23:21:18-07:30", datetime(2020, 12, 4, 6, 51, 18, tzinfo=UTC)),
    ],
)
def test_rfc3339_up_to_nanoseconds(text: str, expected: datetime) -> None:
    assert parse_rfc3339(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2020-12-04 06:51:18Z",
        "2020-12-04T06:51:18",
        "2020-12-04T06:51:18.1234567890Z",
        "2020-13-04T06:51:18Z",
    ],
)
def test_not_rfc3339(text: str) -> None:
    with pytest.raises(InvalidInput) as bad:
        parse_rfc3339(text)
    assert bad.value.target == "valid_to"


def test_expiry_rules() -> None:
    assert expiry_from(None, None, NOW) is None
    assert expiry_from(False, None, NOW) is None
    later = "2027-01-01T00:00:00.123456789Z"
    expiry = expiry_from(True, later, NOW)
    assert expiry is not None and expiry.text == later and expiry.at.microsecond == 123456
    for flag, valid_to in (
        (True, None),
        (False, later),
        (True, "2026-12-01T11:59:59Z"),
        ("yes", later),
        (True, 5),
    ):
        with pytest.raises(InvalidInput):
            expiry_from(flag, valid_to, NOW)


def test_retries_back_off_honour_retry_after_and_give_up_with_the_last_error() -> None:
    slept: list[float] = []
    outcomes = iter([Retryable(CloudUnavailable("429"), delay=1.5), Retryable(CloudUnavailable("503"))])

    def attempt() -> str:
        error = next(outcomes, None)
        if error is not None:
            raise error
        return "ok"

    assert with_retries(attempt, sleep=slept.append, base_delay=0.1) == "ok"
    assert slept[0] == 1.5 and 0 <= slept[1] <= 0.4
    final = CloudUnavailable("still down")
    with pytest.raises(CloudUnavailable) as gave_up:
        with_retries(lambda: (_ for _ in ()).throw(Retryable(final)), attempts=3, sleep=slept.append)
    assert gave_up.value is final and len(slept) == 4
    with pytest.raises(CloudError):  # not retryable: raised at once
        with_retries(lambda: (_ for _ in ()).throw(CloudError("no")), sleep=slept.append)
    assert len(slept) == 4


def test_wrapping_native_first_then_fallback_else_unsupported_naming_the_setting() -> None:
    aws = (ExportWrapping.RSAES_OAEP_SHA_256, ExportWrapping.RSAES_OAEP_SHA_1)
    softhsm = {ExportWrapping.RSAES_OAEP_SHA_1: True, ExportWrapping.RSAES_OAEP_SHA_256: False}
    assert choose_wrapping("aws", aws, softhsm) is ExportWrapping.RSAES_OAEP_SHA_1
    assert (
        choose_wrapping("ibm", (ExportWrapping.RSAES_OAEP_SHA_256,), softhsm)
        is ExportWrapping.RSAES_OAEP_SHA_256
    )
    with pytest.raises(Unsupported, match=r"hsm\.export_software_fallback"):
        choose_wrapping("ibm", (ExportWrapping.RSAES_OAEP_SHA_256,), {ExportWrapping.RSAES_OAEP_SHA_1: True})


def test_connection_fields_split_settings_from_secrets_and_name_the_bad_field() -> None:
    settings, secrets = split_fields(
        "aws",
        {
            "name": "a",
            "cloud": "aws",
            "region": "eu-west-1",
            "access_key_id": "AKIA",
            "secret_access_key": "s",
        },
    )
    assert settings == {"region": "eu-west-1", "access_key_id": "AKIA"} and secrets == {
        "secret_access_key": "s"
    }
    for body, target in (
        ({"region": "r", "access_key_id": "a"}, "secret_access_key"),
        ({"region": "r", "access_key_id": "a", "secret_access_key": "s", "password": "x"}, "password"),
        ({"region": "r", "access_key_id": "a", "secret_access_key": "s", "endpoint": "ftp://x"}, "endpoint"),
        ({"region": "r", "access_key_id": "a", "secret_access_key": "s", "timeout": 0}, "timeout"),
    ):
        with pytest.raises(InvalidInput) as bad:
            split_fields("aws", body)
        assert bad.value.target == target
    with pytest.raises(InvalidInput):
        split_fields("gcp", {})
