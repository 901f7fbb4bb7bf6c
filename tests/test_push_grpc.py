"""The push over gRPC (`hsmbridge.v1.PushService`) on a real daemon, into the local AWS KMS
endpoint (tests/aws_kms_server.py): the daemon's own key check value, the pushed record's and the
one AWS computes from the material it decrypted are the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from aws_kms_server import ACCESS_KEY_ID, SECRET_ACCESS_KEY, AwsKmsServer
from daemon import Daemon

from hsmbridge.v1 import keys_pb2, keys_pb2_grpc, push_pb2, push_pb2_grpc

pytestmark = pytest.mark.softhsm

TENANT = (("x-hsmbridge-tenant", "push-grpc-tenant"),)


@pytest.fixture(scope="module")
def daemon(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    d = Daemon(softhsm_token, tmp_path_factory.mktemp("push-grpc"))
    d.start()
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop()


def test_connection_cloud_key_and_import_over_grpc(daemon: Daemon) -> None:
    aws = AwsKmsServer("us-east-1").start()
    try:
        with daemon.channel() as channel:
            push = push_pb2_grpc.PushServiceStub(channel)
            keys = keys_pb2_grpc.KeyServiceStub(channel)
            conn = push.CreateConnection(
                push_pb2.CreateConnectionRequest(
                    name="aws-grpc",
                    cloud="aws",
                    settings={"endpoint": aws.url, "region": "us-east-1", "access_key_id": ACCESS_KEY_ID},
                    secrets={"secret_access_key": SECRET_ACCESS_KEY},
                ),
                metadata=TENANT,
            )
            assert list(conn.secrets_set) == ["secret_access_key"]
            assert SECRET_ACCESS_KEY not in str(conn)
            assert push.TestConnection(
                push_pb2.TestConnectionRequest(connection="aws-grpc"), metadata=TENANT
            ).ok
            local = keys.CreateKey(keys_pb2.CreateKeyRequest(name="grpc-root"), metadata=TENANT)
            assert len(local.current_version.key_check_value) == 6
            cloud_key = push.CreateCloudKey(
                push_pb2.CreateCloudKeyRequest(cloud="aws", connection="aws-grpc", name="grpc"),
                metadata=TENANT,
            )
            assert cloud_key.cloud_params["KeyState"] == "PendingImport"
            pushed = push.ImportMaterial(
                push_pb2.ImportMaterialRequest(
                    cloud="aws",
                    id=cloud_key.id,
                    source=push_pb2.MaterialSource(source_key_identifier="grpc-root"),
                ),
                metadata=TENANT,
            )
            assert pushed.key_check_value == local.current_version.key_check_value
            assert aws.material_check_value(pushed.kms_id) == pushed.key_check_value
            assert pushed.cloud_params["KeyState"] == "Enabled" and pushed.key_material_origin == "hsmbridge"
            listed = push.ListCloudKeys(push_pb2.ListCloudKeysRequest(cloud="aws"), metadata=TENANT)
            assert [k.id for k in listed.keys] == [cloud_key.id]
            versions = keys.ListKeyVersions(keys_pb2.ListKeyVersionsRequest(key_id=local.id), metadata=TENANT)
            assert versions.versions[0].key_check_value == pushed.key_check_value
            other = keys.CreateKey(keys_pb2.CreateKeyRequest(name="grpc-other"), metadata=TENANT)
            with pytest.raises(grpc.RpcError) as refused:
                push.ImportMaterial(
                    push_pb2.ImportMaterialRequest(
                        cloud="aws",
                        id=cloud_key.id,
                        source=push_pb2.MaterialSource(source_key_identifier=other.id),
                    ),
                    metadata=TENANT,
                )
            assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
            with pytest.raises(grpc.RpcError) as in_use:
                push.DeleteConnection(
                    push_pb2.DeleteConnectionRequest(connection="aws-grpc"), metadata=TENANT
                )
            assert in_use.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    finally:
        aws.stop()


def cli(daemon: Daemon, *args: str, **env: str) -> dict:  # type: ignore[type-arg]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HSMBRIDGE_")}
    done = subprocess.run(
        [sys.executable, "-m", "hsmbridge.cli", "push", *args],
        env={
            **environ,
            "HSMBRIDGE_GRPC_ADDRESS": daemon.address,
            "HSMBRIDGE_TENANT": "push-cli-tenant",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_the_cli_pushes_with_the_secret_from_the_environment_never_the_command_line(daemon: Daemon) -> None:
    aws = AwsKmsServer("us-east-2").start()
    try:
        conn = cli(
            daemon,
            "connection",
            "create",
            "--cloud",
            "aws",
            "--name",
            "cli-aws",
            "--set",
            f"endpoint={aws.url}",
            "--set",
            "region=us-east-2",
            "--set",
            f"access_key_id={ACCESS_KEY_ID}",
            "--secret-env",
            "secret_access_key=PUSH_TEST_AWS_SECRET",
            PUSH_TEST_AWS_SECRET=SECRET_ACCESS_KEY,
        )
        assert conn["secrets_set"] == ["secret_access_key"] and SECRET_ACCESS_KEY not in json.dumps(conn)
        assert cli(daemon, "connection", "test", "cli-aws")["ok"] is True
        key = cli(daemon, "key", "create", "--cloud", "aws", "--connection", "cli-aws", "--name", "cli")
        pushed = cli(
            daemon,
            "import-material",
            "--cloud",
            "aws",
            key["id"],
            "--valid-to",
            "2999-01-01T00:00:00.000000001Z",
        )
        assert pushed["cloud_params"]["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
        assert pushed["valid_to"] == "2999-01-01T00:00:00.000000001Z"
        assert aws.material_check_value(pushed["kms_id"]) == pushed["key_check_value"]
    finally:
        aws.stop()
