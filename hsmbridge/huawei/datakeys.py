"""Huawei KMS v1.0 data keys: create-datakey, create-datakey-without-plaintext, encrypt-datakey,
decrypt-datakey.

Huawei's encoding, from its API reference and the SDK models: data keys and their ciphertexts are
hex strings; encrypt-datakey's `plain_text` is the data key followed by its SHA-256 digest (32 bytes),
hex, with `datakey_plain_length` the key's length in bytes (1–64); decrypt-datakey answers the key
(`data_key`), its length and its SHA-256 (`datakey_dgst`). `additional_authenticated_data` is bound
to the ciphertext (AES-GCM AAD through the envelope service): decrypting with another one fails.

The ciphertext is hsmbridge's envelope (docs/ciphertext-format.md) under the key's version — the same
bytes Key Protect's wrap returns, here hex-encoded — so it survives a delete and reimport of the same
material, whose version keeps its id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from typing import Any

from fastapi import APIRouter, Request

from hsmbridge.core.backend import wipe
from hsmbridge.huawei import errors
from hsmbridge.huawei.context import (
    body_doc,
    int_field,
    key_id,
    operation,
    optional_str,
    required_str,
    usable_key,
)

router = APIRouter(tags=["Huawei Cloud KMS v1.0"])

SPECS = {"AES_256": 256, "AES_128": 128}
MAX_DATAKEY_BYTES = 64
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


def aad_of(body: dict[str, Any]) -> list[str]:
    value = optional_str(body, "additional_authenticated_data")
    return [value] if value else []


def datakey_bits(body: dict[str, Any], code: str) -> int:
    spec = optional_str(body, "key_spec")
    if spec is not None and spec not in SPECS:
        raise errors.invalid("key_spec", message="Invalid key_spec: AES_256 or AES_128.")
    default = SPECS[spec or "AES_256"]
    bits = int_field(
        body, "datakey_length", minimum=8, maximum=8 * MAX_DATAKEY_BYTES, code=code, default=default
    )
    if bits % 8:
        raise errors.invalid("datakey_length", code)
    return bits


def hex_field(body: dict[str, Any], name: str, code: str) -> bytes:
    value = required_str(body, name)
    if not _HEX.fullmatch(value):
        raise errors.invalid(name, code)
    return bytes.fromhex(value)


async def _make(request: Request, body: dict[str, Any], code: str) -> tuple[str, bytearray, bytes]:
    target = key_id(body)
    length = datakey_bits(body, code) // 8
    services, ctx = await usable_key(request, target)
    plaintext = bytearray(await asyncio.to_thread(services.backend.random, length))
    try:
        result = await asyncio.to_thread(services.envelopes.wrap, ctx, target, plaintext, aad_of(body))
    except BaseException:
        wipe(plaintext)
        raise
    return target, plaintext, result.ciphertext


@router.post(
    "/v1.0/{project_id}/kms/create-datakey",
    summary="Create a data key (plaintext and ciphertext)",
    openapi_extra=body_doc(
        {
            "key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f",
            "datakey_length": "256",
            "additional_authenticated_data": "orders",
        }
    ),
)
@operation("createDataKey")
async def create_datakey(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target, plaintext, ciphertext = await _make(request, body, errors.DATAKEY_LENGTH)
    try:
        return {"key_id": target, "plain_text": plaintext.hex(), "cipher_text": ciphertext.hex()}
    finally:
        wipe(plaintext)


@router.post(
    "/v1.0/{project_id}/kms/create-datakey-without-plaintext",
    summary="Create a data key (ciphertext only)",
    openapi_extra=body_doc({"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f", "key_spec": "AES_256"}),
)
@operation("createDataKeyWithoutPlaintext")
async def create_datakey_without_plaintext(
    request: Request, project_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    target, plaintext, ciphertext = await _make(request, body, errors.DATAKEY_LENGTH)
    wipe(plaintext)
    return {"key_id": target, "cipher_text": ciphertext.hex()}


@router.post(
    "/v1.0/{project_id}/kms/encrypt-datakey",
    summary="Encrypt a data key given with its SHA-256",
    openapi_extra=body_doc(
        {
            "key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f",
            "plain_text": "<hex: data key followed by its SHA-256>",
            "datakey_plain_length": "32",
        }
    ),
)
@operation("encryptDataKey")
async def encrypt_datakey(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target = key_id(body)
    length = int_field(
        body, "datakey_plain_length", minimum=1, maximum=MAX_DATAKEY_BYTES, code=errors.PLAIN_LENGTH
    )
    given = bytearray(hex_field(body, "plain_text", errors.INVALID_PLAIN_TEXT))
    try:
        if len(given) != length + 32:
            raise errors.invalid("plain_text", errors.INVALID_PLAIN_TEXT)
        datakey, digest = given[:length], bytes(given[length:])
        if not hmac.compare_digest(hashlib.sha256(datakey).digest(), digest):
            raise errors.invalid(
                "plain_text", errors.DIGEST_MISMATCH, "Hash verification of the data encryption key failed."
            )
        services, ctx = await usable_key(request, target)
        result = await asyncio.to_thread(services.envelopes.wrap, ctx, target, datakey, aad_of(body))
        wipe(datakey)
    finally:
        wipe(given)
    return {"key_id": target, "cipher_text": result.ciphertext.hex(), "datakey_length": str(length)}


@router.post(
    "/v1.0/{project_id}/kms/decrypt-datakey",
    summary="Decrypt a data key",
    openapi_extra=body_doc(
        {
            "key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f",
            "cipher_text": "<hex from create-datakey>",
            "datakey_cipher_length": "32",
        }
    ),
)
@operation("decryptDataKey")
async def decrypt_datakey(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target = key_id(body)
    ciphertext = hex_field(body, "cipher_text", errors.INVALID_CIPHER_TEXT)
    length = int_field(
        body, "datakey_cipher_length", minimum=1, maximum=MAX_DATAKEY_BYTES, code=errors.CIPHER_LENGTH
    )
    services, ctx = await usable_key(request, target)
    result = await asyncio.to_thread(services.envelopes.unwrap, ctx, target, ciphertext, aad_of(body))
    plaintext = result.plaintext
    try:
        if len(plaintext) != length:
            raise errors.invalid("datakey_cipher_length", errors.CIPHER_LENGTH)
        return {
            "data_key": plaintext.hex(),
            "datakey_length": str(length),
            "datakey_dgst": hashlib.sha256(plaintext).hexdigest(),
        }
    finally:
        wipe(plaintext)
