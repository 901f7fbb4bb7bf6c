"""Huawei KMS data keys, small-data encryption and random numbers with the official SDK against a
real daemon on SoftHSM2: hex `plain_text` with its SHA-256 exactly as Huawei defines it, lengths,
AAD binding, gen-random; and the RSAES_PKCS1_V1_5 switch, off by default."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from daemon import Daemon
from huawei_support import error_of, kms_client, new_material, signed_post, wrap_material
from huaweicloudsdkkms.v2 import (
    CreateDatakeyRequest,
    CreateDatakeyRequestBody,
    CreateDatakeyWithoutPlaintextRequest,
    CreateKeyRequest,
    CreateKeyRequestBody,
    CreateParametersForImportRequest,
    CreateRandomRequest,
    DecryptDatakeyRequest,
    DecryptDatakeyRequestBody,
    DecryptDataRequest,
    DecryptDataRequestBody,
    EncryptDatakeyRequest,
    EncryptDatakeyRequestBody,
    EncryptDataRequest,
    EncryptDataRequestBody,
    GenRandomRequestBody,
    GetParametersForImportRequestBody,
    ImportKeyMaterialRequest,
    ImportKeyMaterialRequestBody,
)

pytestmark = pytest.mark.softhsm

pytest_plugins = ("huawei_fixtures",)


@pytest.fixture(scope="module")
def key_id(daemon: Daemon) -> str:
    client = kms_client(daemon)
    return str(
        client.create_key(CreateKeyRequest(body=CreateKeyRequestBody(key_alias="dek-root"))).key_info.key_id
    )


def decrypt(client: Any, key_id: str, cipher_text: str, length: int, aad: str | None = None) -> Any:
    return client.decrypt_datakey(
        DecryptDatakeyRequest(
            body=DecryptDatakeyRequestBody(
                key_id=key_id,
                cipher_text=cipher_text,
                datakey_cipher_length=str(length),
                additional_authenticated_data=aad,
            )
        )
    )


@pytest.mark.parametrize(
    ("spec", "length", "size"), [("AES_256", None, 32), ("AES_128", None, 16), (None, "512", 64)]
)
def test_create_datakey_sizes(
    daemon: Daemon, key_id: str, spec: str | None, length: str | None, size: int
) -> None:
    client = kms_client(daemon)
    made = client.create_datakey(
        CreateDatakeyRequest(
            body=CreateDatakeyRequestBody(key_id=key_id, key_spec=spec, datakey_length=length)
        )
    )
    assert len(bytes.fromhex(made.plain_text)) == size
    opened = decrypt(client, key_id, made.cipher_text, size)
    assert opened.data_key == made.plain_text and opened.datakey_length == str(size)
    assert opened.datakey_dgst == hashlib.sha256(bytes.fromhex(made.plain_text)).hexdigest()


def test_datakey_length_beyond_512_bits_is_refused(daemon: Daemon, key_id: str) -> None:
    response = signed_post(daemon, "create-datakey", {"key_id": key_id, "datakey_length": "520"})
    assert error_of(response) == (400, "KMS.1901")


def test_create_datakey_without_plaintext(daemon: Daemon, key_id: str) -> None:
    client = kms_client(daemon)
    made = client.create_datakey_without_plaintext(
        CreateDatakeyWithoutPlaintextRequest(
            body=CreateDatakeyRequestBody(key_id=key_id, datakey_length="256")
        )
    )
    assert made.key_id == key_id and len(decrypt(client, key_id, made.cipher_text, 32).data_key) == 64


def test_encrypt_datakey_takes_the_key_and_its_sha256(daemon: Daemon, key_id: str) -> None:
    client = kms_client(daemon)
    dek = os.urandom(32)
    sealed = client.encrypt_datakey(
        EncryptDatakeyRequest(
            body=EncryptDatakeyRequestBody(
                key_id=key_id,
                plain_text=(dek + hashlib.sha256(dek).digest()).hex(),
                datakey_plain_length="32",
                additional_authenticated_data="ctx",
            )
        )
    )
    assert sealed.datakey_length == "32"
    assert decrypt(client, key_id, sealed.cipher_text, 32, aad="ctx").data_key == dek.hex()


def test_encrypt_datakey_refuses_a_wrong_digest_or_length(daemon: Daemon, key_id: str) -> None:
    dek = os.urandom(32)
    wrong = signed_post(
        daemon,
        "encrypt-datakey",
        {"key_id": key_id, "plain_text": (dek + b"\x00" * 32).hex(), "datakey_plain_length": "32"},
    )
    assert error_of(wrong) == (400, "KMS.2103")
    short = signed_post(
        daemon,
        "encrypt-datakey",
        {
            "key_id": key_id,
            "plain_text": (dek + hashlib.sha256(dek).digest()).hex(),
            "datakey_plain_length": "16",
        },
    )
    assert error_of(short) == (400, "KMS.2101")
    not_hex = signed_post(
        daemon, "encrypt-datakey", {"key_id": key_id, "plain_text": "zz", "datakey_plain_length": "1"}
    )
    assert error_of(not_hex) == (400, "KMS.2101")


def test_decrypt_datakey_refuses_a_wrong_length_or_ciphertext(daemon: Daemon, key_id: str) -> None:
    client = kms_client(daemon)
    made = client.create_datakey(CreateDatakeyRequest(body=CreateDatakeyRequestBody(key_id=key_id)))
    body = {"key_id": key_id, "cipher_text": made.cipher_text, "datakey_cipher_length": "16"}
    assert error_of(signed_post(daemon, "decrypt-datakey", body)) == (400, "KMS.2202")
    flipped = made.cipher_text[:-2] + ("00" if made.cipher_text[-2:] != "00" else "01")
    body = {"key_id": key_id, "cipher_text": flipped, "datakey_cipher_length": "32"}
    assert error_of(signed_post(daemon, "decrypt-datakey", body)) == (400, "KMS.2201")


def test_encrypt_and_decrypt_data(daemon: Daemon, key_id: str) -> None:
    client = kms_client(daemon)
    text = "Zürich ✓ " * 100
    sealed = client.encrypt_data(
        EncryptDataRequest(
            body=EncryptDataRequestBody(key_id=key_id, plain_text=text, additional_authenticated_data="a")
        )
    ).cipher_text
    opened = client.decrypt_data(
        DecryptDataRequest(body=DecryptDataRequestBody(cipher_text=sealed, additional_authenticated_data="a"))
    )
    assert opened.plain_text == text and base64.b64decode(opened.plain_text_base64) == text.encode()
    wrong_aad = signed_post(
        daemon, "decrypt-data", {"cipher_text": sealed, "additional_authenticated_data": "b"}
    )
    assert error_of(wrong_aad) == (400, "KMS.2201")
    too_big = signed_post(daemon, "encrypt-data", {"key_id": key_id, "plain_text": "x" * 4097})
    assert error_of(too_big) == (400, "KMS.2101")
    garbage = signed_post(daemon, "decrypt-data", {"cipher_text": "bm90IGEgY2lwaGVydGV4dA=="})
    assert error_of(garbage) == (400, "KMS.2201")


def test_gen_random(daemon: Daemon) -> None:
    client = kms_client(daemon)
    random = client.create_random(CreateRandomRequest(body=GenRandomRequestBody(random_data_length="512")))
    assert len(bytes.fromhex(random.random_data)) == 64
    assert error_of(signed_post(daemon, "gen-random", {"random_data_length": "7"})) == (400, "KMS.1801")


def test_pkcs1_v15_is_off_by_default_and_the_400_names_the_setting(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = str(
        client.create_key(
            CreateKeyRequest(body=CreateKeyRequestBody(key_alias="no-pkcs1", origin="external"))
        ).key_info.key_id
    )
    response = signed_post(
        daemon, "get-parameters-for-import", {"key_id": key_id, "wrapping_algorithm": "RSAES_PKCS1_V1_5"}
    )
    assert error_of(response) == (400, "KMS.0308")
    assert "huawei.allow_pkcs1_v15" in response.json()["error"]["error_msg"]


def test_oaep_sha1_wrapping(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = str(
        client.create_key(
            CreateKeyRequest(body=CreateKeyRequestBody(key_alias="sha1", origin="external"))
        ).key_info.key_id
    )
    params = client.create_parameters_for_import(
        CreateParametersForImportRequest(
            body=GetParametersForImportRequestBody(key_id=key_id, wrapping_algorithm="RSAES_OAEP_SHA_1")
        )
    )
    encrypted = wrap_material(params.public_key, new_material(), "RSAES_OAEP_SHA_1")
    client.import_key_material(
        ImportKeyMaterialRequest(
            body=ImportKeyMaterialRequestBody(
                key_id=key_id, import_token=params.import_token, encrypted_key_material=encrypted
            )
        )
    )
    made = client.create_datakey(CreateDatakeyRequest(body=CreateDatakeyRequestBody(key_id=key_id)))
    assert decrypt(client, key_id, made.cipher_text, 32).data_key == made.plain_text
