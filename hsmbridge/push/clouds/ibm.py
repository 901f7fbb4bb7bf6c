"""IBM Key Protect over its HTTP API v2: a root key created (and, after deletion, restored) by
secure import.

Key Protect's secure import (spec §5): create an import token (one per instance; a new one
replaces the old), retrieve it once (base64 of a PEM RSA-4096 public key, and a nonce), then send
the material RSA-OAEP-SHA256-encrypted under that key as `payload`, with the nonce AES-GCM-
encrypted under the material as `encryptedNonce` and its `iv`. Key Protect accepts only
RSAES_OAEP_SHA_256. It cannot import material into an existing active key: the same material
goes in again only to *restore* a deleted imported key, which is what import-material does here.
`expirationDate` can be set only at creation.

Credentials: a static bearer token, or an IBM Cloud API key exchanged for an IAM access token at
`iam_url` (IBM's by default) on first use.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization

from hsmbridge.core.backend import ExportWrapping
from hsmbridge.errors import Conflict, InvalidInput, Reason
from hsmbridge.push.clouds.base import (
    DEFAULT_TIMEOUT,
    CloudKeySpec,
    CloudKeyView,
    Expiry,
    ImportParameters,
    Retryable,
    WrappedMaterial,
    choose_wrapping,
    cloud_error,
    unavailable,
    with_retries,
)

CLOUD = "ibm"
DEFAULT_IAM_URL = "https://iam.cloud.ibm.com/identity/token"
KEY_TYPE = "application/vnd.ibm.kms.key+json"
_STATES = {1: "Active", 2: "Suspended", 3: "Deactivated", 5: "Destroyed"}
_TOKEN_SECONDS = 600


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _collection(resource: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"collectionType": KEY_TYPE, "collectionTotal": 1}, "resources": [resource]}


class KeyProtectClient:
    cloud = CLOUD
    creates_with_material = True
    params_name = "ibm_param"

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        timeout = float(settings.get("timeout") or DEFAULT_TIMEOUT)
        self._url = str(settings["url"])
        self._instance = str(settings["instance_id"])
        self._iam_url = str(settings.get("iam_url") or DEFAULT_IAM_URL)
        self._bearer = secrets.get("bearer_token")
        self._api_key = secrets.get("api_key")
        self._http = httpx.Client(timeout=timeout, follow_redirects=False)

    def __repr__(self) -> str:  # never the credentials
        return f"KeyProtectClient(url={self._url!r}, instance={self._instance!r})"

    # -- HTTP ------------------------------------------------------------------------------------

    def _token(self) -> str:
        if self._bearer is None:
            assert self._api_key is not None
            body = self._send(
                "IAM token",
                "POST",
                self._iam_url,
                data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": self._api_key},
                authorised=False,
                idempotent=True,
            )
            token = body.get("access_token")
            if not isinstance(token, str):
                raise cloud_error(CLOUD, "IAM token", "NO_ACCESS_TOKEN")
            self._bearer = token
        return self._bearer

    def _send(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        authorised: bool = True,
        idempotent: bool,
    ) -> dict[str, Any]:
        headers = {"accept": "application/json"}
        if authorised:
            headers["authorization"] = f"Bearer {self._token()}"
            headers["bluemix-instance"] = self._instance

        def attempt() -> dict[str, Any]:
            try:
                response = self._http.request(method, url, json=json, data=data, headers=headers)
            except httpx.ConnectError:
                raise Retryable(unavailable(CLOUD, operation, "connection refused")) from None
            except httpx.TimeoutException:
                final = unavailable(CLOUD, operation, "timeout")
                if idempotent:
                    raise Retryable(final) from None
                raise final from None
            except httpx.HTTPError as exc:
                raise unavailable(CLOUD, operation, type(exc).__name__) from None
            if response.status_code == 429 or (response.status_code >= 500 and idempotent):
                retry_after = response.headers.get("retry-after")
                delay = float(retry_after) if retry_after and retry_after.isdigit() else None
                raise Retryable(unavailable(CLOUD, operation, f"HTTP {response.status_code}"), delay)
            if response.status_code >= 400:
                raise cloud_error(CLOUD, operation, self._reason(response), response.status_code)
            if not response.content:
                return {}
            try:
                body = response.json()
            except ValueError:
                raise cloud_error(CLOUD, operation, "NOT_JSON", response.status_code) from None
            return body if isinstance(body, dict) else {}

        return with_retries(attempt)

    @staticmethod
    def _reason(response: httpx.Response) -> str:
        """Key Protect's own code: resources[0].reasons[0].code, else the HTTP status."""
        try:
            resource = response.json()["resources"][0]
            reasons = resource.get("reasons") or []
            if reasons and reasons[0].get("code"):
                return str(reasons[0]["code"])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            pass
        return f"HTTP_{response.status_code}"

    def _api(self, path: str) -> str:
        return f"{self._url}/api/v2/{path}"

    @staticmethod
    def _view(resource: Mapping[str, Any]) -> CloudKeyView:
        state = int(resource.get("state", 0))
        return CloudKeyView(
            kms_id=str(resource["id"]),
            state=_STATES.get(state, str(state)),
            params=dict(resource),
            needs_material=state == 5,
        )

    # -- CloudClient -----------------------------------------------------------------------------

    def test(self) -> dict[str, Any]:
        body = self._send("list keys", "GET", self._api("keys?limit=1"), idempotent=True)
        return {"keys": int(body.get("metadata", {}).get("collectionTotal", 0))}

    def describe(self, kms_id: str) -> CloudKeyView:
        body = self._send("get key metadata", "GET", self._api(f"keys/{kms_id}/metadata"), idempotent=True)
        return self._view(body["resources"][0])

    def import_parameters(
        self, kms_id: str | None, available: Mapping[ExportWrapping, bool]
    ) -> ImportParameters:
        wrapping = choose_wrapping(CLOUD, (ExportWrapping.RSAES_OAEP_SHA_256,), available)
        if kms_id is not None:
            view = self.describe(kms_id)
            if not view.needs_material:
                raise Conflict(
                    f"the Key Protect key is {view.state} and holds its material; Key Protect takes the "
                    "same material again only to restore a deleted key",
                    reason=Reason.INVALID_STATE,
                )
        self._send(
            "create import token",
            "POST",
            self._api("import_token"),
            json={"expiration": _TOKEN_SECONDS, "maxAllowedRetrievals": 1},
            idempotent=True,  # a second token simply replaces the first
        )
        token = self._send("retrieve import token", "GET", self._api("import_token"), idempotent=False)
        try:
            pem = base64.b64decode(token["payload"], validate=True)
            public = serialization.load_pem_public_key(pem)
            nonce = base64.b64decode(token["nonce"], validate=True)
        except (KeyError, ValueError, TypeError):
            raise cloud_error(CLOUD, "retrieve import token", "MALFORMED_IMPORT_TOKEN") from None
        der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return ImportParameters(public_key_der=der, wrapping=wrapping, nonce=nonce)

    @staticmethod
    def _material(material: WrappedMaterial) -> dict[str, Any]:
        assert material.encrypted_nonce is not None and material.iv is not None
        return {
            "payload": _b64(material.encrypted_key),
            "encryptedNonce": _b64(material.encrypted_nonce),
            "iv": _b64(material.iv),
            "encryptionAlgorithm": ExportWrapping.RSAES_OAEP_SHA_256.value,
        }

    def create_key(
        self,
        spec: CloudKeySpec,
        *,
        material: WrappedMaterial | None = None,
        params: ImportParameters | None = None,
        expiry: Expiry | None = None,
    ) -> CloudKeyView:
        if material is None:
            raise InvalidInput(
                "Key Protect root keys are created by importing material", reason=Reason.MISSING_FIELD
            )
        resource: dict[str, Any] = {"type": KEY_TYPE, "name": spec.name, "extractable": False}
        if spec.description:
            resource["description"] = spec.description
        if spec.alias:
            resource["aliases"] = [spec.alias]
        if expiry is not None:
            resource["expirationDate"] = expiry.at.strftime("%Y-%m-%dT%H:%M:%SZ")
        resource.update(self._material(material))
        body = self._send(
            "create key", "POST", self._api("keys"), json=_collection(resource), idempotent=False
        )
        return self.describe(str(body["resources"][0]["id"]))  # the metadata view, as a sync shows it

    def import_material(
        self, kms_id: str, params: ImportParameters, material: WrappedMaterial, expiry: Expiry | None
    ) -> CloudKeyView:
        if expiry is not None:
            raise InvalidInput(
                "Key Protect sets expirationDate only when a key is created; restore it without valid_to",
                reason=Reason.INVALID_FIELD,
                target="valid_to",
            )
        self._send(
            "restore key",
            "POST",
            self._api(f"keys/{kms_id}/restore"),
            json=_collection({"type": KEY_TYPE, **self._material(material)}),
            idempotent=False,
        )
        return self.describe(kms_id)
