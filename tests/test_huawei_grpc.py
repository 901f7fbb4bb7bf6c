"""The bring-your-own-key RPCs (one core, several transports): create an external key, get bound
import parameters, import with `cryptography`-wrapped material, wrap and unwrap, delete the
material, reimport the same material — over gRPC against a real daemon on SoftHSM2, and the same
key seen through Huawei's SDK when the gRPC tenant is the project's (``huawei:{project_id}``)."""

from __future__ import annotations

import base64

import grpc
import pytest
from daemon import Daemon
from huawei_support import PROJECT, kms_client, new_material, wrap_material
from huaweicloudsdkkms.v2 import ListKeyDetailRequest, OperateKeyRequestBody

from hsmbridge.v1 import (
    crypto_pb2,
    crypto_pb2_grpc,
    import_tokens_pb2,
    import_tokens_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
)

pytestmark = pytest.mark.softhsm

pytest_plugins = ("huawei_fixtures",)
MD = (("x-hsmbridge-tenant", f"huawei:{PROJECT}"),)


def test_byok_over_grpc_is_the_same_key_as_over_the_huawei_api(daemon: Daemon) -> None:
    channel = daemon.channel()
    keys = keys_pb2_grpc.KeyServiceStub(channel)
    tokens = import_tokens_pb2_grpc.ImportTokenServiceStub(channel)
    crypto = crypto_pb2_grpc.CryptoServiceStub(channel)

    created = keys.CreateExternalKey(keys_pb2.CreateExternalKeyRequest(alias="grpc-byok"), metadata=MD)
    key_id = created.key.id
    assert not created.material_present

    def import_(material: bytes) -> keys_pb2.ExternalKey:
        params = tokens.GetImportParameters(
            import_tokens_pb2.GetImportParametersRequest(
                key_id=key_id, wrapping=import_tokens_pb2.KEY_WRAPPING_RSA_OAEP_SHA256
            ),
            metadata=MD,
        )
        encrypted = wrap_material(base64.b64encode(params.public_key_der).decode(), material)
        return keys.ImportKeyMaterial(
            keys_pb2.ImportKeyMaterialRequest(
                key_id=key_id,
                import_token=params.import_token,
                encrypted_key_material=base64.b64decode(encrypted),
            ),
            metadata=MD,
        )

    material = new_material()
    assert import_(material).material_present
    wrapped = crypto.Wrap(crypto_pb2.WrapRequest(key_id=key_id, aad=["grpc"]), metadata=MD)

    info = kms_client(daemon).list_key_detail(ListKeyDetailRequest(body=OperateKeyRequestBody(key_id=key_id)))
    assert (info.key_info.key_alias, info.key_info.key_state) == ("grpc-byok", "2")

    gone = keys.DeleteKeyMaterial(keys_pb2.DeleteKeyMaterialRequest(key_id=key_id), metadata=MD)
    assert not gone.material_present
    with pytest.raises(grpc.RpcError):
        crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=key_id, ciphertext=wrapped.ciphertext, aad=["grpc"]), metadata=MD
        )

    import_(material)
    opened = crypto.Unwrap(
        crypto_pb2.UnwrapRequest(key_id=key_id, ciphertext=wrapped.ciphertext, aad=["grpc"]), metadata=MD
    )
    assert opened.plaintext == wrapped.plaintext


def test_pkcs1_v15_is_refused_over_grpc_by_default(daemon: Daemon) -> None:
    channel = daemon.channel()
    key_id = (
        keys_pb2_grpc.KeyServiceStub(channel)
        .CreateExternalKey(keys_pb2.CreateExternalKeyRequest(alias="grpc-pkcs1"), metadata=MD)
        .key.id
    )
    with pytest.raises(grpc.RpcError) as info:
        import_tokens_pb2_grpc.ImportTokenServiceStub(channel).GetImportParameters(
            import_tokens_pb2.GetImportParametersRequest(
                key_id=key_id, wrapping=import_tokens_pb2.KEY_WRAPPING_RSA_PKCS1_V1_5
            ),
            metadata=MD,
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "huawei.allow_pkcs1_v15" in (info.value.details() or "")
