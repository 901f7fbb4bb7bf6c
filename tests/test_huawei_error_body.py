"""The one mapping from domain errors to Huawei's error body (huawei/errors.py): every class of
failure, including the gate's own (401, 403, 429) and the HSM's (502), gets Huawei's shape, a
Huawei code and a status the seeds list; 5xx and 401 texts are fixed, so nothing below the domain
layer (or which authentication check failed) reaches a body."""

from __future__ import annotations

import pytest

from hsmbridge.core import external_keys as ext
from hsmbridge.errors import (
    Conflict,
    HsmUnavailable,
    IntegrityError,
    InternalError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
)
from hsmbridge.huawei import errors
from hsmbridge.security.jwt import CredentialsRejected


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (CredentialsRejected("bad_signature"), 401, "APIGW.0301"),
        (PermissionDenied("the caller may not use this instance"), 403, "KMS.0307"),
        (ResourceExhausted("rate limited", reason=Reason.RATE_LIMITED), 429, "APIGW.0308"),
        (HsmUnavailable("token gone"), 502, "KMS.0102"),
        (InternalError("database error in get_key: secret detail"), 500, "KMS.0101"),
        (RuntimeError("boom /etc/passwd"), 500, "KMS.0101"),
        (NotFound("Key does not exist", reason=Reason.KEY_NOT_FOUND), 404, "KMS.0207"),
        (IntegrityError("tag mismatch at byte 3"), 400, "KMS.2201"),
        (InvalidInput("bad"), 400, "KMS.0308"),
        (ext.refused(Conflict("x", reason=Reason.INVALID_STATE), ext.NOT_PENDING_IMPORT), 400, "KMS.0310"),
        (ext.refused(Conflict("x", reason=Reason.INVALID_STATE), ext.PENDING_DELETION), 400, "KMS.0210"),
        (errors.invalid("key_alias", errors.INVALID_ALIAS), 400, "KMS.1101"),
    ],
)
def test_each_failure_gets_a_huawei_code_and_status(exc: BaseException, status: int, code: str) -> None:
    error = errors.to_huawei_error(exc)
    assert (error.status, error.code) == (status, code)
    assert set(error.body) == {"error"} and set(error.body["error"]) == {"error_code", "error_msg"}


@pytest.mark.parametrize(
    "exc",
    [
        InternalError("database error: password=hunter2"),
        RuntimeError("Traceback (most recent call last)"),
        CredentialsRejected("stale_date"),
        IntegrityError("tag mismatch at byte 3"),
    ],
)
def test_fixed_texts_reveal_nothing_below_the_domain_layer(exc: BaseException) -> None:
    message = errors.to_huawei_error(exc).message
    for secret in ("hunter2", "Traceback", "stale_date", "byte 3"):
        assert secret not in message
