"""Key Protect API v2: registrations (E29–E35) — cloud resources a key protects, modelled.

Routes, all tenant-scoped through ``bluemix-instance``:
- E35 ``GET /api/v2/keys/registrations`` (this router is mounted before the key routes, so it
  wins over ``GET /api/v2/keys/{id}``); ``x-kms-key-ring`` filters by the keys' ring;
- E34 ``GET /api/v2/keys/{id}/registrations``; E33 ``POST …/registrations?action=deactivate``;
- E29–E32 ``POST/PATCH/PUT/DELETE …/registrations/{urlEncodedResourceCRN}``. The CRN arrives
  URL-encoded and its account segment holds a ``/`` (``a%2f<account>``), which the server has
  already decoded by routing time, so the route captures the rest of the path. A CRN that is
  still encoded (a client that encoded twice) is decoded once more.

Bodies: the documented one is a collection (``registration_input+json``) of one resource, but
E30's own example is a bare object (``{"preventKeyDeletion": "false"}``), so both shapes are
accepted, with ``preventKeyDeletion`` as a JSON boolean or a ``"true"``/``"false"`` string.
Statuses: create 201 (200 when an identical registration exists), PATCH/PUT 200, DELETE and
deactivate 204 unless ``prefer: return=representation`` (200 with the resource).
CRN errors are ``INVALID_PARAM_ERR`` naming ``urlEncodedResourceCRN`` or
``urlEncodedResourceCRNQuery``; E33's body error is ``INVALID_FIELD_ERR`` with the ``param``
target the API reference shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hsmbridge.core.registrations import (
    PATH_PARAM,
    QUERY_PARAM,
    CrnPattern,
    RegistrationPatch,
    RegistrationService,
    validate_resource_crn,
)
from hsmbridge.core.store.base import Registration
from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.rest import headers, listing
from hsmbridge.rest.bodies import coerce_bool, get_field, has_field, read_json
from hsmbridge.rest.collections import CollectionType, collection, parse_collection
from hsmbridge.rest.context import call_context, empty, endpoint, json, state
from hsmbridge.rest.errors import (
    TARGET_TYPE,
    Operations,
    bad_body,
    invalid_field,
    invalid_param,
    with_kp_code,
)
from hsmbridge.rest.keys import resolve_key
from hsmbridge.rest.representation import format_timestamp

router = APIRouter(tags=["Registrations"])


def _service(request: Request) -> RegistrationService:
    return state(request).services.registrations


@contextlib.contextmanager
def crn_params() -> Iterator[None]:
    """CRN validation errors from the core name a query/path parameter: ``INVALID_PARAM_ERR``."""
    try:
        yield
    except InvalidInput as exc:
        if exc.target in (PATH_PARAM, QUERY_PARAM) and exc.reason is Reason.INVALID_FIELD:
            exc.metadata[TARGET_TYPE] = "param"
        raise


def decode_crn(value: str) -> str:
    """A CRN from the path or query, already percent-decoded once by the server."""
    if ":" not in value and "%" in value:
        return unquote(value)
    return value


def render_registration(registration: Registration) -> dict[str, Any]:
    out: dict[str, Any] = {
        "keyId": registration.key_id,
        "resourceCrn": registration.resource_crn,
        "createdBy": registration.created_by,
        "creationDate": format_timestamp(registration.created_at),
        "updatedBy": registration.updated_by,
        "lastUpdated": format_timestamp(registration.updated_at),
    }
    if registration.description is not None:
        out["description"] = registration.description
    out["preventKeyDeletion"] = registration.prevent_key_deletion
    out["keyVersion"] = {
        "id": registration.key_version_id,
        "creationDate": format_timestamp(registration.key_version_created_at),
    }
    if registration.registration_metadata is not None:
        out["registrationMetadata"] = registration.registration_metadata
    return out


def _response(request: Request, registration: Registration, status: int = 200) -> Response:
    body = collection(CollectionType.REGISTRATION, [render_registration(registration)])
    return json(request, body, status)


def _wants_representation(request: Request) -> bool:
    return headers.wants_representation(headers.get_header(request.headers, headers.PREFER), default=False)


# --- bodies -------------------------------------------------------------------------------------


def registration_fields(body: Any) -> dict[str, Any]:
    """The one registration resource of a body: a collection's first resource, or a bare object."""
    if body is None:
        return {}
    if isinstance(body, dict) and (has_field(body, "resources") or has_field(body, "metadata")):
        return parse_collection(body)[0]
    if not isinstance(body, dict):
        raise bad_body("the body must be a JSON object")
    return body


def _optional_str(fields: dict[str, Any], name: str) -> str | None:
    value = get_field(fields, name)
    if value is not None and not isinstance(value, str):
        raise invalid_field(name, "a string")
    return value


def _prevent(fields: dict[str, Any]) -> bool | None:
    value = get_field(fields, "preventKeyDeletion")
    return None if value is None else coerce_bool(value, "preventKeyDeletion")


# --- E35 / E34 lists ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ListQuery:
    pattern: CrnPattern | None
    prevent_key_deletion: bool | None
    limit: int
    offset: int
    total_count: bool


def _list_query(request: Request) -> _ListQuery:
    """E34/E35 query parameters, all validated before any data is read."""
    query = request.query_params
    raw = query.get(QUERY_PARAM) or None
    with crn_params():
        pattern = None if raw is None else CrnPattern.parse(decode_crn(raw))
    return _ListQuery(
        pattern=pattern,
        prevent_key_deletion=listing.parse_bool_param(
            query.get("preventKeyDeletion") or None, "preventKeyDeletion"
        ),
        limit=listing.parse_int_param(
            query.get("limit") or None,
            "limit",
            default=listing.DEFAULT_LIMIT,
            minimum=1,
            maximum=listing.MAX_LIMIT,
        ),
        offset=listing.parse_int_param(query.get("offset") or None, "offset", default=0, minimum=0),
        total_count=bool(listing.parse_bool_param(query.get("totalCount") or None, "totalCount")),
    )


def _list_response(request: Request, query: _ListQuery, found: list[Registration]) -> Response:
    page = listing.paginate(found, query.limit, query.offset)
    body = collection(
        CollectionType.REGISTRATION,
        [render_registration(r) for r in page],
        total_count=len(found) if query.total_count else None,
    )
    return json(request, body)


@router.get(
    "/api/v2/keys/registrations",
    summary="List registrations for any key (E35)",
    description="Query `urlEncodedResourceCRNQuery`, `preventKeyDeletion`, `limit`, `offset`, `totalCount`.",
)
@endpoint(Operations.LIST_REGISTRATIONS)
async def list_any_key_registrations(request: Request) -> Response:
    ctx = call_context(request)
    query = _list_query(request)
    found = _service(request).list_all(
        ctx,
        pattern=query.pattern,
        prevent_key_deletion=query.prevent_key_deletion,
        key_ring=headers.key_ring(request.headers),
    )
    return _list_response(request, query, found)


@router.get(
    "/api/v2/keys/{id}/registrations",
    summary="List a key's registrations (E34)",
    description="Query `urlEncodedResourceCRNQuery`, `preventKeyDeletion`, `limit`, `offset`, `totalCount`.",
)
@endpoint(Operations.LIST_REGISTRATIONS)
async def list_key_registrations(request: Request, id: str) -> Response:
    ctx = call_context(request)
    query = _list_query(request)
    key = resolve_key(request, ctx, id)
    found = _service(request).list_for_key(
        ctx, key, pattern=query.pattern, prevent_key_deletion=query.prevent_key_deletion
    )
    return _list_response(request, query, found)


# --- E33 deactivate (deprecated) ----------------------------------------------------------------


def _deactivate_crn_error(expectation: str) -> InvalidInput:
    exc = InvalidInput(
        f"The field 'resourceCrn' must be: {expectation}", reason=Reason.INVALID_FIELD, target=QUERY_PARAM
    )
    exc.metadata[TARGET_TYPE] = "param"
    return with_kp_code(exc, "INVALID_FIELD_ERR")


@router.post(
    "/api/v2/keys/{id}/registrations",
    summary="Deactivate a registration (E33, deprecated)",
    description="Query `action=deactivate`; body: a `crn+json` collection of one `resourceCrn`.",
)
@endpoint(Operations.DEACTIVATE_REGISTRATION)
async def deactivate_registration(request: Request, id: str) -> Response:
    ctx = call_context(request)
    if request.query_params.get("action") != "deactivate":
        raise invalid_param("action", "one of [deactivate]")
    resource = parse_collection(await read_json(request))[0]
    crn = get_field(resource, "resourceCrn")
    if not isinstance(crn, str) or not crn:
        raise _deactivate_crn_error("a CRN")
    try:
        validate_resource_crn(crn, param=QUERY_PARAM)
    except InvalidInput as exc:
        raise _deactivate_crn_error(exc.message.split("must be: ", 1)[-1]) from None
    key = resolve_key(request, ctx, id)
    registration = _service(request).deactivate(ctx, key, crn)
    if _wants_representation(request):
        body = collection(CollectionType.RESOURCE_CRN, [{"resourceCrn": registration.resource_crn}])
        return json(request, body)
    return empty(request, 204)


# --- E29–E32 one registration -------------------------------------------------------------------

_ONE = "/api/v2/keys/{id}/registrations/{crn:path}"


@router.post(_ONE, summary="Create a registration (E29)", description="201, or 200 if identical.")
@endpoint(Operations.CREATE_REGISTRATION)
async def create_registration(request: Request, id: str, crn: str) -> Response:
    ctx = call_context(request)
    crn = decode_crn(crn)
    with crn_params():
        validate_resource_crn(crn)
    fields = registration_fields(await read_json(request))
    prevent = _prevent(fields)
    description = _optional_str(fields, "description")
    metadata = _optional_str(fields, "registrationMetadata")
    key = resolve_key(request, ctx, id)
    registration, created = _service(request).create(
        ctx,
        key,
        crn,
        prevent_key_deletion=bool(prevent),
        description=description,
        registration_metadata=metadata,
    )
    return _response(request, registration, 201 if created else 200)


@router.patch(_ONE, summary="Update a registration (E30)", description="Only the given properties.")
@endpoint(Operations.UPDATE_REGISTRATION)
async def update_registration(request: Request, id: str, crn: str) -> Response:
    ctx = call_context(request)
    crn = decode_crn(crn)
    with crn_params():
        validate_resource_crn(crn)
    fields = registration_fields(await read_json(request))
    patch = RegistrationPatch(
        prevent_key_deletion=_prevent(fields),
        description=_optional_str(fields, "description"),
        registration_metadata=_optional_str(fields, "registrationMetadata"),
    )
    key = resolve_key(request, ctx, id)
    return _response(request, _service(request).update(ctx, key, crn, patch))


@router.put(_ONE, summary="Replace a registration (E31)", description="Body may add `keyVersionId`.")
@endpoint(Operations.REPLACE_REGISTRATION)
async def replace_registration(request: Request, id: str, crn: str) -> Response:
    ctx = call_context(request)
    crn = decode_crn(crn)
    with crn_params():
        validate_resource_crn(crn)
    fields = registration_fields(await read_json(request))
    prevent = _prevent(fields)
    description = _optional_str(fields, "description")
    metadata = _optional_str(fields, "registrationMetadata")
    version = _optional_str(fields, "keyVersionId")
    key = resolve_key(request, ctx, id)
    registration = _service(request).replace(
        ctx,
        key,
        crn,
        prevent_key_deletion=bool(prevent),
        description=description,
        registration_metadata=metadata,
        key_version_id=version,
    )
    return _response(request, registration)


@router.delete(_ONE, summary="Delete a registration (E32)", description="204, or 200 with `prefer`.")
@endpoint(Operations.DELETE_REGISTRATION)
async def delete_registration(request: Request, id: str, crn: str) -> Response:
    ctx = call_context(request)
    crn = decode_crn(crn)
    with crn_params():
        validate_resource_crn(crn)
    key = resolve_key(request, ctx, id)
    registration = _service(request).delete(ctx, key, crn)
    if _wants_representation(request):
        return _response(request, registration)
    return empty(request, 204)
