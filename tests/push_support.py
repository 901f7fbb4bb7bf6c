"""Helpers of the cloud-push tests (the fixtures are in push_fixtures.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon import Daemon
from fastapi.testclient import TestClient

from hsmbridge.core.services import Services
from hsmbridge.push.clouds import client_for
from hsmbridge.v1 import keys_pb2, keys_pb2_grpc

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


def daemon_check_value(daemon: Daemon, tenant: str, key_id: str) -> str:
    """The key check value a target daemon shows for a key's current version (gRPC GetKey)."""
    with daemon.channel() as channel:
        key = keys_pb2_grpc.KeyServiceStub(channel).GetKey(
            keys_pb2.GetKeyRequest(key_id=key_id), metadata=(("x-hsmbridge-tenant", tenant),)
        )
    return key.current_version.key_check_value
