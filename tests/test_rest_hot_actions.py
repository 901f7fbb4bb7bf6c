"""Wrap, unwrap and rewrap served by `HotActions` (rest/actions.py) answer exactly as the FastAPI
routes they bypass: same statuses, bodies and headers for success and for every error shape, the
same metrics label; and FastAPI's router really is bypassed for them (and only for them)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from rest_fixtures import RENDER, TOKENS, Api

from hsmbridge.rest import actions
from hsmbridge.rest.app import create_app
from hsmbridge.rest.context import StaticTokenAuthenticator

pytest_plugins = ("services_fixtures", "rest_fixtures")


@pytest.fixture
def plain(api: Api) -> Iterator[TestClient]:
    """The same app over the same services without `HotActions`: FastAPI routes only."""
    app = create_app(api.services, StaticTokenAuthenticator(dict(TOKENS)), RENDER)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not actions.HotActions]
    with TestClient(app) as client:
        yield client


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths FastAPI's routes handled."""
    seen: list[str] = []
    original = APIRoute.handle

    async def handle(self: APIRoute, scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(self.path)
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", handle)
    return seen


def _same(a: Any, b: Any) -> None:
    assert a.status_code == b.status_code
    assert a.content == b.content
    drop = {"date"}
    assert {k: v for k, v in a.headers.items() if k not in drop} == {
        k: v for k, v in b.headers.items() if k not in drop
    }


def _b64() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def test_hot_actions_skip_the_router_and_others_do_not(api: Api, routed: list[str]) -> None:
    key = api.create_key()["id"]
    routed.clear()
    wrapped = api.post(f"/api/v2/keys/{key}/actions/wrap", json={"plaintext": _b64()}, headers=api.kp())
    assert wrapped.status_code == 200
    body = {"ciphertext": wrapped.json()["ciphertext"]}
    assert api.post(f"/api/v2/keys/{key}/actions/unwrap", json=body, headers=api.kp()).status_code == 200
    assert api.post(f"/api/v2/keys/{key}/actions/rewrap", json=body, headers=api.kp()).status_code == 200
    assert routed == []
    assert api.post(f"/api/v2/keys/{key}?action=wrap", json={}, headers=api.kp()).status_code == 200
    assert api.post(f"/api/v2/keys/{key}/actions/disable", headers=api.kp()).status_code == 204
    assert routed == ["/api/v2/keys/{id}", "/api/v2/keys/{id}/actions/disable"]


def test_success_answers_match_fastapi(api: Api, plain: TestClient) -> None:
    key = api.create_key()["id"]
    headers = api.kp(correlation_id="corr-123")
    wrapped = api.post(f"/api/v2/keys/{key}/actions/wrap", json={"aad": ["a", "b"]}, headers=headers)
    via_fastapi = plain.post(f"/api/v2/keys/{key}/actions/wrap", json={"aad": ["a", "b"]}, headers=headers)
    assert wrapped.status_code == via_fastapi.status_code == 200
    assert wrapped.headers["content-type"] == via_fastapi.headers["content-type"]
    assert wrapped.headers["correlation-id"] == via_fastapi.headers["correlation-id"] == "corr-123"
    assert set(wrapped.json()) == set(via_fastapi.json()) == {"plaintext", "ciphertext", "keyVersion"}
    for ciphertext in (wrapped.json()["ciphertext"], via_fastapi.json()["ciphertext"]):
        body = {"ciphertext": ciphertext, "aad": ["a", "b"]}
        for action in ("unwrap", "rewrap"):
            url = f"/api/v2/keys/{key}/actions/{action}"
            hot, slow = api.post(url, json=body, headers=headers), plain.post(url, json=body, headers=headers)
            if action == "unwrap":
                _same(hot, slow)
            else:  # a fresh IV each time: same shape, different ciphertext
                assert hot.status_code == slow.status_code == 200
                assert set(hot.json()) == set(slow.json())


@pytest.mark.parametrize(
    ("action", "body", "header_change"),
    [
        ("wrap", b"{not json", {}),
        ("wrap", b"[]", {}),
        ("wrap", b'{"plaintext": "not base64!"}', {}),
        ("wrap", b'{"plaintext": "QUJD", "aad": "x"}', {}),
        ("unwrap", b"", {}),
        ("unwrap", b'{"ciphertext": ""}', {}),
        ("unwrap", b'{"ciphertext": "QUJD"}', {}),
        ("rewrap", b'{"ciphertext": "QUJD"}', {}),
        ("wrap", b"{}", {"authorization": None}),
        ("wrap", b"{}", {"authorization": "Bearer wrong"}),
        ("wrap", b"{}", {"bluemix-instance": None}),
        ("wrap", b"{}", {"bluemix-instance": "bad/instance"}),
        ("wrap", b"{}", {"x-kms-key-ring": "no-such-ring"}),
    ],
)
def test_errors_match_fastapi(
    api: Api, plain: TestClient, action: str, body: bytes, header_change: dict[str, str | None]
) -> None:
    key = api.create_key()["id"]
    headers: dict[str, str] = {**api.kp(), "correlation-id": "corr-9"}
    for name, value in header_change.items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value
    url = f"/api/v2/keys/{key}/actions/{action}"
    hot, slow = api.post(url, content=body, headers=headers), plain.post(url, content=body, headers=headers)
    assert hot.status_code >= 400
    _same(hot, slow)


def test_unknown_key_and_odd_paths_match_fastapi(api: Api, plain: TestClient) -> None:
    for url in (
        f"/api/v2/keys/{uuid.uuid4()}/actions/wrap",
        "/api/v2/keys/some-alias/actions/unwrap",
        f"/api/v2/keys/{uuid.uuid4()}/actions/wrap/",
        "/api/v2/keys//actions/wrap",
        "/api/v2/keys/a/b/actions/wrap",
    ):
        hot = api.post(url, json={"ciphertext": "QUJD"}, headers=api.kp(), follow_redirects=False)
        slow = plain.post(url, json={"ciphertext": "QUJD"}, headers=api.kp(), follow_redirects=False)
        _same(hot, slow)


def test_metrics_label_the_hot_route_by_its_template(api: Api) -> None:
    from hsmbridge.metrics import Metrics

    metrics = Metrics()
    app = create_app(api.services, StaticTokenAuthenticator(dict(TOKENS)), RENDER, metrics=metrics)
    key = api.create_key()["id"]
    with TestClient(app) as client:
        assert client.post(f"/api/v2/keys/{key}/actions/wrap", json={}, headers=api.kp()).status_code == 200
    value = metrics.registry.get_sample_value(
        "hsmbridge_rest_requests_total",
        {"method": "POST", "route": "/api/v2/keys/{id}/actions/wrap", "status": "200"},
    )
    assert value == 1.0
