"""Input hygiene on REST (issue 15, items 5 and 6): a control character in a path or query
parameter is 400 in the dialect's error shape on every route (never the 500 it was), with the
cause logged and an audit event when the caller authenticated; a body over the limit is 413 before
it is read, with or without Content-Length; another dialect on the same app answers in its own
shape through the error-shape registry.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from security_support import CALLERS, RENDER, Stack
from starlette.responses import JSONResponse, Response

from hsmbridge.errors import HsmBridgeError
from hsmbridge.rest.app import create_app
from hsmbridge.rest.shapes import ErrorShapes, Scope

pytest_plugins = ("security_fixtures",)
pytestmark = pytest.mark.softhsm

CONTROL = ["%09", "%0A", "%0D", "%00", "%1F", "%7F", "%0d%0a"]
LIMIT = 64 * 1024


def routes(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the facade, its path parameters filled with a control
    character (one parameter per route is enough: they are all checked the same way)."""
    found = []
    for path, item in client.app.openapi()["paths"].items():  # type: ignore[attr-defined]
        for method in item:
            found.append((method.upper(), path))
    return found


@pytest.fixture(scope="module")
def limited(stack: Stack) -> Iterator[TestClient]:
    shapes = ErrorShapes()
    shapes.register("/v1.0/{project_id}/kms/", huawei_shape)
    app = create_app(
        stack.services,
        stack.authenticator,
        RENDER,
        gate=stack.gate,
        max_body_bytes=LIMIT,
        error_shapes=shapes,
    )
    with TestClient(app) as client:
        yield client


async def huawei_shape(scope: Scope, error: HsmBridgeError) -> Response:
    status = 413 if error.reason == "BODY_TOO_LARGE" else 400
    return JSONResponse({"error": {"error_code": "KMS.0205", "error_msg": error.message}}, status_code=status)


def kp_reason(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["metadata"]["collectionType"] == "application/vnd.ibm.kms.error+json"
    return body["resources"][0]["reasons"][0]  # type: ignore[no-any-return]


def test_every_route_refuses_control_characters_in_a_path_parameter(
    limited: TestClient, stack: Stack
) -> None:
    checked = 0
    for method, template in routes(limited):
        if "{" not in template:
            continue
        for char in CONTROL:
            path = re.sub(r"\{[^}]+\}", f"k{char}x", template, count=1)
            path = re.sub(r"\{[^}]+\}", "x", path)
            response = limited.request(method, path, headers=CALLERS["purger"].rest(), json={})
            assert response.status_code == 400, (method, path, response.text)
            if template.startswith("/api/v1/"):  # the cloud push answers in its own shape
                assert response.json()["code"] == "INVALID_INPUT", (method, path, response.text)
                continue
            assert kp_reason(response)["code"] == "INVALID_PATH_PARAM_ERR"
            checked += 1
    assert checked > 100


def test_every_route_refuses_control_characters_in_the_query(limited: TestClient) -> None:
    for method, template in routes(limited):
        path = re.sub(r"\{[^}]+\}", "x", template)
        for char in ("%0A", "%09", "%7F"):
            response = limited.request(method, f"{path}?limit=1{char}", headers=CALLERS["purger"].rest())
            assert response.status_code == 400, (method, path, response.text)
            if method != "HEAD" and not template.startswith("/api/v1/"):  # push: its own shape
                assert kp_reason(response)["code"] == "INVALID_PARAM_ERR"


def test_the_issues_request_is_400_logged_and_audited(
    limited: TestClient, stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack.take_events()
    response = limited.post(
        "/api/v2/keys/%0A/actions/wrap", json={}, headers=CALLERS["writer"].rest(correlation_id="cc-1")
    )
    assert response.status_code == 400
    assert response.headers["correlation-id"] == "cc-1"
    assert "control character 0x0a in the path" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    (event,) = stack.take_events()
    assert (event["event"], event["outcome"], event["reason"], event["correlation_id"]) == (
        "kms.secrets.wrap",
        "failure",
        "INVALID_INPUT",
        "cc-1",
    )


def test_credentials_are_checked_first_as_on_every_route(limited: TestClient, stack: Stack) -> None:
    """401 beats 400: an unauthenticated prober learns nothing, and nothing is audited as theirs."""
    stack.take_events()
    response = limited.post("/api/v2/keys/%0A/actions/wrap", json={}, headers={"bluemix-instance": "x"})
    assert response.status_code == 401
    events = stack.take_events()
    assert [e["principal"] for e in events] == [None]


def test_a_path_outside_every_dialect_gets_a_plain_400(limited: TestClient) -> None:
    response = limited.get("/nowhere%0A")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "INVALID_INPUT"


def test_another_dialect_answers_in_its_own_shape(limited: TestClient) -> None:
    response = limited.get("/v1.0/project-1/kms/describe-key%0A", headers=CALLERS["writer"].rest())
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "KMS.0205"
    big = limited.post("/v1.0/project-1/kms/encrypt-datakey", content=b"x" * (LIMIT + 1))
    assert big.status_code == 413
    assert big.json()["error"]["error_code"] == "KMS.0205"


def test_a_declared_body_over_the_limit_is_413(limited: TestClient, stack: Stack) -> None:
    key = stack.new_key(name="hygiene").id
    stack.take_events()
    response = limited.post(
        f"/api/v2/keys/{key}/actions/wrap",
        content=b"{" + b" " * LIMIT + b"}",
        headers={**CALLERS["writer"].rest(), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["resources"][0]["errorMsg"].startswith(
        "Request Entity Too Large: The request body is larger"
    )
    (event,) = stack.take_events()
    assert (event["outcome"], event["reason"]) == ("failure", "BODY_TOO_LARGE")


def test_a_chunked_body_over_the_limit_is_413_while_it_streams(limited: TestClient, stack: Stack) -> None:
    key = stack.new_key(name="hygiene-chunked").id
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"plaintext": "'
        for _ in range(64):  # 4 MiB offered, 64 KiB allowed
            sent += 65536
            yield b"A" * 65536
        yield b'"}'

    stack.take_events()
    response = limited.post(
        f"/api/v2/keys/{key}/actions/wrap",
        content=chunks(),
        headers={**CALLERS["writer"].rest(), "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert [(e["outcome"], e["reason"]) for e in stack.take_events()] == [("failure", "BODY_TOO_LARGE")]


def test_a_body_at_the_limit_still_works(limited: TestClient, stack: Stack) -> None:
    key = stack.new_key(name="hygiene-ok").id
    body = b'{"plaintext": "' + b"QUJD" * 10 + b'"}'
    padded = body[:-1] + b" " * (LIMIT - len(body)) + b"}"
    assert len(padded) == LIMIT
    response = limited.post(
        f"/api/v2/keys/{key}/actions/wrap",
        content=padded,
        headers={**CALLERS["writer"].rest(), "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


def test_the_default_limit_admits_the_largest_valid_request(rest: TestClient) -> None:
    """A 1,000-event acknowledgement whose text fields are 256 four-byte characters each."""
    text = "\U0001f511" * 256
    resources = [
        {
            "eventId": text,
            "timestamp": "2026-01-01T00:00:00Z",
            "adopterKeyState": text,
            "keyStateData": {"keyVersion": text},
        }
        for _ in range(1000)
    ]
    body = {
        "metadata": {
            "collectionType": "application/vnd.ibm.kms.event_acknowledge+json",
            "collectionTotal": 1000,
        },
        "resources": resources,
    }
    import json

    raw = json.dumps(body, ensure_ascii=False).encode()
    assert len(raw) > 3_000_000
    response = rest.post(
        "/api/v2/event_ack",
        content=raw,
        headers={
            **CALLERS["writer"].rest(),
            "content-type": "application/vnd.ibm.kms.event_acknowledge+json",
        },
    )
    assert response.status_code == 204, response.text


def test_the_standalone_gateway_refuses_a_large_body_before_buffering_it(tmp_path: Path) -> None:
    """rest/gateway_proxy.py buffers a body to forward it: the same limit applies there (the
    daemon behind it is never called, so it need not exist)."""
    import asyncio

    import httpx

    from hsmbridge.rest.gateway_proxy import GatewayProxy, guarded

    async def scenario() -> httpx.Response:
        proxy = GatewayProxy(f"unix:{tmp_path}/nobody.sock", timeout=2)
        app = guarded(proxy, LIMIT)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            response = await c.post(
                "/api/v2/keys/k/actions/wrap",
                content=b"x" * (LIMIT + 1),
                headers={"authorization": "Bearer x", "bluemix-instance": "i"},
            )
        await proxy.close()
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert response.json()["resources"][0]["errorMsg"].startswith("Request Entity Too Large")


def test_the_huawei_dialect_answers_in_its_own_shape(stack: Stack) -> None:
    """With the Huawei API mounted (as the daemon does), its paths get Huawei's body."""
    from hsmbridge.huawei.auth import HuaweiAuthenticator, HuaweiConfig

    huawei = HuaweiAuthenticator.from_config(HuaweiConfig(), stack.authenticator.identify_rest)
    app = create_app(
        stack.services, stack.authenticator, RENDER, gate=stack.gate, huawei=huawei, max_body_bytes=LIMIT
    )
    with TestClient(app) as client:
        bad = client.get("/v1.0/project-1/kms/describe-key%0A")
        assert bad.status_code == 400
        assert bad.json()["error"]["error_code"] == "KMS.0308"
        big = client.post("/v1.0/project-1/kms/encrypt-datakey", content=b"x" * (LIMIT + 1))
        assert big.status_code == 413
        assert big.json()["error"]["error_code"] == "KMS.0203"
        # and Key Protect's paths keep Key Protect's shape on the same app
        assert client.get("/api/v2/keys%0A", headers=CALLERS["writer"].rest()).json()["metadata"]
