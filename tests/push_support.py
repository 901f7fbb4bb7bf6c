"""Helpers of the cloud-push tests (the fixtures are in push_fixtures.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.testclient import TestClient

from hsmbridge.core.services import Services
from hsmbridge.push.clouds import client_for

TOKEN = "push-source-token"
KEY_TYPE = "application/vnd.ibm.kms.key+json"


class CountingClients:
    """`client_for`, counting the clients built (each cloud call needs one)."""

    def __init__(self) -> None:
        self.built = 0

    def __call__(self, cloud: str, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> Any:
        self.built += 1
        return client_for(cloud, settings, secrets)


class Source(TestClient):
    services: Services
    instance: str
    clients: CountingClients

    def h(self, **extra: str) -> dict[str, str]:
        return {"authorization": f"Bearer {TOKEN}", "bluemix-instance": self.instance, **extra}

    def local_key(self, name: str) -> dict[str, Any]:
        """A root key generated in the source's HSM, through its own Key Protect API."""
        body = {
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [{"type": KEY_TYPE, "name": name, "extractable": False}],
        }
        response = self.post("/api/v2/keys", json=body, headers=self.h())
        assert response.status_code == 201, response.text
        return response.json()["resources"][0]  # type: ignore[no-any-return]

    def connect(self, **body: Any) -> dict[str, Any]:
        response = self.post("/api/v1/connections", json=body, headers=self.h())
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]
