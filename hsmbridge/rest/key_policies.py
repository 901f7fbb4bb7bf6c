"""Key Protect API v2: key policies (E22 PUT, E23 GET ``/api/v2/keys/{id}/policies``).

Wire decisions, each for a client that exists:
- PUT answers **200 with the policies it set** by default: the Go SDK decodes the body and the
  deprecated ``SetPolicy`` returns ``resources[0]`` as the rotation policy it just sent, so the
  response lists exactly the request's policies, in the request's order. ``prefer:
  return=minimal`` answers 204 with no body.
- A resource names its policy by carrying ``rotation`` or ``dualAuthDelete`` (the Go SDK sends one
  per resource; one resource carrying both is accepted too). ``rotation`` with only
  ``interval_month`` (the Go SDK's form) enables the policy; ``enabled`` may arrive as a JSON
  boolean or as ``"true"``/``"false"``.
- ``?policy=`` (``rotation`` | ``dualAuthDelete``) must match the body: anything else in the body
  is ``BODY_QUERY_PARAM_MISMATCH_ERR``. On GET it filters.
- State errors (non-root, not Active) are 422 ``KEY_INVALID_STATE_ERR`` through
  `Operations.PUT_KEY_POLICIES`; a deleted key is 410 on PUT and still readable on GET.
- ``x-kms-key-ring`` names the key's ring, as on every single-key call (`rest.keys.resolve_key`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hsmbridge.core.policies import (
    DUAL_AUTH_DELETE,
    KEY_POLICY_TYPES,
    ROTATION,
    KeyPolicy,
    KeyPolicyChanges,
    KeyPolicyService,
    RotationChange,
)
from hsmbridge.errors import InvalidInput, Reason
from hsmbridge.rest import headers
from hsmbridge.rest.bodies import coerce_bool, coerce_int, get_field, read_json
from hsmbridge.rest.collections import CollectionType, collection, parse_collection
from hsmbridge.rest.context import call_context, empty, endpoint, json, state
from hsmbridge.rest.errors import Operations, bad_body, invalid_field, invalid_param, with_kp_code
from hsmbridge.rest.keys import resolve_key
from hsmbridge.rest.representation import RenderContext, format_timestamp

router = APIRouter(tags=["Key policies"])

POLICY_MEDIA_TYPE = str(CollectionType.POLICY)
BODY_QUERY_PARAM_MISMATCH = "Data in body does not match data required by query parameter"


def body_query_param_mismatch() -> InvalidInput:
    """``BODY_QUERY_PARAM_MISMATCH_ERR`` (400): ``?policy=`` names one policy, the body another."""
    return with_kp_code(
        InvalidInput(BODY_QUERY_PARAM_MISMATCH, reason=Reason.BAD_BODY), "BODY_QUERY_PARAM_MISMATCH_ERR"
    )


def policy_param(request: Request, allowed: tuple[str, ...]) -> str | None:
    """The ``policy`` query parameter: absent/empty is None; anything not in `allowed` is 400."""
    value = request.query_params.get("policy") or None
    if value is not None and value not in allowed:
        raise invalid_param("policy", "one of [" + ", ".join(sorted(allowed)) + "]")
    return value


def _service(request: Request) -> KeyPolicyService:
    return state(request).services.key_policies


def render_key_policy(policy: KeyPolicy, ctx: RenderContext) -> dict[str, Any]:
    out: dict[str, Any] = {"id": policy.id, "crn": ctx.crn(policy.tenant, "policy", policy.id)}
    if policy.policy_type == ROTATION and policy.rotation is not None:
        rotation: dict[str, Any] = {"enabled": policy.rotation.enabled}
        if policy.rotation.interval_month is not None:
            rotation["interval_month"] = policy.rotation.interval_month
        out["rotation"] = rotation
    else:
        out["dualAuthDelete"] = {"enabled": bool(policy.dual_auth_enabled)}
    out.update(
        {
            "createdBy": policy.created_by,
            "creationDate": format_timestamp(policy.created_at),
            "updatedBy": policy.updated_by,
            "lastUpdateDate": format_timestamp(policy.updated_at),
        }
    )
    return out


def _rotation(value: Any) -> RotationChange:
    if not isinstance(value, dict):
        raise invalid_field("rotation", 'an object like {"enabled": true, "interval_month": 3}')
    enabled = get_field(value, "enabled")
    interval = get_field(value, "interval_month")
    return RotationChange(
        enabled=None if enabled is None else coerce_bool(enabled, "enabled"),
        interval_month=None if interval is None else coerce_int(interval, "interval_month"),
    )


def _dual_auth(value: Any) -> bool:
    if not isinstance(value, dict):
        raise invalid_field("dualAuthDelete", 'an object like {"enabled": true}')
    return coerce_bool(get_field(value, "enabled"), "enabled")


def parse_key_policies(body: Any) -> tuple[KeyPolicyChanges, list[str]]:
    """The E22 body: the changes and the policy types in the order the request gave them."""
    resources = parse_collection(body, max_resources=len(KEY_POLICY_TYPES))
    rotation: RotationChange | None = None
    dual_auth: bool | None = None
    order: list[str] = []
    for resource in resources:
        kind = get_field(resource, "type")
        if kind is not None and kind != POLICY_MEDIA_TYPE:
            raise bad_body(f"the resource type must be {POLICY_MEDIA_TYPE}")
        raw_rotation = get_field(resource, ROTATION)
        raw_dual = get_field(resource, DUAL_AUTH_DELETE)
        if raw_rotation is None and raw_dual is None:
            raise bad_body("each policy resource must contain 'rotation' or 'dualAuthDelete'")
        if raw_rotation is not None:
            if ROTATION in order:
                raise bad_body("the rotation policy is given more than once")
            rotation = _rotation(raw_rotation)
            order.append(ROTATION)
        if raw_dual is not None:
            if DUAL_AUTH_DELETE in order:
                raise bad_body("the dualAuthDelete policy is given more than once")
            dual_auth = _dual_auth(raw_dual)
            order.append(DUAL_AUTH_DELETE)
    return KeyPolicyChanges(rotation=rotation, dual_auth_delete=dual_auth), order


@router.put(
    "/api/v2/keys/{id}/policies",
    summary="Set key policies (E22)",
    description="200 with the policies set (204 for `prefer: return=minimal`). Query `policy`.",
)
@endpoint(Operations.PUT_KEY_POLICIES)
async def put_key_policies(request: Request, id: str) -> Response:
    ctx = call_context(request)
    only = policy_param(request, KEY_POLICY_TYPES)
    changes, order = parse_key_policies(await read_json(request))
    if only is not None and order != [only]:
        raise body_query_param_mismatch()
    key = resolve_key(request, ctx, id)
    policies = await asyncio.to_thread(_service(request).set, ctx, key.id, changes)
    choice = headers.parse_prefer(headers.get_header(request.headers, headers.PREFER))
    if choice is headers.Prefer.MINIMAL:
        return empty(request, 204)
    by_type = {p.policy_type: p for p in policies}
    render = state(request).render
    resources = [render_key_policy(by_type[t], render) for t in order if t in by_type]
    return json(request, collection(CollectionType.POLICY, resources))


@router.get(
    "/api/v2/keys/{id}/policies",
    summary="Retrieve key policies (E23)",
    description="The key's rotation and dualAuthDelete policies. Query `policy` filters.",
)
@endpoint(Operations.GET_KEY_POLICIES)
async def get_key_policies(request: Request, id: str) -> Response:
    ctx = call_context(request)
    only = policy_param(request, KEY_POLICY_TYPES)
    key = resolve_key(request, ctx, id)
    render = state(request).render
    resources = [
        render_key_policy(policy, render)
        for policy in _service(request).policies_of(key)
        if only is None or policy.policy_type == only
    ]
    return json(request, collection(CollectionType.POLICY, resources))
