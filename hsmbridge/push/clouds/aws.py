"""AWS KMS with boto3: CreateKey with Origin EXTERNAL, GetParametersForImport, ImportKeyMaterial.

Wrapping: RSAES_OAEP_SHA_256 is AWS's preferred algorithm, RSAES_OAEP_SHA_1 and
RSA_AES_KEY_WRAP_SHA_256 are accepted too; hsmbridge asks for the first one the HSM does natively
(SoftHSM2 2.6.1: SHA-1 only), and falls back to software only where that is enabled. The
wrapping key is RSA-4096 (AWS's strongest), the material 256-bit (SYMMETRIC_DEFAULT). AWS allows
reimporting the same material only (IncorrectKeyMaterialException otherwise); hsmbridge checks
that itself before calling. `valid_to` becomes ValidTo with KEY_MATERIAL_EXPIRES; AWS deletes the
material at that time and the key goes back to PendingImport until a reimport.

Retries are botocore's "standard" mode (throttling, 5xx and connection errors, 3 attempts,
exponential backoff with jitter); timeouts are explicit. Errors keep AWS's own code.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from hsmbridge.core.backend import ExportWrapping
from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.push.clouds.base import (
    DEFAULT_ATTEMPTS,
    DEFAULT_TIMEOUT,
    CloudKeySpec,
    CloudKeyView,
    Expiry,
    ImportParameters,
    WrappedMaterial,
    choose_wrapping,
    cloud_error,
    unavailable,
)

CLOUD = "aws"
PREFERRED = (
    ExportWrapping.RSAES_OAEP_SHA_256,
    ExportWrapping.RSAES_OAEP_SHA_1,
    ExportWrapping.RSA_AES_KEY_WRAP_SHA_256,
)
_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "AccessDeniedException",
        "ExpiredTokenException",
        "IncompleteSignature",
        "MissingAuthenticationTokenException",
        "InvalidClientTokenId",
    }
)
#: One session for the process: it loads and caches KMS's service model once (a fresh session
#: per client costs about half a second); credentials are given to each client explicitly, so the
#: session's own credential chain (environment, ~/.aws) is never consulted.
_SESSION = boto3.session.Session()
_SESSION_LOCK = threading.Lock()
#: AWS's view keys renamed as the seed's aws_param shows them
_RENAMES = {"KeyId": "KeyID"}


def _params(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in metadata.items():
        if isinstance(value, datetime):
            value = value.isoformat().replace("+00:00", "Z")
        out[_RENAMES.get(name, name)] = value
    return out


class AwsKmsClient:
    cloud = CLOUD
    creates_with_material = False
    params_name = "aws_param"

    def __init__(self, settings: Mapping[str, Any], secrets: Mapping[str, str]) -> None:
        timeout = float(settings.get("timeout") or DEFAULT_TIMEOUT)
        self.region = str(settings["region"])
        with _SESSION_LOCK:  # a boto3 session is not thread-safe; its clients are
            self._kms = _SESSION.client(
                "kms",
                region_name=self.region,
                endpoint_url=settings.get("endpoint") or None,
                aws_access_key_id=str(settings["access_key_id"]),
                aws_secret_access_key=secrets["secret_access_key"],
                aws_session_token=secrets.get("session_token"),
                config=Config(
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    retries={"mode": "standard", "max_attempts": DEFAULT_ATTEMPTS},
                    user_agent_extra="hsmbridge-push",
                ),
            )

    def __repr__(self) -> str:  # never the credentials
        return f"AwsKmsClient(region={self.region!r})"

    def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        try:
            return dict(getattr(self._kms, _snake(operation))(**request))
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code") or "Unknown")
            status = int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status == 429 or status >= 500 or code in ("ThrottlingException", "KMSInternalException"):
                raise unavailable(CLOUD, operation, code) from None
            error = cloud_error(CLOUD, operation, code, 403 if code in _AUTH_CODES else status)
            raise error from None
        except (ConnectTimeoutError, ReadTimeoutError):
            raise unavailable(CLOUD, operation, "timeout") from None
        except EndpointConnectionError:
            raise unavailable(CLOUD, operation, "connection refused") from None
        except BotoCoreError as err:
            raise unavailable(CLOUD, operation, type(err).__name__) from None

    def _view(self, metadata: Mapping[str, Any]) -> CloudKeyView:
        state = str(metadata.get("KeyState", ""))
        return CloudKeyView(
            kms_id=str(metadata["KeyId"]),
            state=state,
            params=_params(metadata),
            region=self.region,
            needs_material=state == "PendingImport",
        )

    def test(self) -> dict[str, Any]:
        """DescribeKey of a key that cannot exist: NotFoundException proves the credentials
        (AWS checks them first) without needing kms:ListKeys."""
        try:
            self._call("DescribeKey", KeyId="00000000-0000-4000-8000-000000000000")
        except Exception as exc:
            if getattr(exc, "metadata", {}).get("cloud_code") != "NotFoundException":
                raise
        return {"region": self.region}

    def describe(self, kms_id: str) -> CloudKeyView:
        return self._view(self._call("DescribeKey", KeyId=kms_id)["KeyMetadata"])

    def create_key(
        self,
        spec: CloudKeySpec,
        *,
        material: WrappedMaterial | None = None,
        params: ImportParameters | None = None,
        expiry: Expiry | None = None,
    ) -> CloudKeyView:
        if spec.alias:
            raise InvalidInput(
                "aliases are not set on AWS keys by hsmbridge yet",
                reason=Reason.INVALID_FIELD,
                target="alias",
            )
        created = self._call(
            "CreateKey",
            Origin="EXTERNAL",
            KeySpec="SYMMETRIC_DEFAULT",
            KeyUsage="ENCRYPT_DECRYPT",
            Description=spec.description or spec.name,
            Tags=[{"TagKey": "hsmbridge-name", "TagValue": spec.name}],
        )
        return self._view(created["KeyMetadata"])

    def import_parameters(
        self, kms_id: str | None, available: Mapping[ExportWrapping, bool]
    ) -> ImportParameters:
        assert kms_id is not None
        wrapping = choose_wrapping(CLOUD, PREFERRED, available)
        answer = self._call(
            "GetParametersForImport",
            KeyId=kms_id,
            WrappingAlgorithm=wrapping.value,
            WrappingKeySpec="RSA_4096",
        )
        return ImportParameters(
            public_key_der=bytes(answer["PublicKey"]), wrapping=wrapping, token=bytes(answer["ImportToken"])
        )

    def import_material(
        self, kms_id: str, params: ImportParameters, material: WrappedMaterial, expiry: Expiry | None
    ) -> CloudKeyView:
        request: dict[str, Any] = {
            "KeyId": kms_id,
            "ImportToken": params.token,
            "EncryptedKeyMaterial": material.encrypted_key,
            "ExpirationModel": "KEY_MATERIAL_EXPIRES" if expiry else "KEY_MATERIAL_DOES_NOT_EXPIRE",
        }
        if expiry is not None:
            request["ValidTo"] = expiry.at
        self._call("ImportKeyMaterial", **request)
        return self.describe(kms_id)


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
