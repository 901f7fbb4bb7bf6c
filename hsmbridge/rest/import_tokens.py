"""Key Protect API v2: import tokens (E27 create, E28 retrieve).

One token per instance; a new one replaces the old (and its RSA key pair in the HSM). Creating a
token generates an RSA-4096 key pair inside the HSM, which takes long enough to belong in a worker
thread. Both calls answer 200 with a plain JSON object (no collection envelope), as Key Protect's
do; only the retrieval shows the public key (base64 of a PEM document) and the nonce, and each
retrieval spends one of ``maxAllowedRetrievals``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hsmbridge.core import import_tokens as tokens
from hsmbridge.rest.bodies import coerce_int, get_field, read_json, require_object
from hsmbridge.rest.context import call_context, endpoint, json, state
from hsmbridge.rest.errors import Operations
from hsmbridge.rest.keys import body_doc
from hsmbridge.rest.representation import render_import_token

router = APIRouter(tags=["Import tokens"])


@router.post(
    "/api/v2/import_token",
    summary="Create an import token (E27)",
    description=(
        "`expiration` 300–86400 s (default 600), `maxAllowedRetrievals` 1–500 (default 1). "
        "Replaces the instance's previous token."
    ),
    openapi_extra=body_doc({"expiration": 1200, "maxAllowedRetrievals": 1}),
)
@endpoint(Operations.CREATE_IMPORT_TOKEN)
async def create_import_token(request: Request) -> Response:
    ctx = call_context(request)
    body = require_object(await read_json(request), required=False)
    expiration = coerce_int(
        get_field(body, "expiration"),
        "expiration",
        minimum=tokens.MIN_EXPIRATION,
        maximum=tokens.MAX_EXPIRATION,
        default=tokens.DEFAULT_EXPIRATION,
    )
    retrievals = coerce_int(
        get_field(body, "maxAllowedRetrievals"),
        "maxAllowedRetrievals",
        minimum=1,
        maximum=tokens.MAX_RETRIEVALS,
        default=1,
    )
    service = state(request).services.import_tokens
    token = await asyncio.to_thread(
        service.create, ctx, expiration_seconds=expiration, max_retrievals=retrievals
    )
    return json(request, render_import_token(token, with_secret=False))


@router.get(
    "/api/v2/import_token",
    summary="Retrieve the import token (E28)",
    description="Metadata plus `payload` (base64 of the PEM public key) and `nonce`; spends one retrieval.",
)
@endpoint(Operations.GET_IMPORT_TOKEN)
async def get_import_token(request: Request) -> Response:
    ctx = call_context(request)
    token = state(request).services.import_tokens.retrieve(ctx)
    return json(request, render_import_token(token, with_secret=True))
