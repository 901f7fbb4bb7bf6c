"""IBM's official Key Protect Python SDK (``keyprotect`` 3.x, `IbmKeyProtectApiV2`) driven against a
real daemon, unchanged: only ``set_service_url`` points it here and a `BearerTokenAuthenticator`
carries the dev token.

The calls and the way results are consumed follow the SDK's own examples
(``examples/test_ibm_key_protect_api_v2_examples.py``): bodies are ``io.BytesIO`` of JSON, and for
``create_key``, ``create_key_with_policies_overrides`` and ``wrap_key`` the result is a raw
``requests`` response on which the examples call ``.json()`` — the SDK only leaves a body undecoded
when its Content-Type is not ``application/json``, so Key Protect answers those with its vendor
media types and so does hsmbridge.

Restore (30 s after delete) and purge (4 h) are left to the raw-HTTP tests with a FixedClock: the
daemon runs on the system clock and these tests never sleep.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from daemon import DEV_TOKEN, Daemon
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator
from keyprotect import IbmKeyProtectApiV2

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]

INSTANCE = "official-sdk-instance"
KEY_TYPE = "application/vnd.ibm.kms.key+json"
BOB_TOKEN = "bob-dev-token"


@pytest.fixture(scope="module")
def daemon(
    hsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    d = Daemon(
        hsm_token,
        tmp_path_factory.mktemp("kp-client"),
        HSMBRIDGE_DEV_EXTRA_TOKENS=f"{BOB_TOKEN}=IBMid-bob",
    )
    d.start()
    yield d
    if d.proc and d.proc.poll() is None:
        assert d.stop() == 0


def client_for(daemon: Daemon, token: str = DEV_TOKEN) -> IbmKeyProtectApiV2:
    service = IbmKeyProtectApiV2(authenticator=BearerTokenAuthenticator(token))
    service.set_service_url(daemon.rest_url)
    return service


@pytest.fixture
def kp(daemon: Daemon) -> IbmKeyProtectApiV2:
    return client_for(daemon)


def body(data: Any) -> io.BytesIO:
    return io.BytesIO(json.dumps(data).encode("utf-8"))


def key_collection(**resource: Any) -> io.BytesIO:
    return body(
        {
            "metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1},
            "resources": [{"type": KEY_TYPE, **resource}],
        }
    )


def as_json(result: Any) -> dict[str, Any]:
    """A DetailedResponse result: a dict for application/json, a requests.Response otherwise."""
    return result if isinstance(result, dict) else result.json()  # type: ignore[no-any-return]


def create_root_key(kp: IbmKeyProtectApiV2, name: str, **fields: Any) -> dict[str, Any]:
    response = kp.create_key(
        bluemix_instance=INSTANCE,
        key_create_body=key_collection(name=name, extractable=False, **fields),
        prefer="return=representation",
    )
    assert response.get_status_code() == 201
    return response.get_result().json()["resources"][0]  # type: ignore[no-any-return]


def api_error(excinfo: pytest.ExceptionInfo[ApiException]) -> tuple[int, str]:
    exc = excinfo.value
    return exc.status_code, exc.http_response.json()["resources"][0]["reasons"][0]["code"]


def test_create_list_get_and_count(kp: IbmKeyProtectApiV2) -> None:
    # Exactly the SDK example: the created key comes back with the vendor type, read via .json().
    key = create_root_key(kp, "example-created-test-root-key", description="A Key Protect key")
    assert key["state"] == 1
    assert key["extractable"] is False

    listed = kp.get_keys(bluemix_instance=INSTANCE, limit=200, extractable=False, state=[1])
    assert listed.get_status_code() == 200
    assert key["id"] in [k["id"] for k in as_json(listed.get_result())["resources"]]

    got = kp.get_key(id=key["id"], bluemix_instance=INSTANCE)
    assert got.get_status_code() == 200
    assert as_json(got.get_result())["resources"][0]["name"] == "example-created-test-root-key"
    meta = kp.get_key_metadata(id=key["id"], bluemix_instance=INSTANCE)
    assert as_json(meta.get_result())["resources"][0]["id"] == key["id"]

    head = kp.get_key_collection_metadata(bluemix_instance=INSTANCE, state=[0, 1, 2, 3], extractable=False)
    assert head.get_status_code() == 200
    assert int(head.get_headers()["Key-Total"]) >= 1
    assert head.get_result() is None


def test_standard_key_payload(kp: IbmKeyProtectApiV2) -> None:
    secret = os.urandom(40)
    created = kp.create_key(
        bluemix_instance=INSTANCE,
        key_create_body=key_collection(
            name="standard", extractable=True, payload=base64.b64encode(secret).decode()
        ),
    )
    key_id = created.get_result().json()["resources"][0]["id"]
    got = as_json(kp.get_key(id=key_id, bluemix_instance=INSTANCE).get_result())["resources"][0]
    assert base64.b64decode(got["payload"]) == secret


def test_wrap_unwrap_rewrap_rotate_and_versions_with_aad(kp: IbmKeyProtectApiV2) -> None:
    key = create_root_key(kp, "envelope-key")
    aad = ["ibm-sdk", "hsmbridge"]
    wrapped = kp.wrap_key(
        id=key["id"],
        bluemix_instance=INSTANCE,
        key_action_wrap_body=body({"plaintext": "cGxhaW50ZXh0LWRhdGEta2V5", "aad": aad}),
    )
    assert wrapped.get_status_code() == 200
    wrap_data = wrapped.get_result().json()  # as the SDK example does
    ciphertext = wrap_data["ciphertext"]
    assert wrap_data["keyVersion"]["id"] == key["id"]

    unwrapped = kp.unwrap_key(
        id=key["id"],
        bluemix_instance=INSTANCE,
        key_action_unwrap_body=body({"ciphertext": ciphertext, "aad": aad}),
    )
    assert unwrapped.get_status_code() == 200
    assert as_json(unwrapped.get_result())["plaintext"] == "cGxhaW50ZXh0LWRhdGEta2V5"

    with pytest.raises(ApiException) as excinfo:
        kp.unwrap_key(
            id=key["id"], bluemix_instance=INSTANCE, key_action_unwrap_body=body({"ciphertext": ciphertext})
        )
    assert api_error(excinfo) == (422, "UNPROCESSABLE_CIPHERTEXT_ERR")

    generated = as_json(
        kp.wrap_key(id=key["id"], bluemix_instance=INSTANCE, key_action_wrap_body=body({})).get_result()
    )
    assert len(base64.b64decode(generated["plaintext"])) == 32

    rotated = kp.rotate_key(
        id=key["id"],
        bluemix_instance=INSTANCE,
        key_action_rotate_body=body({}),
        prefer="return=representation",
    )
    assert rotated.get_status_code() == 204
    with pytest.raises(ApiException) as excinfo:
        kp.rotate_key(id=key["id"], bluemix_instance=INSTANCE, key_action_rotate_body=body({}))
    assert api_error(excinfo) == (409, "KEY_ROTATION_NOT_PERMITTED")

    versions = as_json(
        kp.get_key_versions(id=key["id"], bluemix_instance=INSTANCE, total_count=True).get_result()
    )
    assert versions["metadata"]["totalCount"] == 2
    latest = versions["resources"][0]["id"]
    assert versions["resources"][1]["id"] == key["id"]

    old = as_json(
        kp.unwrap_key(
            id=key["id"],
            bluemix_instance=INSTANCE,
            key_action_unwrap_body=body({"ciphertext": ciphertext, "aad": aad}),
        ).get_result()
    )
    assert old["keyVersion"]["id"] == key["id"]
    assert old["rewrappedKeyVersion"]["id"] == latest
    assert old["ciphertext"] != ciphertext

    rewrapped = as_json(
        kp.rewrap_key(
            id=key["id"],
            bluemix_instance=INSTANCE,
            key_action_rewrap_body=body({"ciphertext": ciphertext, "aad": aad}),
        ).get_result()
    )
    assert rewrapped["rewrappedKeyVersion"]["id"] == latest
    again = as_json(
        kp.unwrap_key(
            id=key["id"],
            bluemix_instance=INSTANCE,
            key_action_unwrap_body=body({"ciphertext": rewrapped["ciphertext"], "aad": aad}),
        ).get_result()
    )
    assert again["plaintext"] == "cGxhaW50ZXh0LWRhdGEta2V5"
    assert "rewrappedKeyVersion" not in again

    # the deprecated dispatcher
    legacy = kp.action_on_key(
        id=key["id"], bluemix_instance=INSTANCE, action="wrap", key_action_body=body({})
    )
    assert legacy.get_status_code() == 200


def test_aliases_patch_disable_sync_and_errors(kp: IbmKeyProtectApiV2) -> None:
    key = create_root_key(kp, "alias-key")
    alias = kp.create_key_alias(id=key["id"], alias="sdk-alias", bluemix_instance=INSTANCE)
    assert alias.get_status_code() == 201
    assert as_json(alias.get_result())["resources"][0]["keyId"] == key["id"]
    by_alias = as_json(kp.get_key(id="sdk-alias", bluemix_instance=INSTANCE).get_result())
    assert by_alias["resources"][0]["id"] == key["id"]
    deleted_alias = kp.delete_key_alias(id=key["id"], alias="sdk-alias", bluemix_instance=INSTANCE)
    assert deleted_alias.get_status_code() == 204
    assert deleted_alias.get_result() is None

    patched = kp.patch_key(
        id=key["id"], bluemix_instance=INSTANCE, key_patch_body=body({"keyRingID": "default"})
    )
    assert patched.get_status_code() == 200

    assert kp.sync_associated_resources(id=key["id"], bluemix_instance=INSTANCE).get_status_code() == 204
    assert kp.disable_key(id=key["id"], bluemix_instance=INSTANCE).get_status_code() == 204
    with pytest.raises(ApiException) as excinfo:
        kp.enable_key(id=key["id"], bluemix_instance=INSTANCE)  # within 30 s of the disable
    assert api_error(excinfo) == (409, "REQ_TOO_EARLY_ERR")
    with pytest.raises(ApiException) as excinfo:
        kp.get_key(id="no-such-alias", bluemix_instance=INSTANCE)
    assert api_error(excinfo) == (404, "KEY_NOT_FOUND_ERR")
    with pytest.raises(ApiException) as excinfo:
        kp.get_key(id=key["id"], bluemix_instance="another-instance")
    assert excinfo.value.status_code == 404


def test_policy_overrides_dual_authorization_and_delete(kp: IbmKeyProtectApiV2, daemon: Daemon) -> None:
    created = kp.create_key_with_policies_overrides(
        bluemix_instance=INSTANCE,
        key_with_policy_overrides_create_body=key_collection(
            name="policies-test-overriden-key",
            extractable=False,
            dualAuthDelete={"enabled": True},
            rotation={"enabled": True, "interval_month": 6},
        ),
        prefer="return=representation",
    )
    assert created.get_status_code() == 201
    key = created.get_result().json()["resources"][0]
    assert key["rotation"] == {"enabled": True, "interval_month": 6}

    with pytest.raises(ApiException) as excinfo:
        kp.delete_key(id=key["id"], bluemix_instance=INSTANCE)
    assert api_error(excinfo) == (409, "AUTHORIZATIONS_NOT_MET")
    assert kp.set_key_for_deletion(id=key["id"], bluemix_instance=INSTANCE).get_status_code() == 204
    assert kp.unset_key_for_deletion(id=key["id"], bluemix_instance=INSTANCE).get_status_code() == 204
    assert kp.set_key_for_deletion(id=key["id"], bluemix_instance=INSTANCE).get_status_code() == 204

    bob = client_for(daemon, BOB_TOKEN)
    deleted = bob.delete_key(
        id=key["id"], bluemix_instance=INSTANCE, prefer="return=representation", force=False
    )
    assert deleted.get_status_code() == 200
    resource = as_json(deleted.get_result())["resources"][0]
    assert resource["state"] == 5
    assert resource["deletedBy"] == "IBMid-bob"

    plain = create_root_key(kp, "plain-delete")
    response = kp.delete_key(id=plain["id"], bluemix_instance=INSTANCE)
    assert response.get_status_code() == 204
    assert response.get_result() is None
    with pytest.raises(ApiException) as excinfo:
        kp.restore_key(id=plain["id"], bluemix_instance=INSTANCE)  # before the 30 s have passed
    assert api_error(excinfo) == (409, "REQ_TOO_EARLY_ERR")
    with pytest.raises(ApiException) as excinfo:
        kp.purge_key(id=plain["id"], bluemix_instance=INSTANCE)
    assert api_error(excinfo) == (409, "REQ_TOO_EARLY_ERR")


def test_secure_import_through_the_sdk(kp: IbmKeyProtectApiV2) -> None:
    created = kp.post_import_token(bluemix_instance=INSTANCE, expiration=1200, max_allowed_retrievals=1)
    assert created.get_status_code() == 200
    assert as_json(created.get_result())["remainingRetrievals"] == 1
    token = as_json(kp.get_import_token(bluemix_instance=INSTANCE).get_result())
    assert token["remainingRetrievals"] == 0

    public = serialization.load_pem_public_key(base64.b64decode(token["payload"]))
    assert isinstance(public, rsa.RSAPublicKey)
    nonce = base64.b64decode(token["nonce"])
    material = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    iv = os.urandom(12)
    key = create_root_key(
        kp,
        "encrypted-root-key",
        payload=base64.b64encode(public.encrypt(material, oaep)).decode(),
        encryptedNonce=base64.b64encode(AESGCM(material).encrypt(iv, nonce, None)).decode(),
        iv=base64.b64encode(iv).decode(),
        encryptionAlgorithm="RSAES_OAEP_SHA_256",
    )
    assert key["imported"] is True
    wrapped = (
        kp.wrap_key(id=key["id"], bluemix_instance=INSTANCE, key_action_wrap_body=body({}))
        .get_result()
        .json()
    )
    unwrapped = as_json(
        kp.unwrap_key(
            id=key["id"],
            bluemix_instance=INSTANCE,
            key_action_unwrap_body=body({"ciphertext": wrapped["ciphertext"]}),
        ).get_result()
    )
    assert unwrapped["plaintext"] == wrapped["plaintext"]

    with pytest.raises(ApiException) as excinfo:
        kp.get_import_token(bluemix_instance=INSTANCE)  # the one retrieval is spent
    assert api_error(excinfo) == (409, "IMPORT_TOKEN_EXPIRED_ERR")


def test_new_instance_reads_the_exports_hsmbridge_dev_prints(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no ibm-credentials.env lying around
    monkeypatch.setenv("IBM_KEY_PROTECT_API_URL", daemon.rest_url)
    monkeypatch.setenv("IBM_KEY_PROTECT_API_AUTH_TYPE", "bearerToken")
    monkeypatch.setenv("IBM_KEY_PROTECT_API_BEARER_TOKEN", DEV_TOKEN)
    service = IbmKeyProtectApiV2.new_instance()
    assert service.get_keys(bluemix_instance=INSTANCE).get_status_code() == 200
