"""The bring-your-own-key flow of seeds 002 and 004 with Huawei's official SDK against a real
daemon on SoftHSM2: create an external key, get the import parameters, wrap 256 bits of material
with `cryptography`, import it, make and decrypt data keys, encrypt and decrypt data, delete the
material, reimport the same material, and decrypt the old data keys again."""

from __future__ import annotations

import hashlib

import pytest
from daemon import Daemon
from huawei_support import DEV_SK, PROJECT, kms_client, new_material, wrap_material
from huaweicloudsdkkms.v2 import (
    CreateDatakeyRequest,
    CreateDatakeyRequestBody,
    CreateKeyRequest,
    CreateKeyRequestBody,
    CreateParametersForImportRequest,
    DecryptDatakeyRequest,
    DecryptDatakeyRequestBody,
    DecryptDataRequest,
    DecryptDataRequestBody,
    DeleteImportedKeyMaterialRequest,
    EncryptDataRequest,
    EncryptDataRequestBody,
    GetParametersForImportRequestBody,
    ImportKeyMaterialRequest,
    ImportKeyMaterialRequestBody,
    ListKeyDetailRequest,
    OperateKeyRequestBody,
)

pytestmark = pytest.mark.softhsm

pytest_plugins = ("huawei_fixtures",)


def key_state(client, key_id: str) -> str:  # type: ignore[no-untyped-def]
    info = client.list_key_detail(ListKeyDetailRequest(body=OperateKeyRequestBody(key_id=key_id))).key_info
    return str(info.key_state)


def import_material(client, key_id: str, material: bytes, algorithm: str = "RSAES_OAEP_SHA_256") -> None:  # type: ignore[no-untyped-def]
    params = client.create_parameters_for_import(
        CreateParametersForImportRequest(
            body=GetParametersForImportRequestBody(key_id=key_id, wrapping_algorithm=algorithm)
        )
    )
    assert 200 <= len(params.import_token) <= 6144
    encrypted = wrap_material(params.public_key, material, algorithm)
    assert 344 <= len(encrypted) <= 360
    client.import_key_material(
        ImportKeyMaterialRequest(
            body=ImportKeyMaterialRequestBody(
                key_id=key_id, import_token=params.import_token, encrypted_key_material=encrypted
            )
        )
    )


def test_the_whole_byok_flow_with_the_official_sdk(daemon: Daemon) -> None:
    client = kms_client(daemon)
    created = client.create_key(
        CreateKeyRequest(body=CreateKeyRequestBody(key_alias="byok-flow", origin="external"))
    ).key_info
    key_id = created.key_id
    assert key_state(client, key_id) == "5"

    material = new_material()
    import_material(client, key_id, material)
    assert key_state(client, key_id) == "2"

    aad = "orders-2026"
    made = client.create_datakey(
        CreateDatakeyRequest(
            body=CreateDatakeyRequestBody(
                key_id=key_id, datakey_length="256", additional_authenticated_data=aad
            )
        )
    )
    assert len(bytes.fromhex(made.plain_text)) == 32

    def decrypt(cipher_text: str) -> str:
        result = client.decrypt_datakey(
            DecryptDatakeyRequest(
                body=DecryptDatakeyRequestBody(
                    key_id=key_id,
                    cipher_text=cipher_text,
                    datakey_cipher_length="32",
                    additional_authenticated_data=aad,
                )
            )
        )
        assert result.datakey_dgst == hashlib.sha256(bytes.fromhex(result.data_key)).hexdigest()
        return str(result.data_key)

    assert decrypt(made.cipher_text) == made.plain_text

    sealed = client.encrypt_data(
        EncryptDataRequest(body=EncryptDataRequestBody(key_id=key_id, plain_text="hello huawei"))
    ).cipher_text
    opened = client.decrypt_data(DecryptDataRequest(body=DecryptDataRequestBody(cipher_text=sealed)))
    assert opened.plain_text == "hello huawei" and opened.key_id == key_id

    client.delete_imported_key_material(
        DeleteImportedKeyMaterialRequest(body=OperateKeyRequestBody(key_id=key_id))
    )
    assert key_state(client, key_id) == "5"

    import_material(client, key_id, material)
    assert key_state(client, key_id) == "2"
    assert decrypt(made.cipher_text) == made.plain_text
    again = client.decrypt_data(
        DecryptDataRequest(body=DecryptDataRequestBody(cipher_text=sealed, key_id=key_id))
    )
    assert again.plain_text == "hello huawei"

    # one audit event per call, named after Huawei's API, for the project's tenant; no secrets
    output = "".join(daemon.output)
    for api in ("create-key", "get-parameters-for-import", "import-key-material", "create-datakey"):
        assert f'"event":"huawei.kms.{api}","outcome":"success","principal":"huawei-dev"' in output
    assert f'"instance":"huawei:{PROJECT}"' in output
    for secret in (made.plain_text, material.hex(), DEV_SK, "hello huawei"):
        assert secret not in output
