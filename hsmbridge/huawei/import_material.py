"""Huawei KMS v1.0 bring-your-own-key (seeds 002 and 004): get-parameters-for-import,
import-key-material, delete-imported-key-material.

The wire contract, as the seeds and huaweicloudsdkkms's models give it:
- get-parameters-for-import answers `public_key` (base64 of an RSA-2048 SubjectPublicKeyInfo, DER,
  generated inside the HSM), `import_token` (opaque base64, 200–6144 characters: the binding
  sealed under an HSM-held key, core/external_keys.py) and `expiration_time` (epoch seconds);
- import-key-material takes `encrypted_key_material`, the 256-bit key RSA-encrypted to that public
  key (344–360 base64 characters: 256 bytes of ciphertext), and an optional `expiration_time`
  after which the material is unusable and, 24 h later, deleted.

RSAES_PKCS1_V1_5 is refused unless ``huawei.allow_pkcs1_v15`` is set: PKCS#1 v1.5 decryption is
the classic padding oracle (Bleichenbacher), and OAEP is what Huawei's own tools default to.
"""

from __future__ import annotations

import asyncio
import re
from base64 import b64decode, b64encode
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request

from hsmbridge.core.backend import KeyWrapping
from hsmbridge.huawei import errors
from hsmbridge.huawei.context import (
    body_doc,
    call_context,
    key_id,
    operation,
    optional_str,
    required_str,
    state,
)

router = APIRouter(tags=["Huawei Cloud KMS v1.0"])

WRAPPING = {
    "RSAES_OAEP_SHA_256": KeyWrapping.OAEP_SHA256,
    "RSAES_OAEP_SHA_1": KeyWrapping.OAEP_SHA1,
    "RSAES_PKCS1_V1_5": KeyWrapping.PKCS1_V15,
}
PKCS1_SETTING = "huawei.allow_pkcs1_v15"
_TOKEN = re.compile(r"^[0-9a-zA-Z+/=]{200,6144}$")
_MATERIAL = re.compile(r"^[0-9a-zA-Z+/=]{344,360}$")
#: Beyond this an expiration_time is a mistake (year 2286), not a date.
_MAX_EPOCH = 10_000_000_000


@router.post(
    "/v1.0/{project_id}/kms/get-parameters-for-import",
    summary="Get the wrapping public key and a bound import token (seed 002)",
    openapi_extra=body_doc(
        {"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f", "wrapping_algorithm": "RSAES_OAEP_SHA_256"}
    ),
)
@operation("getParametersForImport")
async def get_parameters_for_import(
    request: Request, project_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    target = key_id(body)
    name = required_str(body, "wrapping_algorithm")
    wrapping = WRAPPING.get(name)
    if wrapping is None:
        raise errors.invalid(
            "wrapping_algorithm",
            message="Invalid wrapping_algorithm: RSAES_OAEP_SHA_256, RSAES_OAEP_SHA_1 or RSAES_PKCS1_V1_5.",
        )
    st = state(request)
    if wrapping is KeyWrapping.PKCS1_V15 and not st.services.external_keys.allow_pkcs1_v15:
        raise errors.invalid(
            "wrapping_algorithm",
            message=(
                "Invalid wrapping_algorithm: RSAES_PKCS1_V1_5 is disabled because PKCS#1 v1.5 decryption "
                f"is open to padding-oracle attacks; use RSAES_OAEP_SHA_256, or set {PKCS1_SETTING} = true."
            ),
        )
    if wrapping is KeyWrapping.OAEP_SHA256 and not st.services.backend.capabilities().oaep_sha256_available:
        raise errors.invalid(
            "wrapping_algorithm",
            message=(
                "Invalid wrapping_algorithm: this HSM cannot decrypt RSA-OAEP with SHA-256; use "
                "RSAES_OAEP_SHA_1, or enable hsm.oaep_sha256_fallback (see docs/hsm.md)."
            ),
        )
    params = await asyncio.to_thread(
        st.services.external_keys.import_parameters, call_context(), target, wrapping
    )
    return {
        "key_id": target,
        "import_token": params.import_token,
        "expiration_time": int(params.expires_at.timestamp()),
        "public_key": b64encode(params.public_key_der).decode(),
    }


@router.post(
    "/v1.0/{project_id}/kms/import-key-material",
    summary="Import key material (seed 004)",
    openapi_extra=body_doc(
        {
            "key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f",
            "import_token": "<from get-parameters-for-import>",
            "encrypted_key_material": "<base64 RSA-OAEP of the 32-byte key>",
            "expiration_time": 1893456000,
        }
    ),
)
@operation("importKeyMaterial")
async def import_key_material(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target = key_id(body)
    token = required_str(body, "import_token")
    if not _TOKEN.fullmatch(token):
        raise errors.invalid("import_token")
    material_b64 = required_str(body, "encrypted_key_material")
    if not _MATERIAL.fullmatch(material_b64):
        raise errors.invalid("encrypted_key_material")
    if optional_str(body, "encrypted_privatekey"):
        raise errors.invalid(
            "encrypted_privatekey",
            message="Invalid encrypted_privatekey: only symmetric (AES_256) keys are supported.",
        )
    try:
        material = b64decode(material_b64, validate=True)
    except ValueError:
        raise errors.invalid("encrypted_key_material") from None
    expires = body.get("expiration_time")
    expires_at = None
    if expires is not None:
        if isinstance(expires, str) and expires.isdigit():
            expires = int(expires)
        if isinstance(expires, bool) or not isinstance(expires, int) or not 0 < expires < _MAX_EPOCH:
            raise errors.invalid("expiration_time")
        expires_at = datetime.fromtimestamp(expires, UTC)
    service = state(request).services.external_keys
    await asyncio.to_thread(
        service.import_material,
        call_context(),
        target,
        import_token=token,
        encrypted_material=material,
        expires_at=expires_at,
    )
    return {}


@router.post(
    "/v1.0/{project_id}/kms/delete-imported-key-material",
    summary="Delete imported key material",
    openapi_extra=body_doc({"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f"}),
)
@operation("deleteImportedKeyMaterial")
async def delete_imported_key_material(
    request: Request, project_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    service = state(request).services.external_keys
    await asyncio.to_thread(service.delete_material, call_context(), key_id(body))
    return {}
