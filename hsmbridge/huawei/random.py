"""Huawei KMS v1.0 gen-random: random bytes from the HSM's RNG, hex; the length is in bits."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from hsmbridge.huawei import errors
from hsmbridge.huawei.context import body_doc, int_field, operation, state

router = APIRouter(tags=["Huawei Cloud KMS v1.0"])

MAX_BITS = 8192


@router.post(
    "/v1.0/{project_id}/kms/gen-random",
    summary="Random bytes from the HSM",
    openapi_extra=body_doc({"random_data_length": "512"}),
)
@operation("genRandom")
async def gen_random(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    bits = int_field(body, "random_data_length", minimum=8, maximum=MAX_BITS, code=errors.RANDOM_LENGTH)
    if bits % 8:
        raise errors.invalid("random_data_length", errors.RANDOM_LENGTH)
    data = await asyncio.to_thread(state(request).services.backend.random, bits // 8)
    return {"random_data": data.hex()}
