"""Pushing an HSM key into Huawei Cloud KMS: a second hsmbridge (`hsmbridge dev`, its own
SoftHSM2 token and store) is the target, reached through its Huawei KMS v1.0 facade with the
official SDK (huaweicloudsdkkms, AK/SK signed), as Huawei Cloud would be."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from daemon import Daemon
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkkms.v2 import (
    CreateDatakeyRequest,
    CreateDatakeyRequestBody,
    DecryptDatakeyRequest,
    DecryptDatakeyRequestBody,
    DeleteImportedKeyMaterialRequest,
    KmsClient,
    OperateKeyRequestBody,
)
from push_support import Source, daemon_check_value

pytestmark = pytest.mark.softhsm
pytest_plugins = ("push_fixtures",)

AK = "HSMBRIDGEPUSHAK00001"
SK = "push-test-huawei-secret-key-0001"
PROJECT = uuid.uuid4().hex


@pytest.fixture(scope="module")
def huawei(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    workdir: Path = tmp_path_factory.mktemp("push-huawei")
    daemon = Daemon(None, workdir, args=("dev",), HSMBRIDGE_DEV_HUAWEI_AK=AK, HSMBRIDGE_DEV_HUAWEI_SK=SK)
    daemon.start(timeout=120)
    yield daemon
    if daemon.proc is not None and daemon.proc.poll() is None:
        daemon.stop()


def sdk(daemon: Daemon) -> KmsClient:
    """What a Huawei user of the pushed key holds: the official SDK with the account's AK/SK."""
    config = HttpConfig.get_default_config()
    config.retry_times = 0
    return (
        KmsClient.new_builder()
        .with_http_config(config)
        .with_credentials(BasicCredentials(AK, SK, PROJECT))
        .with_endpoints([daemon.rest_url])
        .build()
    )


def target_check_value(daemon: Daemon, key_id: str) -> str:
    return daemon_check_value(daemon, f"huawei:{PROJECT}", key_id)


@pytest.fixture(scope="module")
def connection(source: Source, huawei: Daemon) -> dict[str, Any]:
    return source.connect(
        name="huawei-target",
        cloud="huawei",
        endpoint=huawei.rest_url,
        project_id=PROJECT,
        access_key=AK,
        secret_key=SK,
    )


def import_material(source: Source, key_id: str, **body: Any) -> Any:
    return source.post(f"/api/v1/cckm/huawei/keys/{key_id}/import-material", json=body, headers=source.h())


def test_push_imports_the_material_and_old_data_keys_survive_delete_and_reimport(
    source: Source, huawei: Daemon, connection: dict[str, Any]
) -> None:
    assert (
        source.post(f"/api/v1/connections/{connection['id']}/test", headers=source.h()).json()["ok"] is True
    )
    local = source.local_key("huawei-root")
    created = source.post(
        "/api/v1/cckm/huawei/keys",
        json={"connection": "huawei-target", "name": "huawei-orders"},
        headers=source.h(),
    )
    assert created.status_code == 201, created.text
    cloud_key = created.json()
    assert cloud_key["huawei_param"]["key_state"] == "5" and cloud_key["huawei_param"]["origin"] == "external"

    valid_to = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%S") + ".123456789Z"
    answer = import_material(
        source, cloud_key["id"], source_key_identifier="huawei-root", key_expiration=True, valid_to=valid_to
    )
    assert answer.status_code == 200, answer.text
    pushed = answer.json()
    assert pushed["huawei_param"]["key_state"] == "2" and pushed["valid_to"] == valid_to
    expected_ms = int(datetime.fromisoformat(valid_to[:19] + "+00:00").timestamp()) * 1000
    assert int(pushed["huawei_param"]["expiration_time"]) == expected_ms  # seconds: Huawei's unit
    assert pushed["local_key_id"] == local["id"]
    assert target_check_value(huawei, cloud_key["kms_id"]) == pushed["key_check_value"]

    client = sdk(huawei)
    made = client.create_datakey(
        CreateDatakeyRequest(body=CreateDatakeyRequestBody(key_id=cloud_key["kms_id"], datakey_length="256"))
    )
    client.delete_imported_key_material(
        DeleteImportedKeyMaterialRequest(body=OperateKeyRequestBody(key_id=cloud_key["kms_id"]))
    )
    synced = source.get(f"/api/v1/cckm/huawei/keys/{cloud_key['id']}?sync=true", headers=source.h()).json()
    assert synced["huawei_param"]["key_state"] == "5"

    before = source.clients.built
    refused = import_material(
        source, cloud_key["id"], source_key_identifier=source.local_key("other-hw")["id"]
    )
    assert refused.status_code == 409 and refused.json()["code"] == "KEY_MATERIAL_MISMATCH"
    assert source.clients.built == before

    again = import_material(source, cloud_key["id"], source_key_identifier=local["id"])
    assert again.status_code == 200, again.text
    assert again.json()["huawei_param"]["key_state"] == "2"
    opened = client.decrypt_datakey(
        DecryptDatakeyRequest(
            body=DecryptDatakeyRequestBody(
                key_id=cloud_key["kms_id"], cipher_text=made.cipher_text, datakey_cipher_length="32"
            )
        )
    )
    assert opened.data_key == made.plain_text


def test_wrong_secret_key_and_a_target_that_is_down_are_clean_errors(source: Source, huawei: Daemon) -> None:
    wrong = source.connect(
        name="huawei-wrong-sk",
        cloud="huawei",
        endpoint=huawei.rest_url,
        project_id=PROJECT,
        access_key=AK,
        secret_key="not-the-sk",
    )
    tested = source.post(f"/api/v1/connections/{wrong['id']}/test", headers=source.h())
    assert tested.status_code == 502, tested.text
    assert (
        tested.json()["code"] == "CLOUD_AUTH_FAILED" and tested.json()["cloud_code"] == "APIGW.0301"
    )  # Huawei API gateway: bad signature
    assert "not-the-sk" not in tested.text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = source.connect(
        name="huawei-down", cloud="huawei", endpoint=closed, project_id=PROJECT, access_key=AK, secret_key=SK
    )
    before = source.get("/api/v1/cckm/huawei/keys", headers=source.h()).json()["total"]
    answer = source.post("/api/v1/cckm/huawei/keys", json={"connection": down["id"]}, headers=source.h())
    assert answer.status_code == 503 and answer.json()["code"] == "CLOUD_UNAVAILABLE"
    assert source.get("/api/v1/cckm/huawei/keys", headers=source.h()).json()["total"] == before
