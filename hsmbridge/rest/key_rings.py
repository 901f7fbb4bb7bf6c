"""Key Protect API v2: key rings (E39 list, E40 create, E41 delete).

Wire rules the Go SDK depends on (spec §8.2): create and delete pass a nil response target, so
they answer 201/204 with **no body** — a JSON body on a 201 would make ``CreateKeyRing`` fail.
Create answers 204 when the ring already exists (E40: "The key ring already exists. No
content."). The list carries no dates for ``default`` (it was never created by anyone).

``force`` is read from the query (current SDKs: ``?force=true``) and, for the SDK releases that
sent ``DeleteKeyRingOptions`` as the request body, from a ``{"Force": true}`` body too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hsmbridge.core.key_rings import KeyRingService, refuse_default, validate_ring_id
from hsmbridge.core.store.base import KeyRing
from hsmbridge.errors import InvalidInput
from hsmbridge.rest import listing
from hsmbridge.rest.bodies import coerce_bool, get_field, read_json
from hsmbridge.rest.collections import CollectionType, collection
from hsmbridge.rest.context import call_context, empty, endpoint, json, state
from hsmbridge.rest.errors import TARGET_TYPE, Operations
from hsmbridge.rest.representation import format_timestamp

router = APIRouter(tags=["Key rings"])


def _service(request: Request) -> KeyRingService:
    return state(request).services.key_rings


def _path_ring_id(ring_id: str, verb: str) -> str:
    """Validate the ``{key-ring-id}`` path parameter: ``INVALID_PATH_PARAM_ERR`` on failure."""
    try:
        validate_ring_id(ring_id)
        refuse_default(ring_id, verb)
    except InvalidInput as exc:
        exc.metadata[TARGET_TYPE] = "path_param"
        raise
    return ring_id


def render_key_ring(ring: KeyRing) -> dict[str, Any]:
    """``{"id"}`` plus ``creationDate``/``createdBy`` when known (never for ``default``)."""
    out: dict[str, Any] = {"id": ring.id}
    if ring.created_by is not None:
        if ring.created_at is not None:
            out["creationDate"] = format_timestamp(ring.created_at)
        out["createdBy"] = ring.created_by
    return out


@router.get(
    "/api/v2/key_rings",
    summary="List key rings (E39)",
    description="`default` first. Query `limit` (0 means 100), `offset`, `totalCount`.",
)
@endpoint(Operations.LIST_KEY_RINGS)
async def list_key_rings(request: Request) -> Response:
    ctx = call_context(request)
    query = listing.parse_key_rings_query(request.query_params)
    page = _service(request).list(ctx, limit=query.limit, offset=query.offset)
    body = collection(
        CollectionType.KEY_RING,
        [render_key_ring(ring) for ring in page.rings],
        total_count=page.total if query.total_count else None,
    )
    return json(request, body)


@router.post(
    "/api/v2/key_rings/{ring_id}",
    summary="Create a key ring (E40)",
    description="201 when created, 204 when it already exists; never a body.",
    status_code=201,
)
@endpoint(Operations.CREATE_KEY_RING)
async def create_key_ring(request: Request, ring_id: str) -> Response:
    ctx = call_context(request)
    created = _service(request).create(ctx, _path_ring_id(ring_id, "created"))
    return empty(request, 201 if created else 204)


@router.delete(
    "/api/v2/key_rings/{ring_id}",
    summary="Delete a key ring (E41)",
    description="204. Query `force`: deleted keys move to `default`.",
    status_code=204,
)
@endpoint(Operations.DELETE_KEY_RING)
async def delete_key_ring(request: Request, ring_id: str) -> Response:
    ctx = call_context(request)
    ring_id = _path_ring_id(ring_id, "deleted")
    force = listing.parse_bool_param(request.query_params.get("force") or None, "force")
    if force is None:
        body = await read_json(request)
        if isinstance(body, dict):
            force = coerce_bool(get_field(body, "force"), "force", default=False)
    _service(request).delete(ctx, ring_id, force=bool(force))
    return empty(request, 204)
