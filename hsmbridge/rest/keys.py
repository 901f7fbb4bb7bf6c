"""Key Protect API v2: the key resource (E1–E5, E7–E12).

Handlers parse with `rest.bodies`/`rest.collections`/`rest.listing`, call the service layer and
render with `rest.representation`; every failure leaves through `@endpoint` and the one error
table. Choices worth knowing, all taken to match what Key Protect clients observe:

- create and restore always answer 201 *with* the key (the Go SDK indexes ``resources[0]``);
  ``prefer: return=minimal`` trims it to ``{"id"}``, ``return=representation`` adds a standard
  key's ``payload``;
- DELETE and purge answer 204 unless ``prefer: return=representation`` asks for the key (200);
- a 200 always carries a JSON body, a 204 never does;
- key responses to POSTs carry Key Protect's media type ``application/vnd.ibm.kms.key+json``:
  IBM's own Python SDK examples call ``.json()`` on ``create_key`` results, which that SDK only
  leaves undecoded when the type is not ``application/json``. Reads answer ``application/json``;
- ``{id}`` is a key ID or an alias everywhere (`KeyService.get` resolves both, tenant-scoped);
- ``x-kms-key-ring`` on a single-key call names the ring the key is in: a key in another ring is
  not found there (404), exactly like a key of another instance;
- keygen, imports and restore checks touch the HSM for longer, so they run in a worker thread;
  reads stay on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hsmbridge.core import lifecycle, validation
from hsmbridge.core.backend import OaepHash, wipe
from hsmbridge.core.import_tokens import SecureImport
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import DEFAULT_KEY_RING, Key, KeyState, RotationPolicy
from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import KeyQuery
from hsmbridge.errors import Conflict, IntegrityError, InvalidInput, NotFound, Reason
from hsmbridge.rest import headers, listing
from hsmbridge.rest.bodies import (
    b64decode_field,
    coerce_bool,
    coerce_int,
    get_field,
    parse_timestamp_field,
    read_json,
    require_object,
    require_str,
)
from hsmbridge.rest.collections import CollectionType, collection, parse_collection
from hsmbridge.rest.context import call_context, empty, endpoint, json, state
from hsmbridge.rest.errors import Operations, bad_body, invalid_field, missing_field
from hsmbridge.rest.representation import render_key, render_minimal_key, render_version

router = APIRouter(tags=["Keys"])

KEY_MEDIA_TYPE = "application/vnd.ibm.kms.key+json"
#: The store pages; the listing module needs the whole (tenant-scoped) key space at once.
_ALL = 2**31 - 1
_ENCRYPTION_ALGORITHMS: Mapping[str, OaepHash] = {
    "RSAES_OAEP_SHA_256": OaepHash.SHA256,
    "RSAES_OAEP_SHA_1": OaepHash.SHA1,
}
_ID_RULE = (
    "a key ID (a version 4 UUID) or an alias: 2 to 90 alphanumeric characters, '-' or '_', "
    "and not a reserved name"
)


# --- shared by the key, action and alias handlers ---------------------------------------------


def services(request: Request) -> Services:
    return state(request).services


def require_well_formed_id(key_id_or_alias: str) -> None:
    """`{id}` must be able to name a key: a UUID or a syntactically valid alias. Anything else is
    the reference's 400 "malformed, invalid, or missing ID" (``INVALID_PATH_PARAM_ERR`` naming
    ``id``), not a 404: no key can ever have that name."""
    if validation.is_uuid(key_id_or_alias):
        return
    try:
        validation.validate_alias(key_id_or_alias)
    except InvalidInput:
        raise invalid_field("id", _ID_RULE, target_type="path_param") from None


def resolve_key(request: Request, ctx: CallContext, key_id_or_alias: str) -> Key:
    """The key `{id}` names (ID or alias) in the caller's instance, within ``x-kms-key-ring``
    when the header is given: a key in another ring is not found, as in Key Protect."""
    require_well_formed_id(key_id_or_alias)
    key = services(request).keys.get(ctx, key_id_or_alias)
    ring = headers.key_ring(request.headers)
    if ring is not None and ring != key.key_ring:
        raise NotFound("Key does not exist", reason=Reason.KEY_NOT_FOUND)
    return key


def check_key_ring(request: Request, ctx: CallContext, key_id_or_alias: str) -> None:
    """For handlers that go straight to a service: refuse a malformed `{id}`, and enforce
    ``x-kms-key-ring`` only if sent."""
    require_well_formed_id(key_id_or_alias)
    if headers.key_ring(request.headers) is not None:
        resolve_key(request, ctx, key_id_or_alias)


def render(
    request: Request, key: Key, *, payload: bytes | bytearray | None = None, purged: bool = False
) -> dict[str, Any]:
    return render_key(
        key,
        ctx=state(request).render,
        now=services(request).clock.now(),
        include_payload=bytes(payload) if payload is not None else None,
        purged=purged,
    )


def with_check_value(
    request: Request, ctx: CallContext, key: Key, resource: dict[str, Any]
) -> dict[str, Any]:
    """hsmbridge's extra `keyVersion.keyCheckValue` (AES-CMAC KCV, computed in the HSM) on root
    keys: unknown fields are ignored by the official SDKs (the Python SDK's models read known
    keys only, Go's encoding/json skips unknown ones), and it lets operators compare material."""
    if key.is_root and "creationDate" in resource.get("keyVersion", {}):
        version = services(request).keys.version(ctx, key.current_version_id)
        if version is not None:
            resource["keyVersion"]["keyCheckValue"] = services(request).check_values.of(version)
    return resource


def key_response(
    request: Request, resource: Mapping[str, Any], *, status: int = 200, media_type: str | None = None
) -> Response:
    body = collection(CollectionType.KEY, [resource])
    extra = {"content-type": media_type} if media_type else None
    return json(request, body, status, extra_headers=extra)


def parse_material(obj: Mapping[str, Any]) -> tuple[bytearray | None, SecureImport | None]:
    """``payload`` alone is plain material; with ``encryptedNonce``/``iv`` it is a secure import
    (§5): RSA-OAEP ciphertext of the material, plus the token nonce sealed under the material."""
    payload = get_field(obj, "payload")
    nonce = get_field(obj, "encryptedNonce")
    iv = get_field(obj, "iv")
    if nonce is None and iv is None:
        if payload is None:
            return None, None
        return bytearray(b64decode_field(payload, "payload")), None
    if payload is None:
        raise missing_field("payload")
    if nonce is None:
        raise missing_field("encryptedNonce")
    if iv is None:
        raise missing_field("iv")
    algorithm = get_field(obj, "encryptionAlgorithm") or "RSAES_OAEP_SHA_256"
    if algorithm not in _ENCRYPTION_ALGORITHMS:
        raise invalid_field("encryptionAlgorithm", f"one of [{', '.join(_ENCRYPTION_ALGORITHMS)}]")
    return None, SecureImport(
        encrypted_key=b64decode_field(payload, "payload"),
        iv=b64decode_field(iv, "iv"),
        encrypted_nonce=b64decode_field(nonce, "encryptedNonce"),
        oaep_hash=_ENCRYPTION_ALGORITHMS[algorithm],
    )


@contextlib.contextmanager
def import_failures(secure: SecureImport | None) -> Iterator[None]:
    """A secure-import payload the token's private key cannot decrypt is a bad field (400), not
    the 422 of an unopenable wrapped DEK: Key Protect answers create/rotate/restore with 400s."""
    try:
        yield
    except IntegrityError as exc:
        if secure is None or exc.reason is not Reason.INTEGRITY_CHECK_FAILED:
            raise
        raise invalid_field(
            "payload", "key material encrypted with the import token's public key (RSAES-OAEP)"
        ) from None


# --- E1 / E4 create -----------------------------------------------------------------------------


def _aliases(resource: Mapping[str, Any]) -> list[str]:
    aliases = get_field(resource, "aliases")
    if aliases is None:
        return []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise invalid_field("aliases", "an array of strings")
    return aliases


def _overrides(resource: Mapping[str, Any]) -> tuple[bool | None, RotationPolicy | None]:
    """E4's per-key policies: ``dualAuthDelete {enabled}`` and ``rotation {enabled, interval_month}``."""
    dual_auth: bool | None = None
    rotation: RotationPolicy | None = None
    raw_dual = get_field(resource, "dualAuthDelete")
    if raw_dual is not None:
        if not isinstance(raw_dual, dict):
            raise invalid_field("dualAuthDelete", 'an object like {"enabled": true}')
        dual_auth = coerce_bool(get_field(raw_dual, "enabled"), "enabled", default=False)
    raw_rotation = get_field(resource, "rotation")
    if raw_rotation is not None:
        if not isinstance(raw_rotation, dict):
            raise invalid_field("rotation", 'an object like {"enabled": true, "interval_month": 3}')
        enabled = coerce_bool(get_field(raw_rotation, "enabled"), "enabled", default=True)
        interval = get_field(raw_rotation, "interval_month")
        month = None if interval is None else coerce_int(interval, "interval_month", minimum=1, maximum=12)
        if enabled and month is None:
            raise missing_field("interval_month")
        rotation = RotationPolicy(enabled=enabled, interval_month=month)
    return dual_auth, rotation


def _spec(request: Request, body: Any, *, with_overrides: bool) -> KeySpec:
    resource = parse_collection(body, expected_type=CollectionType.KEY)[0]
    name = require_str(resource, "name")
    description = get_field(resource, "description")
    if description is not None and not isinstance(description, str):
        raise invalid_field("description", "a string")
    extractable = coerce_bool(get_field(resource, "extractable"), "extractable", default=False)
    expiration = get_field(resource, "expirationDate")
    payload, secure = parse_material(resource)
    dual_auth, rotation = _overrides(resource) if with_overrides else (None, None)
    return KeySpec(
        name=name,
        extractable=extractable,
        description=description,
        payload=payload,
        secure_import=secure,
        aliases=_aliases(resource),
        expires_at=None if expiration is None else parse_timestamp_field(expiration, "expirationDate"),
        key_ring=headers.key_ring(request.headers) or DEFAULT_KEY_RING,
        dual_auth_delete=dual_auth,
        rotation=rotation,
    )


async def _create(request: Request, *, with_overrides: bool) -> Response:
    ctx = call_context(request)
    spec = _spec(request, await read_json(request), with_overrides=with_overrides)
    svc = services(request)
    try:
        with import_failures(spec.secure_import):
            key = await asyncio.to_thread(svc.keys.create, ctx, spec)
        choice = headers.parse_prefer(headers.get_header(request.headers, headers.PREFER))
        if choice is headers.Prefer.MINIMAL:
            resource = render_minimal_key(key)
        elif choice is headers.Prefer.REPRESENTATION and key.extractable:
            # A standard key's material: the caller's own payload, or the generated secret.
            material = spec.payload if spec.payload is not None else svc.keys.payload(ctx, key)
            resource = render(request, key, payload=material)
            if material is not spec.payload:
                wipe(material)
        else:
            resource = render(request, key)
    finally:
        wipe(spec.payload if isinstance(spec.payload, bytearray) else None)
    return key_response(request, resource, status=201, media_type=KEY_MEDIA_TYPE)


_CREATE_EXAMPLE = {
    "metadata": {"collectionType": KEY_MEDIA_TYPE, "collectionTotal": 1},
    "resources": [
        {"type": KEY_MEDIA_TYPE, "name": "Root-key", "description": "A root key", "extractable": False}
    ],
}


def body_doc(example: Mapping[str, Any], description: str = "") -> dict[str, Any]:
    """OpenAPI for a body the handler reads itself (any Content-Type, parsed as JSON)."""
    return {
        "requestBody": {
            "required": False,
            "description": description or "JSON; the Content-Type header is not required.",
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        }
    }


@router.post(
    "/api/v2/keys",
    summary="Create a key (E1)",
    description="Generate or import (plain or secure) a root or standard key. Answers 201 with the key.",
    status_code=201,
    responses={201: {"content": {KEY_MEDIA_TYPE: {}}}},  # what it answers, not application/json
    openapi_extra=body_doc(_CREATE_EXAMPLE),
)
@endpoint(Operations.CREATE_KEY)
async def create_key(request: Request) -> Response:
    return await _create(request, with_overrides=False)


@router.post(
    "/api/v2/keys_with_policy_overrides",
    summary="Create a key with policy overrides (E4)",
    description="As E1, plus per-key `dualAuthDelete` and `rotation` policies.",
    status_code=201,
    responses={201: {"content": {KEY_MEDIA_TYPE: {}}}},  # what it answers, not application/json
    openapi_extra=body_doc(
        {
            **_CREATE_EXAMPLE,
            "resources": [
                {
                    **_CREATE_EXAMPLE["resources"][0],  # type: ignore[index]
                    "dualAuthDelete": {"enabled": True},
                    "rotation": {"enabled": True, "interval_month": 3},
                }
            ],
        }
    ),
)
@endpoint(Operations.CREATE_KEY_WITH_POLICY_OVERRIDES)
async def create_key_with_policy_overrides(request: Request) -> Response:
    return await _create(request, with_overrides=True)


# --- E2 / E3 list and count -----------------------------------------------------------------------


def _tenant_keys(request: Request, ctx: CallContext, query: listing.ListKeysQuery) -> list[Key]:
    """Every key the header and ``extractable`` admit; states are decided after the lazy expiry."""
    ring = headers.key_ring(request.headers)
    return services(request).keys.list(
        ctx, KeyQuery(key_ring=ring, extractable=query.extractable, limit=_ALL)
    )


@router.head(
    "/api/v2/keys",
    summary="Retrieve the key total (E3)",
    description="200 with the `Key-Total` header and no body; takes `state`, `extractable`, `filter`.",
)
@endpoint(Operations.KEY_TOTAL)
async def key_total(request: Request) -> Response:
    ctx = call_context(request)
    query = listing.parse_list_keys_query(request.query_params, head=True)
    keys = _tenant_keys(request, ctx, query)
    total = listing.list_keys(keys, query, key_ring=headers.key_ring(request.headers)).total
    return empty(request, 200, extra_headers={headers.KEY_TOTAL: str(total)})


@router.get(
    "/api/v2/keys",
    summary="List keys (E2)",
    description="`limit`, `offset`, `state`, `extractable`, `search`, `sort`, `filter`; no material.",
)
@endpoint(Operations.LIST_KEYS)
async def list_keys(request: Request) -> Response:
    ctx = call_context(request)
    query = listing.parse_list_keys_query(request.query_params)
    keys = _tenant_keys(request, ctx, query)
    result = listing.list_keys(keys, query, key_ring=headers.key_ring(request.headers))
    body = collection(
        CollectionType.KEY,
        [render(request, key) for key in result.keys],
        extra_metadata=result.extra_metadata,
    )
    return json(request, body)


# --- E5 / E9 read -----------------------------------------------------------------------------------


@router.get(
    "/api/v2/keys/{id}",
    summary="Retrieve a key (E5)",
    description="By ID or alias. Standard keys include `payload`; root keys never do.",
)
@endpoint(Operations.GET_KEY)
async def get_key(request: Request, id: str) -> Response:
    ctx = call_context(request)
    key = resolve_key(request, ctx, id)
    if key.extractable and key.state is not KeyState.DESTROYED:
        material = services(request).keys.payload(ctx, key)
        try:
            return key_response(request, render(request, key, payload=material))
        finally:
            wipe(material)
    return key_response(request, with_check_value(request, ctx, key, render(request, key)))


@router.get(
    "/api/v2/keys/{id}/metadata",
    summary="Retrieve key metadata (E9)",
    description="As E5, but never with `payload`.",
)
@endpoint(Operations.GET_KEY_METADATA)
async def get_key_metadata(request: Request, id: str) -> Response:
    ctx = call_context(request)
    key = resolve_key(request, ctx, id)
    return key_response(request, with_check_value(request, ctx, key, render(request, key)))


# --- E7 update ----------------------------------------------------------------------------------------


@router.patch(
    "/api/v2/keys/{id}",
    summary="Update a key's key ring (E7)",
    description='Body `{"keyRingID": "<ring>"}`; `x-kms-key-ring`, if sent, is the current ring.',
    openapi_extra=body_doc({"keyRingID": "new-key-ring"}),
)
@endpoint(Operations.PATCH_KEY)
async def patch_key(request: Request, id: str) -> Response:
    ctx = call_context(request)
    body = require_object(await read_json(request))
    ring = get_field(body, "keyRingID")
    if ring is None:
        raise missing_field("keyRingID")
    if not isinstance(ring, str):
        raise invalid_field("keyRingID", "a string matching ^[a-zA-Z0-9-]*$")
    key = resolve_key(request, ctx, id)
    updated = services(request).keys.move_to_key_ring(ctx, key.id, ring)
    return key_response(request, render(request, updated))


# --- E8 / E10 / E11 delete, purge, restore --------------------------------------------------------------


def _force(request: Request) -> bool:
    raw = request.query_params.get("force") or None
    return bool(listing.parse_bool_param(raw, "force"))


def _wants_representation(request: Request) -> bool:
    return headers.wants_representation(headers.get_header(request.headers, headers.PREFER), default=False)


@router.delete(
    "/api/v2/keys/{id}",
    summary="Delete a key (E8)",
    description="204, or 200 with the deleted key for `prefer: return=representation`. Query `force`.",
    status_code=204,
)
@endpoint(Operations.DELETE_KEY)
async def delete_key(request: Request, id: str) -> Response:
    ctx = call_context(request)
    force = _force(request)
    key = resolve_key(request, ctx, id)
    deleted = services(request).keys.delete(ctx, key.id, force=force)
    if _wants_representation(request):
        return key_response(request, render(request, deleted))
    return empty(request)


@router.delete(
    "/api/v2/keys/{id}/purge",
    summary="Purge a deleted key (E10)",
    description="4 h after deletion. 204, or 200 with the key for `prefer: return=representation`.",
    status_code=204,
)
@endpoint(Operations.PURGE_KEY)
async def purge_key(request: Request, id: str) -> Response:
    ctx = call_context(request)
    key = resolve_key(request, ctx, id)
    purged = await asyncio.to_thread(services(request).keys.purge, ctx, key.id)
    if _wants_representation(request):
        return key_response(request, render(request, purged, purged=True))
    return empty(request)


def _restore_material(body: Any) -> tuple[bytearray | None, SecureImport | None]:
    """No body (what current SDKs send), ``{}``, or the legacy collection / object with material."""
    if body is None:
        return None, None
    if not isinstance(body, dict):
        raise bad_body("the body must be a JSON object")
    if get_field(body, "metadata") is not None or get_field(body, "resources") is not None:
        resource = parse_collection(
            body, expected_type=(CollectionType.KEY_ACTION_RESTORE, CollectionType.KEY)
        )[0]
        return parse_material(resource)
    return parse_material(body)


async def restore(request: Request, ctx: CallContext, id: str, body: Any) -> Response:
    """E11, shared with the deprecated ``?action=restore``: 201 with the key (state 1, or 3 if it
    was deactivated before deletion)."""
    payload, secure = _restore_material(body)
    key = resolve_key(request, ctx, id)
    try:
        with import_failures(secure):
            restored = await asyncio.to_thread(
                services(request).keys.restore, ctx, key.id, payload=payload, secure_import=secure
            )
    finally:
        wipe(payload)
    choice = headers.parse_prefer(headers.get_header(request.headers, headers.PREFER))
    resource = render_minimal_key(restored) if choice is headers.Prefer.MINIMAL else render(request, restored)
    return key_response(request, resource, status=201, media_type=KEY_MEDIA_TYPE)


@router.post(
    "/api/v2/keys/{id}/restore",
    summary="Restore a deleted key (E11)",
    description=(
        "No body needed: the material is kept until purge. An imported key may re-supply its "
        "material (plain or secure import); it must be the same material, checked in the HSM."
    ),
    status_code=201,
)
@endpoint(Operations.RESTORE_KEY)
async def restore_key(request: Request, id: str) -> Response:
    ctx = call_context(request)
    return await restore(request, ctx, id, await read_json(request))


# --- E12 versions -----------------------------------------------------------------------------------------


@router.get(
    "/api/v2/keys/{id}/versions",
    summary="List key versions (E12)",
    description="Newest first; `limit`, `offset`, `totalCount`, `allKeyStates`.",
)
@endpoint(Operations.LIST_KEY_VERSIONS)
async def list_key_versions(request: Request, id: str) -> Response:
    ctx = call_context(request)
    query = listing.parse_versions_query(request.query_params)
    key = resolve_key(request, ctx, id)
    if not query.all_key_states:
        lifecycle.require_delete(key)  # 410 for a deleted key
        if key.state is not KeyState.ACTIVE:
            raise Conflict("The key is not in an active state.", reason=Reason.INVALID_STATE)
    versions: Sequence[Any] = services(request).store.list_versions(ctx.tenant, key.id)
    page = listing.paginate(versions, query.limit, query.offset)
    body = collection(
        CollectionType.KEY_VERSION,
        [render_version(version, services(request).check_values.of(version)) for version in page],
        total_count=len(versions) if query.total_count else None,
    )
    return json(request, body)
