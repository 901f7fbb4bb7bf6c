"""Every error path of the Huawei KMS API, with the official SDK (or requests signed by its signer)
against a real daemon on SoftHSM2: each answer is Huawei's error body with Huawei's code and status,
never a Key Protect body, never a traceback."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from daemon import DEV_TOKEN, Daemon
from huawei_support import (
    PROJECT,
    error_of,
    kms_client,
    new_material,
    signed_post,
    start_daemon,
    stop_daemon,
    wrap_material,
)
from huaweicloudsdkcore.exceptions.exceptions import SdkException
from huaweicloudsdkkms.v2 import (
    CreateDatakeyRequest,
    CreateDatakeyRequestBody,
    CreateKeyRequest,
    CreateKeyRequestBody,
    CreateParametersForImportRequest,
    DecryptDatakeyRequest,
    DecryptDatakeyRequestBody,
    DeleteImportedKeyMaterialRequest,
    DisableKeyRequest,
    GetParametersForImportRequestBody,
    ImportKeyMaterialRequest,
    ImportKeyMaterialRequestBody,
    ListKeyDetailRequest,
    OperateKeyRequestBody,
)

pytestmark = pytest.mark.softhsm

OTHER_PROJECT = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
LIMITED_AK = "LIMITEDAK00000001"
LIMITED_SK = "limited-secret-key-0001"
READER_AK = "READERAK000000001"
READER_SK = "reader-secret-key-00001"


@pytest.fixture(scope="module")
def daemon(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    workdir = tmp_path_factory.mktemp("huawei-errors")
    for name, secret in (("limited.sk", LIMITED_SK), ("reader.sk", READER_SK)):
        (workdir / name).write_text(secret)
        (workdir / name).chmod(0o600)
    (workdir / "hsmbridge.toml").write_text(
        f"""
[huawei]
allow_pkcs1_v15 = true

[[huawei.access_keys]]
access_key = "{LIMITED_AK}"
secret_key_file = "{workdir / "limited.sk"}"
principal = "limited"
roles = ["Manager"]
projects = ["{PROJECT}"]

[[huawei.access_keys]]
access_key = "{READER_AK}"
secret_key_file = "{workdir / "reader.sk"}"
principal = "reader"
roles = ["Reader"]
projects = ["*"]
"""
    )
    d = start_daemon(softhsm_token, workdir, HSMBRIDGE_CONFIG=str(workdir / "hsmbridge.toml"))
    yield d
    stop_daemon(d)


def sdk_error(call: Callable[[], Any]) -> tuple[int, str]:
    with pytest.raises(SdkException) as info:
        call()
    return info.value.status_code, info.value.error_code  # type: ignore[attr-defined]


def external_key(client: Any, alias: str) -> str:
    return str(
        client.create_key(
            CreateKeyRequest(body=CreateKeyRequestBody(key_alias=alias, origin="external"))
        ).key_info.key_id
    )


def parameters(client: Any, key_id: str, algorithm: str = "RSAES_OAEP_SHA_256") -> Any:
    return client.create_parameters_for_import(
        CreateParametersForImportRequest(
            body=GetParametersForImportRequestBody(key_id=key_id, wrapping_algorithm=algorithm)
        )
    )


def import_with(client: Any, key_id: str, token: str, encrypted: str) -> None:
    client.import_key_material(
        ImportKeyMaterialRequest(
            body=ImportKeyMaterialRequestBody(
                key_id=key_id, import_token=token, encrypted_key_material=encrypted
            )
        )
    )


def imported_key(client: Any, alias: str, material: bytes | None = None) -> str:
    key_id = external_key(client, alias)
    params = parameters(client, key_id)
    import_with(
        client, key_id, params.import_token, wrap_material(params.public_key, material or new_material())
    )
    return key_id


def datakey(client: Any, key_id: str, aad: str | None = None) -> Any:
    return client.create_datakey(
        CreateDatakeyRequest(
            body=CreateDatakeyRequestBody(
                key_id=key_id, datakey_length="256", additional_authenticated_data=aad
            )
        )
    )


def decrypt(client: Any, key_id: str, cipher_text: str, aad: str | None = None) -> Any:
    return client.decrypt_datakey(
        DecryptDatakeyRequest(
            body=DecryptDatakeyRequestBody(
                key_id=key_id,
                cipher_text=cipher_text,
                datakey_cipher_length="32",
                additional_authenticated_data=aad,
            )
        )
    )


# -- import tokens -----------------------------------------------------------------------------


def flip(token: str, index: int) -> str:
    raw = bytearray(base64.b64decode(token))
    raw[index] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("where", [0, 20, -1])
def test_a_tampered_import_token_is_refused(daemon: Daemon, where: int) -> None:
    client = kms_client(daemon)
    key_id = external_key(client, f"tampered-{where + 1}")
    params = parameters(client, key_id)
    encrypted = wrap_material(params.public_key, new_material())
    assert sdk_error(lambda: import_with(client, key_id, flip(params.import_token, where), encrypted)) == (
        400,
        "KMS.0308",
    )
    import_with(client, key_id, params.import_token, encrypted)  # the genuine one still works


def test_a_used_import_token_is_refused(daemon: Daemon) -> None:
    client = kms_client(daemon)
    material = new_material()
    key_id = external_key(client, "reused")
    params = parameters(client, key_id)
    encrypted = wrap_material(params.public_key, material)
    import_with(client, key_id, params.import_token, encrypted)
    client.delete_imported_key_material(
        DeleteImportedKeyMaterialRequest(body=OperateKeyRequestBody(key_id=key_id))
    )
    assert sdk_error(lambda: import_with(client, key_id, params.import_token, encrypted)) == (400, "KMS.0308")


def test_a_token_for_another_key_or_project_is_refused(daemon: Daemon) -> None:
    client = kms_client(daemon)
    first, second = external_key(client, "foreign-1"), external_key(client, "foreign-2")
    params = parameters(client, first)
    encrypted = wrap_material(params.public_key, new_material())
    assert sdk_error(lambda: import_with(client, second, params.import_token, encrypted)) == (400, "KMS.0308")
    other = kms_client(daemon, project=OTHER_PROJECT)
    theirs = external_key(other, "foreign-3")
    assert sdk_error(lambda: import_with(other, theirs, params.import_token, encrypted)) == (400, "KMS.0308")


def test_material_that_does_not_decrypt_is_refused(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = external_key(client, "garbage")
    params = parameters(client, key_id)
    garbage = base64.b64encode(b"\x01" * 256).decode()
    assert sdk_error(lambda: import_with(client, key_id, params.import_token, garbage)) == (400, "KMS.0308")


def test_a_reimport_must_be_the_same_material(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = imported_key(client, "same-only")
    client.delete_imported_key_material(
        DeleteImportedKeyMaterialRequest(body=OperateKeyRequestBody(key_id=key_id))
    )
    params = parameters(client, key_id)
    different = wrap_material(params.public_key, new_material())
    assert sdk_error(lambda: import_with(client, key_id, params.import_token, different)) == (400, "KMS.0308")


def test_import_parameters_need_an_external_key_pending_import(daemon: Daemon) -> None:
    client = kms_client(daemon)
    generated = client.create_key(
        CreateKeyRequest(body=CreateKeyRequestBody(key_alias="generated"))
    ).key_info.key_id
    assert sdk_error(lambda: parameters(client, generated)) == (400, "KMS.0309")
    key_id = imported_key(client, "already-imported")
    assert sdk_error(lambda: parameters(client, key_id)) == (400, "KMS.0310")


def test_pkcs1_v15_wrapping_when_enabled(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = external_key(client, "pkcs1")
    params = parameters(client, key_id, "RSAES_PKCS1_V1_5")
    import_with(
        client,
        key_id,
        params.import_token,
        wrap_material(params.public_key, new_material(), "RSAES_PKCS1_V1_5"),
    )
    made = datakey(client, key_id)
    assert decrypt(client, key_id, made.cipher_text).data_key == made.plain_text


# -- use -------------------------------------------------------------------------------------------


def test_a_wrong_aad_does_not_decrypt(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = imported_key(client, "aad")
    made = datakey(client, key_id, aad="right")
    assert sdk_error(lambda: decrypt(client, key_id, made.cipher_text, aad="wrong")) == (400, "KMS.2201")
    assert sdk_error(lambda: decrypt(client, key_id, made.cipher_text)) == (400, "KMS.2201")
    assert decrypt(client, key_id, made.cipher_text, aad="right").data_key == made.plain_text


def test_a_disabled_key_cannot_be_used(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = imported_key(client, "disabled")
    made = datakey(client, key_id)
    client.disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key_id)))
    assert sdk_error(lambda: datakey(client, key_id)) == (400, "KMS.0209")
    assert sdk_error(lambda: decrypt(client, key_id, made.cipher_text)) == (400, "KMS.0209")
    assert sdk_error(
        lambda: client.disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key_id)))
    ) == (
        400,
        "KMS.1301",
    )


def test_a_key_pending_deletion_cannot_be_used(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = imported_key(client, "pending-deletion")
    response = signed_post(daemon, "schedule-key-deletion", {"key_id": key_id, "pending_days": "7"})
    assert response.status_code == 200 and response.json()["key_state"] == "4"
    assert sdk_error(lambda: datakey(client, key_id)) == (400, "KMS.0210")
    again = signed_post(daemon, "schedule-key-deletion", {"key_id": key_id, "pending_days": "7"})
    assert error_of(again) == (400, "KMS.1402")
    cancelled = signed_post(daemon, "cancel-key-deletion", {"key_id": key_id})
    assert cancelled.status_code == 200 and cancelled.json()["key_state"] == "3"
    assert error_of(signed_post(daemon, "cancel-key-deletion", {"key_id": key_id})) == (400, "KMS.1501")


@pytest.mark.parametrize("days", ["6", "1097", "x"])
def test_pending_days_outside_7_to_1096_are_refused(daemon: Daemon, days: str) -> None:
    key_id = imported_key(kms_client(daemon), f"days-{days}")
    response = signed_post(daemon, "schedule-key-deletion", {"key_id": key_id, "pending_days": days})
    assert error_of(response) == (400, "KMS.1401")


def test_a_pending_import_key_cannot_be_used(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = external_key(client, "still-pending")
    assert sdk_error(lambda: datakey(client, key_id))[0] == 400


def test_an_unknown_key_is_404(daemon: Daemon) -> None:
    client = kms_client(daemon)
    unknown = "0d0466b0-e727-4d9c-b35d-f84bb474a37f"
    assert sdk_error(
        lambda: client.list_key_detail(ListKeyDetailRequest(body=OperateKeyRequestBody(key_id=unknown)))
    ) == (404, "KMS.0207")
    assert error_of(signed_post(daemon, "describe-key", {"key_id": "not-a-key-id"})) == (400, "KMS.0205")


def test_another_projects_key_is_not_found(daemon: Daemon) -> None:
    key_id = imported_key(kms_client(daemon), "project-a-key")
    other = kms_client(daemon, project=OTHER_PROJECT)
    assert sdk_error(lambda: datakey(other, key_id)) == (404, "KMS.0207")


def test_an_access_key_limited_to_a_project_is_refused_elsewhere(daemon: Daemon) -> None:
    mine = kms_client(daemon, ak=LIMITED_AK, sk=LIMITED_SK)
    key_id = imported_key(mine, "limited-key")
    assert datakey(mine, key_id).key_id == key_id
    elsewhere = kms_client(daemon, ak=LIMITED_AK, sk=LIMITED_SK, project=OTHER_PROJECT)
    assert sdk_error(lambda: external_key(elsewhere, "nope")) == (403, "KMS.0307")


def test_roles_apply_to_access_keys(daemon: Daemon) -> None:
    reader = kms_client(daemon, ak=READER_AK, sk=READER_SK)
    assert sdk_error(lambda: external_key(reader, "reader-may-not")) == (403, "KMS.0307")
    key_id = imported_key(kms_client(daemon), "reader-may-use")
    assert datakey(reader, key_id).key_id == key_id


# -- authentication ----------------------------------------------------------------------------


def test_a_wrong_secret_key_is_401(daemon: Daemon) -> None:
    client = kms_client(daemon, sk="not-the-secret-key")
    assert sdk_error(lambda: external_key(client, "wrong-sk")) == (401, "APIGW.0301")


def test_a_stale_x_sdk_date_is_401(daemon: Daemon) -> None:
    stale = datetime.now(UTC) - timedelta(minutes=20)
    response = signed_post(
        daemon, "describe-key", {"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f"}, when=stale
    )
    assert error_of(response) == (401, "APIGW.0301")


def test_a_body_altered_after_signing_is_401(daemon: Daemon) -> None:
    key_id = imported_key(kms_client(daemon), "altered")
    signed = {"key_id": key_id}
    altered = b'{"key_id": "%s", "x": 1}' % key_id.encode()
    response = signed_post(daemon, "disable-key", signed, sent_body=altered)
    assert error_of(response) == (401, "APIGW.0301")
    assert signed_post(daemon, "describe-key", signed).json()["key_info"]["key_state"] == "2"


def test_no_credentials_at_all_is_401(daemon: Daemon) -> None:
    response = requests.post(f"{daemon.rest_url}/v1.0/{PROJECT}/kms/list-keys", json={}, timeout=30)
    assert error_of(response) == (401, "APIGW.0301")


def test_x_auth_token_is_accepted_through_the_rest_authenticator(daemon: Daemon) -> None:
    url = f"{daemon.rest_url}/v1.0/{PROJECT}/kms/list-keys"
    ok = requests.post(url, json={"limit": "5"}, headers={"X-Auth-Token": DEV_TOKEN}, timeout=30)
    assert ok.status_code == 200 and ok.json()["truncated"] in ("true", "false")
    bad = requests.post(url, json={}, headers={"X-Auth-Token": "not-a-token"}, timeout=30)
    assert error_of(bad)[0] == 401


# -- requests ------------------------------------------------------------------------------------


def test_malformed_bodies_and_fields_get_huawei_codes(daemon: Daemon) -> None:
    url = f"{daemon.rest_url}/v1.0/{PROJECT}/kms/create-key"
    response = signed_post(daemon, "create-key", {"key_alias": "x"}, sent_body=b"{not json")
    assert error_of(response)[0] == 401  # the signature covers the body: refused before parsing
    assert error_of(signed_post(daemon, "create-key", {})) == (400, "KMS.0204")
    assert error_of(signed_post(daemon, "create-key", {"key_alias": "bad alias!"})) == (400, "KMS.1101")
    assert error_of(signed_post(daemon, "create-key", {"key_alias": "rsa", "key_spec": "RSA_2048"})) == (
        400,
        "KMS.0308",
    )
    bad_json = requests.post(url, data=b"[1,", headers={"X-Auth-Token": DEV_TOKEN}, timeout=30)
    assert error_of(bad_json) == (400, "KMS.0202")


def test_an_alias_is_unique_in_a_project(daemon: Daemon) -> None:
    client = kms_client(daemon)
    external_key(client, "unique-alias")
    assert sdk_error(lambda: external_key(client, "unique-alias")) == (400, "KMS.1104")
    external_key(kms_client(daemon, project=OTHER_PROJECT), "unique-alias")  # another tenant


def test_unknown_routes_under_v1_answer_in_huawei_shape(daemon: Daemon) -> None:
    response = requests.post(f"{daemon.rest_url}/v1.0/{PROJECT}/kms/no-such-api", json={}, timeout=30)
    assert error_of(response) == (404, "KMS.0201")
    response = requests.get(f"{daemon.rest_url}/v1.0/{PROJECT}/kms/create-key", timeout=30)
    assert error_of(response)[1] == "KMS.0201"


def test_huawei_projects_and_key_protect_instances_are_separate_tenants(daemon: Daemon) -> None:
    key_id = imported_key(kms_client(daemon), "tenancy")
    kp = {"authorization": f"Bearer {DEV_TOKEN}"}
    named = requests.get(
        f"{daemon.rest_url}/api/v2/keys/{key_id}",
        headers={**kp, "bluemix-instance": f"huawei:{PROJECT}"},
        timeout=30,
    )
    assert named.status_code == 400  # a Key Protect instance is a GUID: huawei:… can never be one
    elsewhere = requests.get(
        f"{daemon.rest_url}/api/v2/keys/{key_id}",
        headers={**kp, "bluemix-instance": "3f2504e0-4f89-41d3-9a0c-0305e82c3301"},
        timeout=30,
    )
    assert elsewhere.status_code == 404 and "resources" in elsewhere.json()
