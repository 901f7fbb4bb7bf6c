"""Huawei KMS v1.0 key lifecycle: create, describe, list, enable/disable, scheduled deletion,
alias and description.

Key states are Huawei's strings: "1" to be activated (never produced here), "2" enabled,
"3" disabled, "4" pending deletion, "5" pending import — derived from the core key and its
external-key record (core/external_keys.py), never stored twice. Times are epoch milliseconds as
strings, as Huawei's `KeyDetails` model has them.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request

from hsmbridge.core import external_keys as ext
from hsmbridge.core.external_keys import ExternalKeyView
from hsmbridge.core.model import KeyState
from hsmbridge.errors import HsmBridgeError
from hsmbridge.huawei import errors
from hsmbridge.huawei.context import (
    body_doc,
    call_context,
    int_field,
    key_id,
    operation,
    optional_str,
    required_str,
    state,
)

router = APIRouter(tags=["Huawei Cloud KMS v1.0"])

KEY_SPEC = "AES_256"
KEY_USAGE = "ENCRYPT_DECRYPT"
_ALIAS = re.compile(r"^[a-zA-Z0-9:/_-]{1,255}$")
MAX_DESCRIPTION = 255
MAX_LIST = 1000


def huawei_state(view: ExternalKeyView) -> str:
    if view.pending_deletion:
        return "4"
    if not view.material_usable:
        return "5"
    return "2" if view.key.state is KeyState.ACTIVE else "3"


def _ms(value: Any) -> str:
    return "" if value is None else str(int(value.timestamp() * 1000))


def key_details(view: ExternalKeyView, project_id: str) -> dict[str, str]:
    record = view.record
    return {
        "key_id": view.key.id,
        "domain_id": project_id,
        "key_alias": record.alias,
        "realm": "",
        "key_spec": KEY_SPEC,
        "key_usage": KEY_USAGE,
        "key_description": record.description,
        "creation_date": _ms(record.created_at),
        "scheduled_deletion_date": _ms(record.scheduled_deletion_at),
        "key_state": huawei_state(view),
        "default_key_flag": "0",
        "key_type": "1",
        "expiration_time": _ms(record.material_expires_at if record.material_present else None),
        "origin": record.origin,
        "key_rotation_enabled": "false",
        "sys_enterprise_project_id": "0",
        "keystore_id": "0",
    }


def alias_field(body: dict[str, Any]) -> str:
    alias = required_str(body, "key_alias")
    if not _ALIAS.fullmatch(alias) or alias.endswith("/default"):
        raise errors.invalid("key_alias", errors.INVALID_ALIAS)
    return alias


def description_field(body: dict[str, Any], *, required: bool) -> str:
    value = required_str(body, "key_description") if required else optional_str(body, "key_description")
    value = value or ""
    if len(value) > MAX_DESCRIPTION or not value.isprintable():
        raise errors.invalid("key_description", errors.INVALID_DESCRIPTION)
    return value


@router.post(
    "/v1.0/{project_id}/kms/create-key",
    summary="Create a key (origin kms or external)",
    openapi_extra=body_doc(
        {
            "key_alias": "payments/root",
            "origin": "external",
            "key_spec": "AES_256",
            "key_description": "BYOK root",
        }
    ),
)
@operation("createKey")
async def create_key(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    alias = alias_field(body)
    description = description_field(body, required=False)
    if (optional_str(body, "key_spec") or KEY_SPEC) != KEY_SPEC:
        raise errors.invalid("key_spec", message="Invalid key_spec: only AES_256 keys are supported.")
    if (optional_str(body, "key_usage") or KEY_USAGE) != KEY_USAGE:
        raise errors.invalid("key_usage", message="Invalid key_usage: only ENCRYPT_DECRYPT is supported.")
    origin = optional_str(body, "origin") or ext.ORIGIN_KMS
    if origin not in (ext.ORIGIN_KMS, ext.ORIGIN_EXTERNAL):
        raise errors.invalid("origin", message="Invalid origin: kms or external.")
    keystore = optional_str(body, "keystore_id")
    if keystore not in (None, "", "0"):
        raise errors.invalid("keystore_id", message="Invalid keystore_id: only the default keystore (0).")
    service = state(request).services.external_keys
    view = await asyncio.to_thread(
        service.create, call_context(), alias=alias, description=description, origin=origin
    )
    return {"key_info": {"key_id": view.key.id, "domain_id": project_id, "region_id": ""}}


@router.post(
    "/v1.0/{project_id}/kms/describe-key",
    summary="Describe a key",
    openapi_extra=body_doc({"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f"}),
)
@operation("describeKey")
async def describe_key(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    service = state(request).services.external_keys
    view = await asyncio.to_thread(service.get, call_context(), key_id(body))
    return {"key_info": key_details(view, project_id)}


@router.post(
    "/v1.0/{project_id}/kms/list-keys",
    summary="List keys (limit, marker, key_state)",
    openapi_extra=body_doc({"limit": "10", "marker": "0", "key_state": "2"}),
)
@operation("listKeys")
async def list_keys(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    limit = int_field(body, "limit", minimum=1, maximum=MAX_LIST, code=errors.LIMIT_RANGE, default=MAX_LIST)
    marker = int_field(body, "marker", minimum=0, maximum=10**9, code=errors.MARKER_RANGE, default=0)
    wanted = optional_str(body, "key_state")
    if wanted not in (None, "", "1", "2", "3", "4", "5"):
        raise errors.invalid("key_state")
    if (optional_str(body, "key_spec") or KEY_SPEC) != KEY_SPEC:
        raise errors.invalid("key_spec")
    service = state(request).services.external_keys
    views, _ = await asyncio.to_thread(service.list, call_context(), after=None, limit=100_000)
    matching = [v for v in views if not wanted or huawei_state(v) == wanted]
    page = matching[marker : marker + limit]
    truncated = marker + limit < len(matching)
    return {
        "keys": [v.key.id for v in page],
        "key_details": [key_details(v, project_id) for v in page],
        "next_marker": str(marker + limit) if truncated else "",
        "truncated": "true" if truncated else "false",
        "total": len(matching),
    }


def _status(view: ExternalKeyView) -> dict[str, Any]:
    return {"key_info": {"key_id": view.key.id, "key_state": huawei_state(view)}}


@router.post(
    "/v1.0/{project_id}/kms/enable-key",
    summary="Enable a key",
    openapi_extra=body_doc({"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f"}),
)
@operation("enableKey")
async def enable_key(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    service = state(request).services.external_keys
    return _status(await asyncio.to_thread(service.enable, call_context(), key_id(body)))


@router.post(
    "/v1.0/{project_id}/kms/disable-key",
    summary="Disable a key",
    openapi_extra=body_doc({"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f"}),
)
@operation("disableKey")
async def disable_key(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    service = state(request).services.external_keys
    return _status(await asyncio.to_thread(service.disable, call_context(), key_id(body)))


@router.post(
    "/v1.0/{project_id}/kms/schedule-key-deletion",
    summary="Schedule deletion in 7-1096 days",
    openapi_extra=body_doc({"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f", "pending_days": "7"}),
)
@operation("scheduleKeyDeletion")
async def schedule_key_deletion(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target = key_id(body)
    days = int_field(body, "pending_days", minimum=7, maximum=1096, code=errors.PENDING_DAYS)
    service = state(request).services.external_keys
    try:
        view = await asyncio.to_thread(service.schedule_deletion, call_context(), target, days)
    except HsmBridgeError as exc:
        if exc.metadata.get(ext.CONDITION) == ext.PENDING_DELETION:
            errors.coded(exc, errors.ALREADY_PENDING_DELETION)
        raise
    return {"key_id": view.key.id, "key_state": huawei_state(view)}


@router.post(
    "/v1.0/{project_id}/kms/cancel-key-deletion",
    summary="Cancel a scheduled deletion",
    openapi_extra=body_doc({"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f"}),
)
@operation("cancelKeyDeletion")
async def cancel_key_deletion(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    service = state(request).services.external_keys
    view = await asyncio.to_thread(service.cancel_deletion, call_context(), key_id(body))
    return {"key_id": view.key.id, "key_state": huawei_state(view)}


@router.post(
    "/v1.0/{project_id}/kms/update-key-alias",
    summary="Change a key's alias",
    openapi_extra=body_doc(
        {"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f", "key_alias": "payments/root-2"}
    ),
)
@operation("updateKeyAlias")
async def update_key_alias(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target, alias = key_id(body), alias_field(body)
    service = state(request).services.external_keys
    view = await asyncio.to_thread(service.set_alias, call_context(), target, alias)
    return {"key_info": {"key_id": view.key.id, "key_alias": view.record.alias}}


@router.post(
    "/v1.0/{project_id}/kms/update-key-description",
    summary="Change a key's description",
    openapi_extra=body_doc(
        {"key_id": "0d0466b0-e727-4d9c-b35d-f84bb474a37f", "key_description": "rotated yearly"}
    ),
)
@operation("updateKeyDescription")
async def update_key_description(request: Request, project_id: str, body: dict[str, Any]) -> dict[str, Any]:
    target, description = key_id(body), description_field(body, required=True)
    service = state(request).services.external_keys
    view = await asyncio.to_thread(service.set_description, call_context(), target, description)
    return {"key_info": {"key_id": view.key.id, "key_description": view.record.description}}
