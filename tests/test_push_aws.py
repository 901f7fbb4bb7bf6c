"""Pushing an HSM key into AWS KMS with boto3, against tests/aws_kms_server.py: a local endpoint
speaking AWS's JSON 1.1 wire format that verifies SigV4 and really decrypts the import (moto 5.2.5
implements neither GetParametersForImport nor ImportKeyMaterial)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from aws_kms_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, AwsKmsServer
from botocore.exceptions import ClientError
from push_support import Source

pytestmark = pytest.mark.softhsm
pytest_plugins = ("push_fixtures",)

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def aws() -> Iterator[AwsKmsServer]:
    server = AwsKmsServer(REGION).start()
    yield server
    server.stop()


def kms(server: AwsKmsServer) -> Any:
    """What an AWS user of the pushed key would hold: boto3 with the account's credentials."""
    return boto3.client(
        "kms",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
    )


def connect(source: Source, server_url: str, name: str, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": name,
        "cloud": "aws",
        "endpoint": server_url,
        "region": REGION,
        "access_key_id": ACCESS_KEY_ID,
        "secret_access_key": SECRET_ACCESS_KEY,
        **overrides,
    }
    return source.connect(**body)


def new_cloud_key(source: Source, connection: str, name: str) -> dict[str, Any]:
    answer = source.post(
        "/api/v1/cckm/aws/keys", json={"connection": connection, "name": name}, headers=source.h()
    )
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def import_material(source: Source, key_id: str, **body: Any) -> Any:
    return source.post(f"/api/v1/cckm/aws/keys/{key_id}/import-material", json=body, headers=source.h())


def rfc3339_ns(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S") + ".505860192Z"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def connection(source: Source, aws: AwsKmsServer) -> dict[str, Any]:
    return connect(source, aws.url, "aws-target")


def test_push_imports_the_hsm_material_and_reimport_keeps_old_ciphertexts(
    source: Source, aws: AwsKmsServer, connection: dict[str, Any]
) -> None:
    assert source.post(f"/api/v1/connections/{connection['id']}/test", headers=source.h()).status_code == 200
    local = source.local_key("orders-root")
    created = new_cloud_key(source, "aws-target", "orders")
    assert (
        created["aws_param"]["Origin"] == "EXTERNAL" and created["aws_param"]["KeyState"] == "PendingImport"
    )
    assert created["local_key_id"] is None and created["key_check_value"] is None

    valid_to = rfc3339_ns(datetime.now(UTC) + timedelta(days=30))
    answer = import_material(
        source, created["id"], source_key_identifier="orders-root", key_expiration=True, valid_to=valid_to
    )
    assert answer.status_code == 200, answer.text
    pushed = answer.json()
    params = pushed["aws_param"]
    assert params["KeyState"] == "Enabled" and params["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert params["ValidTo"] == valid_to and pushed["valid_to"] == valid_to  # echoed, nanoseconds and all
    assert params["KeyID"] == created["kms_id"] and params["Arn"].endswith(created["kms_id"])
    assert pushed["local_key_id"] == local["id"] and pushed["key_material_origin"] == "hsmbridge"
    # the material arrived: the cloud's own key check value of what it decrypted is the source's
    assert aws.material_check_value(created["kms_id"]) == pushed["key_check_value"]
    assert aws.keys[created["kms_id"]].valid_to == pytest.approx(
        datetime.fromisoformat(valid_to[:26] + "+00:00").timestamp(), abs=1e-6
    )

    client = kms(aws)
    ciphertext = client.encrypt(
        KeyId=created["kms_id"], Plaintext=b"order 42", EncryptionContext={"app": "x"}
    )["CiphertextBlob"]
    client.delete_imported_key_material(KeyId=created["kms_id"])
    with pytest.raises(ClientError) as gone:
        client.decrypt(CiphertextBlob=ciphertext, EncryptionContext={"app": "x"})
    assert gone.value.response["Error"]["Code"] == "KMSInvalidStateException"

    again = import_material(source, created["id"], source_key_tier="local", source_key_identifier=local["id"])
    assert again.status_code == 200, again.text
    assert again.json()["aws_param"]["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    plain = client.decrypt(CiphertextBlob=ciphertext, EncryptionContext={"app": "x"})["Plaintext"]
    assert plain == b"order 42"


def test_another_source_is_refused_before_any_cloud_call(source: Source, aws: AwsKmsServer) -> None:
    created = new_cloud_key(source, "aws-target", "refusal")
    assert (
        import_material(
            source, created["id"], source_key_identifier=source.local_key("first")["id"]
        ).status_code
        == 200
    )
    calls, built = len(aws.calls), source.clients.built
    refused = import_material(source, created["id"], source_key_identifier=source.local_key("second")["id"])
    assert refused.status_code == 409 and refused.json()["code"] == "KEY_MATERIAL_MISMATCH"
    no_ident = import_material(source, created["id"])
    assert no_ident.status_code == 409 and no_ident.json()["target"] == "source_key_identifier"
    assert (len(aws.calls), source.clients.built) == (calls, built)


def test_a_new_local_key_is_generated_when_no_source_is_named(source: Source, aws: AwsKmsServer) -> None:
    created = new_cloud_key(source, "aws-target", "generated")
    answer = import_material(source, created["id"], source_key_tier="local")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["local_key_name"].startswith("cckm-aws-") and body["local_key_id"]
    assert aws.material_check_value(created["kms_id"]) == body["key_check_value"]


def test_expired_material_is_deleted_by_aws_and_the_same_material_comes_back(
    source: Source, aws: AwsKmsServer
) -> None:
    created = new_cloud_key(source, "aws-target", "short-lived")
    soon = datetime.now(UTC) + timedelta(hours=1)
    answer = import_material(
        source,
        created["id"],
        source_key_identifier=source.local_key("short")["id"],
        key_expiration=True,
        valid_to=soon.isoformat().replace("+00:00", "Z"),
    )
    assert answer.status_code == 200, answer.text
    aws.clock_offset = 2 * 3600  # the cloud's clock passes ValidTo: AWS deletes the material
    try:
        state = kms(aws).describe_key(KeyId=created["kms_id"])["KeyMetadata"]["KeyState"]
        assert state == "PendingImport"
        synced = source.get(f"/api/v1/cckm/aws/keys/{created['id']}?sync=true", headers=source.h()).json()
        assert synced["aws_param"]["KeyState"] == "PendingImport"
        back = import_material(source, created["id"], source_key_identifier=answer.json()["local_key_id"])
        assert back.status_code == 200 and back.json()["aws_param"]["KeyState"] == "Enabled"
    finally:
        aws.clock_offset = 0


def test_bad_credentials_are_the_clouds_own_code_and_record_nothing(
    source: Source, aws: AwsKmsServer
) -> None:
    wrong_secret = connect(source, aws.url, "aws-wrong-secret", secret_access_key="not-the-secret")
    wrong_id = connect(source, aws.url, "aws-wrong-id", access_key_id="AKIAUNKNOWN000000000")
    for conn, code in (
        (wrong_secret, "InvalidSignatureException"),
        (wrong_id, "UnrecognizedClientException"),
    ):
        tested = source.post(f"/api/v1/connections/{conn['id']}/test", headers=source.h())
        assert tested.status_code == 502, tested.text
        assert tested.json()["code"] == "CLOUD_AUTH_FAILED" and tested.json()["cloud_code"] == code
        assert "not-the-secret" not in tested.text
        before = source.get("/api/v1/cckm/aws/keys", headers=source.h()).json()["total"]
        refused = source.post("/api/v1/cckm/aws/keys", json={"connection": conn["name"]}, headers=source.h())
        assert refused.status_code == 502 and refused.json()["cloud_code"] == code
        assert source.get("/api/v1/cckm/aws/keys", headers=source.h()).json()["total"] == before


def test_a_target_that_is_down_or_slow_is_a_clean_error_and_records_nothing(source: Source) -> None:
    down = connect(source, closed_port_url(), "aws-down")
    refused = source.post(f"/api/v1/connections/{down['id']}/test", headers=source.h())
    assert refused.status_code == 503 and refused.json()["code"] == "CLOUD_UNAVAILABLE"

    slow_server = AwsKmsServer(REGION).start()
    try:
        slow = connect(source, slow_server.url, "aws-slow", timeout=0.5)
        created = new_cloud_key(source, "aws-slow", "slow")
        slow_server.delay = 1.5
        answer = import_material(
            source, created["id"], source_key_identifier=source.local_key("slow-root")["id"]
        )
        assert answer.status_code == 504, answer.text
        assert answer.json()["cloud_code"] == "timeout" and answer.json()["cloud"] == "aws"
        record = source.get(f"/api/v1/cckm/aws/keys/{created['id']}", headers=source.h()).json()
        assert record["key_check_value"] is None and record["local_key_id"] is None
        assert record["aws_param"]["KeyState"] == "PendingImport"
        assert slow["timeout"] == 0.5
    finally:
        slow_server.delay = 0
        slow_server.stop()
