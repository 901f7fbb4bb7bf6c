"""Fixtures for the Key Protect REST facade tests; a test module loads them with

    pytest_plugins = ("services_fixtures", "rest_fixtures")

`api` is a Starlette TestClient over the real FastAPI app, the service layer over the real
session-wide SoftHSM2 backend, a fresh SQLite store and a FixedClock (`api.clock.advance(...)`).
Two principals exist (dual authorisation needs two): `alice` (token "alice-token") and
`bob` (token "bob-token"). `api.kp(...)` builds Key Protect headers for a fresh instance.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from services import build_services, clock_of, close_services

from hsmbridge.core.clock import FixedClock
from hsmbridge.core.services import Services
from hsmbridge.rest.app import create_app
from hsmbridge.rest.context import StaticTokenAuthenticator
from hsmbridge.rest.representation import RenderContext

TOKENS = {"alice-token": "IBMid-alice", "bob-token": "IBMid-bob"}
RENDER = RenderContext(region="us-south", account="0123456789abcdef0123456789abcdef")


class Api(TestClient):
    services: Services
    clock: FixedClock
    instance: str

    def kp(self, token: str = "alice-token", instance: str | None = None, **extra: str) -> dict[str, str]:
        return {
            "authorization": f"Bearer {token}",
            "bluemix-instance": instance or self.instance,
            **{k.replace("_", "-"): v for k, v in extra.items()},
        }

    def create_key(
        self, name: str = "root-key", *, extractable: bool = False, **fields: Any
    ) -> dict[str, Any]:
        body = {
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [
                {
                    "type": "application/vnd.ibm.kms.key+json",
                    "name": name,
                    "extractable": extractable,
                    **fields,
                }
            ],
        }
        response = self.post("/api/v2/keys", json=body, headers=self.kp())
        assert response.status_code == 201, response.text
        return response.json()["resources"][0]  # type: ignore[no-any-return]


@pytest.fixture
def api(request: pytest.FixtureRequest) -> Iterator[Api]:
    services = build_services(request.getfixturevalue("hsm_backend"))
    app = create_app(services, StaticTokenAuthenticator(dict(TOKENS)), RENDER)
    with Api(app) as client:
        client.services = services
        client.clock = clock_of(services)
        client.instance = str(uuid.uuid4())
        yield client
    close_services(services)
