"""The push over gRPC (`hsmbridge.v1.PushService`) on a real daemon, into the local AWS KMS
endpoint (tests/aws_kms_server.py): the daemon's own key check value, the pushed record's and the
one AWS computes from the material it decrypted are the same."""

from __future__ import annotations

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
