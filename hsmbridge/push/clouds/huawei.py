"""Huawei Cloud KMS with its official SDK (huaweicloudsdkkms, AK/SK signed): create-key with
origin external, get-parameters-for-import, import-key-material (seeds 002 and 004).

Huawei's import key is RSA-2048 (DER public key), its token opaque; RSAES_OAEP_SHA_256 is
preferred and RSAES_OAEP_SHA_1 accepted (PKCS#1 v1.5 is never used: it is a padding oracle
waiting to happen), whichever the HSM does natively first. `valid_to` becomes `expiration_time`
in epoch *seconds* (Huawei has no finer unit: the fraction is dropped, the caller's text is kept
in the record); Huawei deletes the material 24 hours after that time, and the key waits in
state 5 (pending import) for the same material.

The SDK's own retries are off (`retry_times = 0`): the shared policy (clouds/base.py) retries
429, 5xx and connection failures with backoff, for every call (each is idempotent for the same
material, and a create-key that failed with 5xx created nothing Huawei could show). Errors keep
Huawei's own `error_code` (``KMS.XXXX``).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions import exceptions as sdk_errors
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkkms.v2 import (
    CreateKeyRequest,
    CreateKeyRequestBody,
    CreateParametersForImportRequest,
    GetParametersForImportRequestBody,
    ImportKeyMaterialRequest,
    ImportKeyMaterialRequestBody,
    KmsClient,
    ListKeyDetailRequest,
    ListKeysRequest,
    ListKeysRequestBody,
    OperateKeyRequestBody,
)

from hsmbridge.core.backend import ExportWrapping
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

CLOUD = "huawei"
PREFERRED = (ExportWrapping.RSAES_OAEP_SHA_256, ExportWrapping.RSAES_OAEP_SHA_1)
STATES = {
    "1": "PendingActivation",
    "2": "Enabled",
    "3": "Disabled",
    "4": "PendingDeletion",
    "5": "PendingImport",
}
T = TypeVar("T")


class HuaweiKmsClient:
    cloud = CLOUD
    creates_with_material = False
    params_name = "huawei_param"

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        timeout = float(settings.get("timeout") or DEFAULT_TIMEOUT)
        config = HttpConfig.get_default_config()
        config.timeout = (timeout, timeout)
        config.retry_times = 0
        self.region = settings.get("region")
        self._project = str(settings["project_id"])
        self._kms = (
            KmsClient.new_builder()
            .with_http_config(config)
            .with_credentials(
                BasicCredentials(str(settings["access_key"]), secrets["secret_key"], self._project)
            )
            .with_endpoints([str(settings["endpoint"])])
            .build()
        )

    def __repr__(self) -> str:  # never the credentials
        return f"HuaweiKmsClient(project={self._project!r})"

    def _call(self, operation: str, call: Callable[[], T], *, retry: bool = True) -> T:
        def attempt() -> T:
            try:
                return call()
            except sdk_errors.ServiceResponseException as err:
                code = str(err.error_code or f"HTTP_{err.status_code}")
                if err.status_code == 429 or err.status_code >= 500:
                    final = unavailable(CLOUD, operation, code)
                    if retry:
                        raise Retryable(final) from None
                    raise final from None
                raise cloud_error(CLOUD, operation, code, err.status_code) from None
            except sdk_errors.RequestTimeoutException:
                raise Retryable(unavailable(CLOUD, operation, "timeout")) from None
            except sdk_errors.ConnectionException:
                raise Retryable(unavailable(CLOUD, operation, "connection refused")) from None
            except sdk_errors.SdkException as err:
                raise unavailable(CLOUD, operation, type(err).__name__) from None

        return with_retries(attempt)

    def _view(self, info: Any) -> CloudKeyView:
        params = {k: v for k, v in info.to_dict().items() if v is not None}
        state = str(params.get("key_state", ""))
        return CloudKeyView(
            kms_id=str(params["key_id"]),
            state=STATES.get(state, state),
            params=params,
            region=self.region,
            needs_material=state == "5",
        )

    def test(self) -> dict[str, Any]:
        listed = self._call(
            "list-keys", lambda: self._kms.list_keys(ListKeysRequest(body=ListKeysRequestBody(limit="1")))
        )
        return {"project_id": self._project, "keys": int(getattr(listed, "total", 0) or 0)}

    def describe(self, kms_id: str) -> CloudKeyView:
        found = self._call(
            "describe-key",
            lambda: self._kms.list_key_detail(
                ListKeyDetailRequest(body=OperateKeyRequestBody(key_id=kms_id))
            ),
        )
        return self._view(found.key_info)

    def create_key(
        self,
        spec: CloudKeySpec,
        *,
        material: WrappedMaterial | None = None,
        params: ImportParameters | None = None,
        expiry: Expiry | None = None,
    ) -> CloudKeyView:
        body = CreateKeyRequestBody(
            key_alias=spec.alias or spec.name,
            key_spec="AES_256",
            key_usage="ENCRYPT_DECRYPT",
            key_description=spec.description or "",
            origin="external",
        )
        # not retried on 5xx: a create the server half-did could leave a second key behind
        created = self._call(
            "create-key", lambda: self._kms.create_key(CreateKeyRequest(body=body)), retry=False
        )
        return self.describe(str(created.key_info.key_id))

    def import_parameters(
        self, kms_id: str | None, available: Mapping[ExportWrapping, bool]
    ) -> ImportParameters:
        assert kms_id is not None
        wrapping = choose_wrapping(CLOUD, PREFERRED, available)
        body = GetParametersForImportRequestBody(key_id=kms_id, wrapping_algorithm=wrapping.value)
        answer = self._call(
            "get-parameters-for-import",
            lambda: self._kms.create_parameters_for_import(CreateParametersForImportRequest(body=body)),
        )
        try:
            public = base64.b64decode(answer.public_key, validate=True)
        except (TypeError, ValueError):
            raise cloud_error(CLOUD, "get-parameters-for-import", "MALFORMED_PUBLIC_KEY") from None
        return ImportParameters(
            public_key_der=public, wrapping=wrapping, token=str(answer.import_token).encode()
        )

    def import_material(
        self, kms_id: str, params: ImportParameters, material: WrappedMaterial, expiry: Expiry | None
    ) -> CloudKeyView:
        body = ImportKeyMaterialRequestBody(
            key_id=kms_id,
            import_token=params.token.decode(),
            encrypted_key_material=base64.b64encode(material.encrypted_key).decode(),
            expiration_time=int(expiry.at.timestamp()) if expiry is not None else None,
        )
        self._call(
            "import-key-material", lambda: self._kms.import_key_material(ImportKeyMaterialRequest(body=body))
        )
        return self.describe(kms_id)
