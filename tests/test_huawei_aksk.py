"""AK/SK signature verification (security/aksk.py) against requests signed by Huawei's own signer
(`huaweicloudsdkcore.signer.signer.Signer`, the code every huaweicloudsdk* client signs with).

Each vector is an `SdkRequest` signed by the SDK; the verifier sees what would arrive on the wire
(method, path, query, the headers the signer set, the body) and must accept it — and refuse it
after any signed part changes."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer

from hsmbridge.security import aksk
from hsmbridge.security.jwt import CredentialsRejected

AK = "HSMBRIDGEVECTORAK01"
SK = "vector-secret-key"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
PATH = "/v1.0/0f1e2d3c4b5a69788796a5b4c3d2e1f0/kms/describe-key"


def sdk_signed(
    body: bytes = b'{"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f"}',
    *,
    path: str = PATH,
    query: list[tuple[str, object]] | None = None,
    sk: str = SK,
    when: datetime = NOW,
    headers: dict[str, str] | None = None,
) -> aksk.SignedRequest:
    request = SdkRequest(
        method="POST",
        schema="http",
        host="127.0.0.1:8080",
        resource_path=path,
        query_params=list(query or []),
        header_params={
            "Content-Type": "application/json;charset=UTF-8",
            "X-Project-Id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            "X-Sdk-Date": when.strftime("%Y%m%dT%H%M%SZ"),
            **(headers or {}),
        },
        body=body,
    )
    Signer(BasicCredentials(AK, sk)).sign(request)
    raw_query = request.uri.partition("?")[2]
    return aksk.SignedRequest(
        "POST", path, raw_query, dict(request.header_params), bytes(request.body or b"")
    )


def verifier(now: datetime = NOW) -> aksk.AkSkVerifier:
    return aksk.AkSkVerifier(lambda ak: SK.encode() if ak == AK else None, now=lambda: now)


def rejected(request: aksk.SignedRequest, cause: str, now: datetime = NOW) -> None:
    with pytest.raises(CredentialsRejected) as info:
        verifier(now).verify(request)
    assert info.value.cause == cause


def test_a_request_signed_by_the_sdk_verifies() -> None:
    assert verifier().verify(sdk_signed()) == AK


def test_query_parameters_and_an_empty_body_are_canonicalised_as_the_sdk_does() -> None:
    request = sdk_signed(b"", query=[("marker", "10"), ("limit", 2), ("a b", "c~d/e")])
    assert verifier().verify(request) == AK


def test_percent_encoded_path_segments_verify() -> None:
    assert verifier().verify(sdk_signed(path="/v1.0/proj%3Aa/kms/describe-key")) == AK


def test_a_body_altered_after_signing_is_refused() -> None:
    signed = sdk_signed()
    altered = json.dumps({"key_id": "ffffffff-e727-4d9c-b35d-f84bb474a37f"}).encode()
    rejected(
        aksk.SignedRequest(signed.method, signed.path, signed.query, signed.headers, altered), "bad_signature"
    )


def test_another_path_method_or_query_is_refused() -> None:
    signed = sdk_signed()
    other = PATH.replace("describe-key", "disable-key")
    rejected(aksk.SignedRequest("POST", other, "", signed.headers, signed.body), "bad_signature")
    rejected(aksk.SignedRequest("PUT", signed.path, "", signed.headers, signed.body), "bad_signature")
    rejected(aksk.SignedRequest("POST", signed.path, "x=1", signed.headers, signed.body), "bad_signature")


def test_a_signed_header_changed_in_transit_is_refused() -> None:
    signed = sdk_signed()
    headers = {**signed.headers, "X-Project-Id": "another-project"}
    rejected(aksk.SignedRequest("POST", signed.path, "", headers, signed.body), "bad_signature")


def test_a_wrong_secret_key_is_refused() -> None:
    rejected(sdk_signed(sk="not-the-secret"), "bad_signature")


def test_an_unknown_access_key_is_refused() -> None:
    signed = sdk_signed()
    auth = signed.headers["Authorization"].replace(AK, "UNKNOWNAK0000001")
    rejected(
        aksk.SignedRequest("POST", signed.path, "", {**signed.headers, "Authorization": auth}, signed.body),
        "bad_signature",
    )


def test_a_stale_or_future_x_sdk_date_is_refused() -> None:
    rejected(sdk_signed(when=NOW - timedelta(minutes=16)), "stale_date")
    rejected(sdk_signed(when=NOW + timedelta(minutes=16)), "stale_date")
    assert verifier().verify(sdk_signed(when=NOW - timedelta(minutes=14))) == AK


def test_an_unsigned_payload_is_refused() -> None:
    """The SDK signs ``UNSIGNED-PAYLOAD`` for non-JSON content types; the body would then be free to
    change, so the server requires the real digest."""
    rejected(sdk_signed(headers={"Content-Type": "text/plain"}), "unsigned_or_altered_body")


def test_host_and_date_must_be_signed() -> None:
    signed = sdk_signed()
    auth = signed.headers["Authorization"]
    listed = auth.split("SignedHeaders=")[1].split(",")[0]
    without_host = auth.replace(listed, ";".join(h for h in listed.split(";") if h != "host"))
    rejected(
        aksk.SignedRequest(
            "POST", signed.path, "", {**signed.headers, "Authorization": without_host}, signed.body
        ),
        "signed_headers",
    )


@pytest.mark.parametrize(
    "value",
    [None, "", "Bearer abc", "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host, Signature=zz"],
)
def test_a_missing_or_malformed_authorization_is_refused(value: str | None) -> None:
    signed = sdk_signed()
    headers = {k: v for k, v in signed.headers.items() if k != "Authorization"}
    if value is not None:
        headers["Authorization"] = value
    with pytest.raises(CredentialsRejected):
        verifier().verify(aksk.SignedRequest("POST", signed.path, "", headers, signed.body))


def test_the_canonical_request_matches_the_sdks() -> None:
    """A fixed vector: the SDK's own canonical request for a known request equals ours."""
    request = SdkRequest(
        method="POST",
        schema="http",
        host="127.0.0.1:8080",
        resource_path=PATH,
        query_params=[("limit", "2")],
        header_params={
            "Content-Type": "application/json",
            "X-Sdk-Date": "20261201T120000Z",
            "Host": "127.0.0.1:8080",
        },
        body=b"{}",
    )
    signer = Signer(BasicCredentials(AK, SK))
    names = signer._process_signed_headers(request)
    theirs = signer._process_canonical_request(request, names)
    ours = aksk.canonical_request(
        aksk.SignedRequest("POST", PATH, "limit=2", dict(request.header_params), b"{}"),
        tuple(names),
        hashlib.sha256(b"{}").hexdigest(),
    )
    assert ours == theirs
