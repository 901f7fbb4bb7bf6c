"""Pushing an HSM key into Key Protect: a second hsmbridge (`hsmbridge dev`, its own SoftHSM2
token and store) is the target, reached through its Key Protect facade over HTTP, exactly as IBM
Key Protect would be.

The module runs in order on purpose: the target's delete-and-restore rule (Key Protect refuses a
restore within 30 s of the deletion) is met by deleting the pushed key early and reimporting it
in the last test, with the other tests in between.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from typing import Any

import httpx
import pytest
from daemon import DEV_TOKEN, Daemon
from push_support import Source, daemon_check_value

pytestmark = pytest.mark.softhsm
pytest_plugins = ("push_fixtures",)

TARGET_INSTANCE = str(uuid.uuid4())
RESTORE_AFTER_DELETE = 30.0
STATE: dict[str, Any] = {}


def target_http(daemon: Daemon) -> httpx.Client:
    return httpx.Client(
        base_url=daemon.rest_url,
        headers={"authorization": f"Bearer {DEV_TOKEN}", "bluemix-instance": TARGET_INSTANCE},
        timeout=30,
    )


def target_check_value(daemon: Daemon, key_id: str) -> str:
    return daemon_check_value(daemon, TARGET_INSTANCE, key_id)


def source_check_value(source: Source, key_id: str) -> str:
    versions = source.get(f"/api/v2/keys/{key_id}/versions", headers=source.h()).json()["resources"]
    ctx_version = source.services.store.get_version(source.instance, versions[0]["id"])
    return source.services.check_values.of(ctx_version)  # type: ignore[arg-type, return-value]


@pytest.fixture(scope="module")
def connection(source: Source, dev_daemon: Daemon) -> dict[str, Any]:
    return source.connect(
        name="kp-target",
        cloud="ibm",
        url=dev_daemon.rest_url,
        instance_id=TARGET_INSTANCE,
        bearer_token=DEV_TOKEN,
    )


def test_a_connection_keeps_its_secret_write_only(source: Source, connection: dict[str, Any]) -> None:
    assert connection["cloud"] == "ibm" and connection["secrets_set"] == ["bearer_token"]
    for shown in (
        connection,
        source.get(f"/api/v1/connections/{connection['id']}", headers=source.h()).json(),
    ):
        assert DEV_TOKEN not in str(shown)
    listed = source.get("/api/v1/connections", headers=source.h()).json()
    assert [c["name"] for c in listed["resources"]] == ["kp-target"]
    tested = source.post(f"/api/v1/connections/{connection['id']}/test", headers=source.h())
    assert tested.status_code == 200, tested.text
    assert tested.json()["ok"] is True


def test_push_creates_an_imported_root_key_with_the_same_check_value(
    source: Source, dev_daemon: Daemon, connection: dict[str, Any]
) -> None:
    local = source.local_key("payments-root")
    pushed = source.post(
        "/api/v1/cckm/ibm/keys",
        json={"connection": "kp-target", "name": "payments", "source_key_identifier": "payments-root"},
        headers=source.h(),
    )
    assert pushed.status_code == 201, pushed.text
    body = pushed.json()
    assert body["local_key_id"] == local["id"] and body["local_key_name"] == "payments-root"
    assert body["cloud_name"] == "ibm" and body["key_material_origin"] == "hsmbridge"
    params = body["ibm_param"]
    assert params["imported"] is True and params["extractable"] is False and params["state"] == 1
    kcv = source_check_value(source, local["id"])
    assert body["key_check_value"] == kcv and len(kcv) == 6
    assert target_check_value(dev_daemon, body["kms_id"]) == kcv
    # the target's Key Protect metadata shows it too (an extra field the SDKs ignore)
    assert params["keyVersion"]["keyCheckValue"] == kcv
    # the target's data keys, wrapped now, must survive delete-and-reimport later
    dek = os.urandom(32)
    with target_http(dev_daemon) as kp:
        wrapped = kp.post(
            f"/api/v2/keys/{body['kms_id']}/actions/wrap", json={"plaintext": base64.b64encode(dek).decode()}
        )
        assert wrapped.status_code == 200, wrapped.text
        deleted = kp.delete(f"/api/v2/keys/{body['kms_id']}")
        assert deleted.status_code == 204, deleted.text
    STATE.update(
        cloud_key=body, dek=dek, ciphertext=wrapped.json()["ciphertext"], deleted_at=time.monotonic()
    )
    got = source.get(f"/api/v1/cckm/ibm/keys/{body['id']}?sync=true", headers=source.h()).json()
    assert got["ibm_param"]["state"] == 5  # the target's own view, refreshed


def test_material_from_another_source_is_refused_before_any_cloud_call(source: Source) -> None:
    other = source.local_key("other-root")
    before = source.clients.built
    refused = source.post(
        f"/api/v1/cckm/ibm/keys/{STATE['cloud_key']['id']}/import-material",
        json={"source_key_tier": "local", "source_key_identifier": other["id"]},
        headers=source.h(),
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["code"] == "KEY_MATERIAL_MISMATCH"
    assert STATE["cloud_key"]["key_check_value"] in refused.json()["message"]
    assert source.clients.built == before  # no cloud client was even built
    record = source.get(f"/api/v1/cckm/ibm/keys/{STATE['cloud_key']['id']}", headers=source.h()).json()
    assert record["local_key_id"] == STATE["cloud_key"]["local_key_id"]


def test_other_tiers_and_bad_input_are_400_listing_what_is_supported(source: Source) -> None:
    url = f"/api/v1/cckm/ibm/keys/{STATE['cloud_key']['id']}/import-material"
    dsm = source.post(url, json={"source_key_tier": "dsm", "source_key_identifier": "x"}, headers=source.h())
    assert dsm.status_code == 400 and "supported: local" in dsm.json()["message"]
    for body, target in (
        ({"key_expiration": True}, "valid_to"),
        ({"key_expiration": True, "valid_to": "next tuesday"}, "valid_to"),
        ({"key_expiration": True, "valid_to": "2001-01-01T00:00:00.123456789Z"}, "valid_to"),
        ({"valid_to": "2999-01-01T00:00:00Z"}, "valid_to"),
    ):
        answer = source.post(url, json={"source_key_identifier": "payments-root", **body}, headers=source.h())
        assert answer.status_code == 400, answer.text
        assert answer.json()["target"] == target


def test_valid_to_becomes_key_protects_expiration_date_at_creation(source: Source) -> None:
    source.local_key("expiring-root")
    valid_to = "2031-06-01T12:00:00.987654321Z"
    pushed = source.post(
        "/api/v1/cckm/ibm/keys",
        json={
            "connection": "kp-target",
            "name": "expiring",
            "source_key_identifier": "expiring-root",
            "key_expiration": True,
            "valid_to": valid_to,
        },
        headers=source.h(),
    )
    assert pushed.status_code == 201, pushed.text
    body = pushed.json()
    assert body["ibm_param"]["expirationDate"] == "2031-06-01T12:00:00Z"  # Key Protect: seconds
    assert body["valid_to"] == valid_to and body["key_expiration"] is True


def test_bad_credentials_and_a_target_that_is_down_record_nothing(source: Source, dev_daemon: Daemon) -> None:
    wrong = source.connect(
        name="kp-wrong-token",
        cloud="ibm",
        url=dev_daemon.rest_url,
        instance_id=TARGET_INSTANCE,
        bearer_token="nope",
    )
    tested = source.post(f"/api/v1/connections/{wrong['id']}/test", headers=source.h())
    assert tested.status_code == 502, tested.text
    assert tested.json()["code"] == "CLOUD_AUTH_FAILED" and tested.json()["cloud"] == "ibm"
    assert tested.json()["cloud_code"] and "nope" not in tested.text
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = source.connect(
        name="kp-down", cloud="ibm", url=closed, instance_id=TARGET_INSTANCE, bearer_token="x"
    )
    before = source.get("/api/v1/cckm/ibm/keys", headers=source.h()).json()["total"]
    for conn in (wrong, down):
        answer = source.post(
            "/api/v1/cckm/ibm/keys",
            json={"connection": conn["id"], "source_key_identifier": "payments-root"},
            headers=source.h(),
        )
        assert answer.status_code in (502, 503), answer.text
    assert (
        answer.json()["code"] == "CLOUD_UNAVAILABLE" and answer.json()["cloud_code"] == "connection refused"
    )
    assert source.get("/api/v1/cckm/ibm/keys", headers=source.h()).json()["total"] == before


def test_a_connection_in_use_cannot_be_deleted(source: Source, connection: dict[str, Any]) -> None:
    answer = source.delete(f"/api/v1/connections/{connection['id']}", headers=source.h())
    assert answer.status_code == 409


def test_reimport_of_the_same_material_restores_the_key_and_old_data_keys_unwrap(
    source: Source, dev_daemon: Daemon
) -> None:
    wait = RESTORE_AFTER_DELETE + 1 - (time.monotonic() - STATE["deleted_at"])
    if wait > 0:
        time.sleep(wait)  # Key Protect's own rule (restore ≥ 30 s after delete), not synchronisation
    key = STATE["cloud_key"]
    answer = source.post(
        f"/api/v1/cckm/ibm/keys/{key['id']}/import-material",
        json={"source_key_tier": "local", "source_key_identifier": "payments-root"},
        headers=source.h(),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["ibm_param"]["state"] == 1
    assert answer.json()["key_check_value"] == key["key_check_value"]
    with target_http(dev_daemon) as kp:
        opened = kp.post(
            f"/api/v2/keys/{key['kms_id']}/actions/unwrap", json={"ciphertext": STATE["ciphertext"]}
        )
    assert opened.status_code == 200, opened.text
    assert base64.b64decode(opened.json()["plaintext"]) == STATE["dek"]
    assert target_check_value(dev_daemon, key["kms_id"]) == key["key_check_value"]
