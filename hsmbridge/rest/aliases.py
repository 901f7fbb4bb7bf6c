"""Key Protect API v2: key aliases (E37 create, E38 delete).

The alias is a path parameter, so a bad one is ``INVALID_PATH_PARAM_ERR`` naming ``alias`` (the
domain check in `core.validation` is the same rule; it is applied here first only to word the error
as Key Protect does). Creating an alias the key already has answers 200, a new one 201, both with
the alias collection; deleting answers 204 with an empty body, because the Go SDK passes no target
for it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hsmbridge.core import validation
from hsmbridge.errors import InvalidInput
from hsmbridge.rest.context import call_context, empty, endpoint, json
from hsmbridge.rest.errors import Operations, invalid_field
from hsmbridge.rest.keys import resolve_key, services
from hsmbridge.rest.representation import format_timestamp

router = APIRouter(tags=["Aliases"])

ALIAS_COLLECTION_TYPE = "application/vnd.ibm.kms.alias+json"
_ALIAS_RULE = (
    "alphanumeric, and no spaces or special characters other than '-' or '_', and can not be a "
    "version 4 UUID or a reserved name; 2 to 90 characters"
)


def _valid_alias(alias: str) -> str:
    try:
        return validation.validate_alias(alias, target="alias")
    except InvalidInput:
        raise invalid_field("alias", _ALIAS_RULE, target_type="path_param") from None


@router.post(
    "/api/v2/keys/{id}/aliases/{alias}",
    summary="Create a key alias (E37)",
    description="201 for a new alias, 200 if the key already has it. At most 5 aliases per key.",
    status_code=201,
)
@endpoint(Operations.CREATE_ALIAS)
async def create_alias(request: Request, id: str, alias: str) -> Response:
    ctx = call_context(request)
    _valid_alias(alias)
    key = resolve_key(request, ctx, id)
    svc = services(request)
    key, created = svc.keys.add_alias(ctx, key.id, alias)
    resource = {
        "keyId": key.id,
        "alias": alias,
        "createdBy": ctx.actor,
        "creationDate": format_timestamp(svc.clock.now()),
    }
    body = {
        "metadata": {"collectionType": ALIAS_COLLECTION_TYPE, "collectionTotal": 1},
        "resources": [resource],
    }
    return json(request, body, 201 if created else 200)


@router.delete(
    "/api/v2/keys/{id}/aliases/{alias}",
    summary="Delete a key alias (E38)",
    description="204 with an empty body. Deleting an alias never deletes the key.",
    status_code=204,
)
@endpoint(Operations.DELETE_ALIAS)
async def delete_alias(request: Request, id: str, alias: str) -> Response:
    ctx = call_context(request)
    _valid_alias(alias)
    key = resolve_key(request, ctx, id)
    services(request).keys.remove_alias(ctx, key.id, alias)
    return empty(request)
