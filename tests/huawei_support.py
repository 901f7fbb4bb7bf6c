"""Shared by tests/test_huawei_*.py: a real daemon with the Huawei API, and the official SDK
(`huaweicloudsdkkms`, unmodified) pointed at it.

The SDK is built exactly as Huawei's examples build it — `BasicCredentials(ak, sk, project_id)`,
`KmsClient.new_builder().with_credentials(...).with_endpoints([...])` — with the endpoint
``http://127.0.0.1:<port>``: the SDK takes the scheme from the endpoint, so no TLS is involved
(and no certificate check needs switching off).
"""

from __future__ import annotations

import base64
import json
import os
from datetime import datetime
from pathlib import Path

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from daemon import Daemon
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkkms.v2 import KmsClient

DEV_AK = "HSMBRIDGETESTAK0001"
DEV_SK = "test-dev-huawei-secret-key-0001"
PROJECT = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def start_daemon(token: dict[str, str], workdir: Path, **env: str) -> Daemon:
    d = Daemon(
        token,
        workdir,
        HSMBRIDGE_DEV_HUAWEI_AK=DEV_AK,
        HSMBRIDGE_DEV_HUAWEI_SK=DEV_SK,
        **env,
    )
    d.start()
    return d


def stop_daemon(d: Daemon) -> None:
    if d.proc and d.proc.poll() is None:
        assert d.stop() == 0


def kms_client(d: Daemon, *, ak: str = DEV_AK, sk: str = DEV_SK, project: str = PROJECT) -> KmsClient:
    config = HttpConfig.get_default_config()
    config.retry_times = 0
    return (
        KmsClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(ak, sk, project))
        .with_endpoints([d.rest_url])
        .build()
    )


def wrap_material(public_key_b64: str, material: bytes, algorithm: str = "RSAES_OAEP_SHA_256") -> str:
    """What a Huawei BYOK user does with `cryptography`: encrypt the 32-byte key to the public key."""
    public = serialization.load_der_public_key(base64.b64decode(public_key_b64))
    if algorithm == "RSAES_PKCS1_V1_5":
        scheme: padding.AsymmetricPadding = padding.PKCS1v15()
    else:
        digest = hashes.SHA256() if algorithm == "RSAES_OAEP_SHA_256" else hashes.SHA1()
        scheme = padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)
    return base64.b64encode(public.encrypt(material, scheme)).decode()  # type: ignore[union-attr]


def new_material() -> bytes:
    return os.urandom(32)


def signed_post(
    d: Daemon,
    action: str,
    body: dict[str, object],
    *,
    project: str = PROJECT,
    ak: str = DEV_AK,
    sk: str = DEV_SK,
    when: datetime | None = None,
    sent_body: bytes | None = None,
) -> requests.Response:
    """A request signed by the SDK's own signer and sent with `requests`, for what the SDK's typed
    calls cannot express: a stale X-Sdk-Date, a body changed after signing (`sent_body`)."""
    host = d.rest_url.split("://", 1)[1]
    raw = json.dumps(body).encode()
    headers = {"Content-Type": "application/json;charset=UTF-8"}
    if when is not None:
        headers["X-Sdk-Date"] = when.strftime("%Y%m%dT%H%M%SZ")
    request = SdkRequest(
        method="POST",
        schema="http",
        host=host,
        resource_path=f"/v1.0/{project}/kms/{action}",
        query_params=[],
        header_params=headers,
        body=raw,
    )
    Signer(BasicCredentials(ak, sk)).sign(request)
    return requests.post(
        f"{d.rest_url}/v1.0/{project}/kms/{action}",
        data=sent_body if sent_body is not None else raw,
        headers=dict(request.header_params),
        timeout=30,
    )


def error_of(response: requests.Response) -> tuple[int, str]:
    """(status, error_code), asserting the body is Huawei's error shape and nothing else."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"error_code", "error_msg"}, body
    return response.status_code, body["error"]["error_code"]
