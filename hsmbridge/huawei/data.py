"""Huawei KMS v1.0 small-data encryption: encrypt-data and decrypt-data (up to 4096 bytes).

`cipher_text` is base64 of hsmbridge's envelope under the key's version; since a Huawei key's
version id is its key id, decrypt-data finds the key from the ciphertext alone, as Huawei's does
(`key_id` is optional there). Only SYMMETRIC_DEFAULT (AES-256-GCM) is offered.
"""

from __future__ import annotations

import asyncio
from base64 import b64decode, b64encode
from binascii import Error as BinasciiError
from typing import Any

from fastapi import APIRouter, Request

from hsmbridge.core.backend import wipe
from hsmbridge.core.envelope import Envelope
from hsmbridge.errors import IntegrityError
from hsmbridge.huawei import errors
from hsmbridge.huawei.context import (
    KEY_ID,
    body_doc,
    key_id,
    operation,
    optional_str,
    required_str,
    usable_key,
)
from hsmbridge.huawei.datakeys import aad_of

router = APIRouter(tags=["Huawei Cloud KMS v1.0"])

MAX_PLAIN_TEXT = 4096
ALGORITHM = "SYMMETRIC_DEFAULT"


def _algorithm(body: dict[str, Any]) -> None:
    if (optional_str(body, "encryption_algorithm") or ALGORITHM) != ALGORITHM:
        raise errors.invalid(
            "encryption_algorithm", message="Invalid encryption_algorithm: SYMMETRIC_DEFAULT only."
        )


@router.post(
    "/v1.0/{project_id}/kms/encrypt-data",
    summary="Encrypt up to 4096 bytes",
    openapi_extra=body_doc({"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f", "plain_text": "hello"}),
)
@operation("encryptData")
async def encrypt_data(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target = key_id(body)
    _algorithm(body)
    plain = required_str(body, "plain_text").encode()
    if len(plain) > MAX_PLAIN_TEXT:
        raise errors.invalid("plain_text", errors.INVALID_PLAIN_TEXT)
    services, ctx = await usable_key(request, target)
    result = await asyncio.to_thread(services.envelopes.wrap, ctx, target, plain, aad_of(body))
    return {"key_id": target, "cipher_text": b64encode(result.ciphertext).decode()}


@router.post(
    "/v1.0/{project_id}/kms/decrypt-data",
    summary="Decrypt what encrypt-data returned",
    openapi_extra=body_doc({"cipher_text": "<base64 from encrypt-data>"}),
)
@operation("decryptData")
async def decrypt_data(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    _algorithm(body)
    try:
        ciphertext = b64decode(required_str(body, "cipher_text"), validate=True)
        envelope = Envelope.parse(ciphertext)
    except (BinasciiError, ValueError, IntegrityError):
        raise errors.invalid("cipher_text", errors.INVALID_CIPHER_TEXT) from None
    target = key_id(body) if body.get("key_id") else envelope.key_version_id
    if not KEY_ID.fullmatch(target) or target != envelope.key_version_id:
        raise errors.invalid("cipher_text", errors.INVALID_CIPHER_TEXT)
    services, ctx = await usable_key(request, target)
    result = await asyncio.to_thread(services.envelopes.unwrap, ctx, target, ciphertext, aad_of(body))
    plaintext = result.plaintext
    try:
        text = bytes(plaintext).decode("utf-8", errors="replace")
        return {"key_id": target, "plain_text": text, "plain_text_base64": b64encode(plaintext).decode()}
    finally:
        wipe(plaintext)
