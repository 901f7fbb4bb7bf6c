"""Huawei KMS key lifecycle with the official SDK against a real daemon on SoftHSM2: create
(origin kms / external, AES_256 only), describe, list (limit, marker, key_state), enable, disable,
update alias and description — states "2" enabled, "3" disabled, "4" pending deletion, "5" pending
import, as Huawei's `KeyDetails` carries them."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from daemon import Daemon
from huawei_support import error_of, kms_client, signed_post
from huaweicloudsdkkms.v2 import (
    CreateKeyRequest,
    CreateKeyRequestBody,
    DisableKeyRequest,
    EnableKeyRequest,
    ListKeyDetailRequest,
    ListKeysRequest,
    ListKeysRequestBody,
    OperateKeyRequestBody,
    UpdateKeyAliasRequest,
    UpdateKeyAliasRequestBody,
    UpdateKeyDescriptionRequest,
    UpdateKeyDescriptionRequestBody,
)

pytestmark = pytest.mark.softhsm

pytest_plugins = ("huawei_fixtures",)
LIST_PROJECT = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e"


def create(client: Any, alias: str, **fields: Any) -> str:
    body = CreateKeyRequestBody(key_alias=alias, **fields)
    return str(client.create_key(CreateKeyRequest(body=body)).key_info.key_id)


def describe(client: Any, key_id: str) -> Any:
    return client.list_key_detail(ListKeyDetailRequest(body=OperateKeyRequestBody(key_id=key_id))).key_info


def test_a_kms_key_is_enabled_at_once_and_described_as_huawei_does(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = create(client, "payments/root", key_description="for payments", key_spec="AES_256")
    info = describe(client, key_id)
    assert (info.key_id, info.key_alias, info.key_description) == (key_id, "payments/root", "for payments")
    assert (info.key_state, info.origin, info.key_spec, info.key_usage) == (
        "2",
        "kms",
        "AES_256",
        "ENCRYPT_DECRYPT",
    )
    assert info.creation_date.isdigit() and info.scheduled_deletion_date == ""


def test_an_external_key_is_pending_import(daemon: Daemon) -> None:
    client = kms_client(daemon)
    info = describe(client, create(client, "byok-pending", origin="external"))
    assert (info.key_state, info.origin) == ("5", "external")


@pytest.mark.parametrize("spec", ["AES_128", "RSA_2048", "EC_P256", "SM4"])
def test_other_key_specs_are_a_clear_400(daemon: Daemon, spec: str) -> None:
    response = signed_post(daemon, "create-key", {"key_alias": f"spec-{spec}", "key_spec": spec})
    status, code = error_of(response)
    assert (status, code) == (400, "KMS.0308") and "AES_256" in response.json()["error"]["error_msg"]


def test_disable_then_enable(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = create(client, "toggle")
    disabled = client.disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key_id))).key_info
    assert (disabled.key_id, disabled.key_state) == (key_id, "3")
    enabled = client.enable_key(EnableKeyRequest(body=OperateKeyRequestBody(key_id=key_id))).key_info
    assert enabled.key_state == "2"
    assert error_of(signed_post(daemon, "enable-key", {"key_id": key_id})) == (400, "KMS.1201")


def test_update_alias_and_description(daemon: Daemon) -> None:
    client = kms_client(daemon)
    key_id = create(client, "old-alias")
    renamed = client.update_key_alias(
        UpdateKeyAliasRequest(body=UpdateKeyAliasRequestBody(key_id=key_id, key_alias="new-alias"))
    ).key_info
    assert (renamed.key_id, renamed.key_alias) == (key_id, "new-alias")
    described = client.update_key_description(
        UpdateKeyDescriptionRequest(
            body=UpdateKeyDescriptionRequestBody(key_id=key_id, key_description="now")
        )
    ).key_info
    assert described.key_description == "now"
    info = describe(client, key_id)
    assert (info.key_alias, info.key_description) == ("new-alias", "now")
    too_long = signed_post(daemon, "update-key-description", {"key_id": key_id, "key_description": "x" * 256})
    assert error_of(too_long) == (400, "KMS.1103")


def test_list_pages_with_limit_and_marker_and_filters_by_state(daemon: Daemon) -> None:
    client = kms_client(daemon, project=LIST_PROJECT)
    made = [create(client, f"list-{i}") for i in range(3)] + [create(client, "list-ext", origin="external")]
    first = client.list_keys(ListKeysRequest(body=ListKeysRequestBody(limit="2")))
    assert (len(first.keys), first.truncated, first.total) == (2, "true", 4)
    rest = client.list_keys(ListKeysRequest(body=ListKeysRequestBody(limit="2", marker=first.next_marker)))
    assert rest.truncated == "false" and sorted(first.keys + rest.keys) == sorted(made)
    pending = client.list_keys(ListKeysRequest(body=ListKeysRequestBody(key_state="5")))
    assert pending.keys == [made[-1]] and pending.key_details[0].key_state == "5"
    assert error_of(signed_post(daemon, "list-keys", {"limit": "0"}, project=LIST_PROJECT)) == (
        400,
        "KMS.1601",
    )
    assert error_of(signed_post(daemon, "list-keys", {"marker": "-1"}, project=LIST_PROJECT)) == (
        400,
        "KMS.1602",
    )


def test_the_openapi_document_has_the_huawei_routes_under_their_own_tag(daemon: Daemon) -> None:
    document = requests.get(f"{daemon.rest_url}/openapi.json", timeout=30).json()
    operation = document["paths"]["/v1.0/{project_id}/kms/import-key-material"]["post"]
    assert operation["tags"] == ["Huawei Cloud KMS v1.0"]
    assert "encrypted_key_material" in operation["requestBody"]["content"]["application/json"]["example"]
    assert {
        tag
        for path in document["paths"]
        if path.startswith("/v1.0/")
        for op in document["paths"][path].values()
        for tag in op["tags"]
    } == {"Huawei Cloud KMS v1.0"}
