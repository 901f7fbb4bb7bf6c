"""Topology: the REST facade standalone, forwarding to a daemon over gRPC (TCP or unix socket).

The same Key Protect flow runs against the in-process app and through the gateway; every
response (status, Key Protect headers, body shape) must be the same. When the daemon is gone the
client gets Key Protect's 503 error body.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from rest_fixtures import RENDER, TOKENS
from services import build_services, close_services

from hsmbridge.grpc.gateway import RestGatewayServicer
from hsmbridge.rest.app import create_app
from hsmbridge.rest.context import StaticTokenAuthenticator
from hsmbridge.rest.gateway_proxy import GatewayProxy
from hsmbridge.v1 import gateway_pb2_grpc

pytestmark = pytest.mark.softhsm

KEY_BODY = {
    "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
    "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "gateway-key", "extractable": False}],
}


async def flow(client: httpx.AsyncClient, instance: str) -> list[tuple[int, dict[str, str], Any]]:
    """A representative Key Protect session; returns what a client observes at each step."""
    h = {
        "authorization": "Bearer alice-token",
        "bluemix-instance": instance,
        "correlation-id": str(uuid.uuid4()),
    }
    seen: list[tuple[int, dict[str, str], Any]] = []

    async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = await client.request(method, url, headers={**h, **kwargs.pop("headers", {})}, **kwargs)
        body = response.json() if response.content else None
        kp_headers = {
            k: v for k, v in response.headers.items() if k in ("correlation-id", "key-total", "content-type")
        }
        seen.append((response.status_code, kp_headers, body))
        return response

    created = (await call("POST", "/api/v2/keys", json=KEY_BODY)).json()["resources"][0]
    key_id = created["id"]
    wrapped = (await call("POST", f"/api/v2/keys/{key_id}/actions/wrap", json={"aad": ["a"]})).json()
    await call(
        "POST",
        f"/api/v2/keys/{key_id}/actions/unwrap",
        json={"ciphertext": wrapped["ciphertext"], "aad": ["a"]},
    )
    await call(
        "POST",
        f"/api/v2/keys/{key_id}/actions/unwrap",
        json={"ciphertext": wrapped["ciphertext"], "aad": ["b"]},
    )
    await call("POST", f"/api/v2/keys/{key_id}/actions/wrap", content=b"", headers={"content-type": ""})
    await call("HEAD", "/api/v2/keys")
    await call("GET", f"/api/v2/keys/{key_id}/metadata")
    await call("GET", f"/api/v2/keys/{uuid.uuid4()}")
    await call("GET", "/api/v2/keys", headers={"authorization": "Bearer wrong"})
    await call("DELETE", f"/api/v2/keys/{key_id}")
    await call("GET", f"/api/v2/keys/{key_id}")
    return seen


def normalise(steps: list[tuple[int, dict[str, str], Any]]) -> list[tuple[int, dict[str, str], Any]]:
    """Ids, dates, ciphertexts and plaintexts differ per run; shapes and codes must not."""

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):  # key check values differ per key, like ids
            return {k: "<kcv>" if k == "keyCheckValue" else scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if isinstance(value, str) and len(value) > 20:
            return "<value>"
        return value

    return [
        (status, {k: "<id>" if k == "correlation-id" else v for k, v in headers.items()}, scrub(body))
        for status, headers, body in steps
    ]


def run(services_factory: Callable[[], Any], scenario: Callable[[Any], Awaitable[Any]]) -> Any:
    services = services_factory()
    app = create_app(services, StaticTokenAuthenticator(dict(TOKENS)), RENDER)
    try:
        return asyncio.run(scenario(app))
    finally:
        close_services(services)


async def with_gateway(app: Any, address: str, body: Callable[[GatewayProxy], Awaitable[Any]]) -> Any:
    server = grpc.aio.server()
    gateway_pb2_grpc.add_RestGatewayServicer_to_server(RestGatewayServicer(app), server)
    port = server.add_insecure_port(address)
    await server.start()
    target = address if address.startswith("unix:") else f"127.0.0.1:{port}"
    proxy = GatewayProxy(target)
    try:
        return await body(proxy)
    finally:
        await proxy.close()
        await server.stop(None)


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_the_gateway_answers_exactly_like_the_in_process_facade(
    hsm_backend: object, tmp_path: Path, transport: str
) -> None:
    address = f"unix:{tmp_path}/grpc.sock" if transport == "unix" else "127.0.0.1:0"

    async def scenario(app: Any) -> tuple[list[Any], list[Any]]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://direct") as c:
            direct = await flow(c, str(uuid.uuid4()))

        async def through(proxy: GatewayProxy) -> list[Any]:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url="http://gw") as c:
                return await flow(c, str(uuid.uuid4()))

        return direct, await with_gateway(app, address, through)

    direct, gateway = run(lambda: build_services(hsm_backend), scenario)  # type: ignore[arg-type]
    assert [s[0] for s in direct] == [201, 200, 200, 422, 200, 200, 200, 404, 401, 204, 200]
    assert normalise(gateway) == normalise(direct)
    generated = gateway[4][2]
    assert len(base64.b64decode(generated["plaintext"])) == 32


def test_an_unreachable_daemon_is_a_key_protect_503(tmp_path: Path) -> None:
    async def scenario() -> httpx.Response:
        proxy = GatewayProxy(f"unix:{tmp_path}/nobody.sock", timeout=2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=proxy), base_url="http://gw") as c:
            response = await c.get(
                "/api/v2/keys", headers={"authorization": "Bearer x", "bluemix-instance": "i"}
            )
        await proxy.close()
        return response

    response = asyncio.run(scenario())
    assert response.status_code == 503
    assert response.json()["resources"][0]["errorMsg"].startswith("Service Unavailable")
