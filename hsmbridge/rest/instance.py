"""Key Protect API v2: instance policies (E24 PUT, E25 GET) and the allowed-IP port (E26).

E24 is the one Key Protect body parsed strictly: its documented errors include unknown JSON
fields (``BAD_BODY_ERR`` ``json: unknown field "extra_field"``), so every level of a resource —
the resource, ``policy_data``, ``attributes`` — accepts only its known names (matched
case-insensitively, as Go's decoder does). The read-only fields GET returns (``createdBy``,
``creationDate``, ``updatedBy``, ``lastUpdated``) are known and ignored, so a client may PUT back
what it read. Other rules:
- with ``?policy=X``: exactly one resource (``NUM_COLLECTION_RESOURCE_ERR``) and its
  ``policy_type`` must be X (``BODY_QUERY_PARAM_MISMATCH_ERR``); without it, several policies
  may be set at once (the Go SDK's ``SetInstancePolicies``), each type at most once;
- every policy is validated before any is stored; success is 204 with no body;
- GET answers ``lastUpdated`` (not ``lastUpdateDate`` as key policies do) and filters by
  ``?policy=``; a type never set is simply absent;
- E26 answers ``{"private_endpoint_port": <port>}`` while an enabled allowedIP policy exists and
  an empty ``resources`` otherwise (the Go SDK turns the latter into its own error).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from hsmbridge.core.policies import (
    INSTANCE_POLICY_ATTRIBUTES,
    INSTANCE_POLICY_TYPES,
    InstancePolicyService,
    InstancePolicySetting,
)
from hsmbridge.core.store.base import InstancePolicy
from hsmbridge.rest.bodies import coerce_bool, coerce_int, read_json
from hsmbridge.rest.collections import (
    CollectionType,
    collection,
    num_collection_resource,
    parse_collection,
)
from hsmbridge.rest.context import call_context, empty, endpoint, json, state
from hsmbridge.rest.errors import Operations, bad_body, invalid_field, missing_field
from hsmbridge.rest.key_policies import body_query_param_mismatch, policy_param
from hsmbridge.rest.representation import format_timestamp

router = APIRouter(tags=["Instance policies"])

_RESOURCE_FIELDS = ("policy_type", "policy_data")
_READ_ONLY_FIELDS = ("createdBy", "creationDate", "updatedBy", "lastUpdated")
_POLICY_DATA_FIELDS = ("enabled", "attributes")
_BOOLEAN_ATTRIBUTES = frozenset(
    {"create_root_key", "create_standard_key", "import_root_key", "import_standard_key", "enforce_token"}
)


def _service(request: Request) -> InstancePolicyService:
    return state(request).services.instance_policies


def _canonical_names(obj: Mapping[str, Any], known: Iterable[str]) -> dict[str, Any]:
    """`obj` with its keys mapped to the known spellings; an unknown or doubled key is BAD_BODY."""
    by_fold = {name.casefold(): name for name in known}
    out: dict[str, Any] = {}
    for name, value in obj.items():
        canonical = by_fold.get(name.casefold()) if isinstance(name, str) else None
        if canonical is None:
            raise bad_body(f'json: unknown field "{name}"')
        if canonical in out:
            raise bad_body(f"the field '{canonical}' is given more than once")
        out[canonical] = value
    return out


def _attributes(policy_type: str, raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise invalid_field("attributes", "an object")
    attributes = _canonical_names(raw, INSTANCE_POLICY_ATTRIBUTES[policy_type])
    for name, value in attributes.items():
        if name in _BOOLEAN_ATTRIBUTES:
            attributes[name] = coerce_bool(value, name)
        elif name == "interval_month":
            attributes[name] = coerce_int(value, name)
        elif name == "allowed_network" and not isinstance(value, str):
            raise invalid_field(name, "one of public-and-private, private-only")
        elif name == "allowed_ip" and not (
            isinstance(value, list) and all(isinstance(entry, str) for entry in value)
        ):
            raise invalid_field(name, "a list of subnets in CIDR notation")
    return attributes


def parse_instance_policy(resource: Mapping[str, Any], only: str | None) -> InstancePolicySetting:
    fields = _canonical_names(resource, _RESOURCE_FIELDS + _READ_ONLY_FIELDS)
    policy_type = fields.get("policy_type")
    if policy_type is None:
        raise missing_field("policy_type")
    if policy_type not in INSTANCE_POLICY_TYPES:
        raise invalid_field("policy_type", "one of [" + ", ".join(INSTANCE_POLICY_TYPES) + "]")
    if only is not None and policy_type != only:
        raise body_query_param_mismatch()
    raw_data = fields.get("policy_data")
    if raw_data is None:
        raise missing_field("policy_data")
    if not isinstance(raw_data, dict):
        raise invalid_field("policy_data", 'an object like {"enabled": true}')
    data = _canonical_names(raw_data, _POLICY_DATA_FIELDS)
    return InstancePolicySetting(
        policy_type=policy_type,
        enabled=coerce_bool(data.get("enabled"), "enabled"),
        attributes=_attributes(policy_type, data.get("attributes")),
    )


def render_instance_policy(policy: InstancePolicy) -> dict[str, Any]:
    data: dict[str, Any] = {"enabled": bool(policy.data.get("enabled"))}
    if policy.data.get("attributes"):
        data["attributes"] = dict(policy.data["attributes"])
    return {
        "policy_type": policy.policy_type,
        "policy_data": data,
        "createdBy": policy.created_by,
        "creationDate": format_timestamp(policy.created_at),
        "updatedBy": policy.updated_by,
        "lastUpdated": format_timestamp(policy.updated_at),
    }


@router.put(
    "/api/v2/instance/policies",
    summary="Set instance policies (E24)",
    description="204. Query `policy` selects one policy; without it several may be set at once.",
    status_code=204,
)
@endpoint(Operations.PUT_INSTANCE_POLICIES)
async def put_instance_policies(request: Request) -> Response:
    ctx = call_context(request)
    only = policy_param(request, INSTANCE_POLICY_TYPES)
    body = await read_json(request)
    if only is not None:
        resources = parse_collection(body, too_many=num_collection_resource)
    else:
        resources = parse_collection(
            body,
            max_resources=len(INSTANCE_POLICY_TYPES),
            too_many=lambda: bad_body("each policy type may be given once"),
        )
    settings = [parse_instance_policy(resource, only) for resource in resources]
    seen: set[str] = set()
    for setting in settings:
        if setting.policy_type in seen:
            raise bad_body(f"the policy '{setting.policy_type}' is given more than once")
        seen.add(setting.policy_type)
    _service(request).put(ctx, settings)
    return empty(request, 204)


@router.get(
    "/api/v2/instance/policies",
    summary="Retrieve instance policies (E25)",
    description="Every policy set on the instance; query `policy` selects one.",
)
@endpoint(Operations.GET_INSTANCE_POLICIES)
async def get_instance_policies(request: Request) -> Response:
    ctx = call_context(request)
    only = policy_param(request, INSTANCE_POLICY_TYPES)
    policies = _service(request).policies(ctx, only)
    return json(request, collection(CollectionType.POLICY, [render_instance_policy(p) for p in policies]))


@router.get(
    "/api/v2/instance/allowed_ip_port",
    summary="Retrieve the allowed-IP private endpoint port (E26)",
    description="The port while an allowedIP policy is enabled; otherwise no resources.",
)
@endpoint(Operations.GET_ALLOWED_IP_PORT)
async def get_allowed_ip_port(request: Request) -> Response:
    ctx = call_context(request)
    port = _service(request).allowed_ip_port(ctx)
    resources = [] if port is None else [{"private_endpoint_port": port}]
    return json(request, collection(CollectionType.ALLOWED_IP_METADATA, resources))
