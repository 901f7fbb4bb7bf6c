"""What every Huawei route needs: the gate around the work, the body, and one way to answer.

`operation("createKey")` wraps a handler ``async def h(request, project_id, body) -> dict`` so that:
the body is read once (the signature covers its exact bytes), the caller is authenticated
(AK/SK or X-Auth-Token, huawei/auth.py) and admitted by the ONE security gate for the instance
``huawei:{project_id}`` with the action ``kms:createKey`` (roles, rate limit, one audit event named
``huawei.kms.createKey``), the body is parsed as a JSON object, and whatever is raised becomes
Huawei's error body (huawei/errors.py). Handlers never build error bodies; a Key Protect body is
never produced on these routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.errors import InternalError, InvalidInput, Reason
from hsmbridge.huawei import errors
from hsmbridge.huawei.auth import HuaweiAuthenticator, tenant_for, valid_project
from hsmbridge.security.aksk import SignedRequest
from hsmbridge.security.gate import SecurityGate, current_call

log = logging.getLogger(__name__)

PREFIX = "/v1.0/"
MAX_BODY = 64 * 1024
KEY_ID = re.compile(r"^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$")
_SEQUENCE = re.compile(r"^[0-9a-z-]{1,36}$")


@dataclass
class HuaweiState:
    services: Services
    authenticator: HuaweiAuthenticator
    gate: SecurityGate


def state(request: Request) -> HuaweiState:
    return request.app.state.huawei  # type: ignore[no-any-return]


def call_context() -> CallContext:
    record = current_call()
    if record is None or record.instance is None:
        raise InternalError("Huawei handler ran outside the security gate")
    return CallContext(record.principal, record.instance, record.correlation_id, observer=record.key)


async def usable_key(request: Request, key_id: str) -> tuple[Services, CallContext]:
    """The services and caller for a crypto call on `key_id`, once the key is known usable now
    (enabled, material present and unexpired, not pending deletion)."""
    services = state(request).services
    ctx = call_context()
    await asyncio.to_thread(services.external_keys.for_use, ctx, key_id)
    return services, ctx


def error_response(exc: BaseException) -> Response:
    error = errors.to_huawei_error(exc)
    if error.status >= 500:
        log.error("Huawei KMS request failed: %s", type(exc).__name__)
    return JSONResponse(error.body, status_code=error.status)


def _parse(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.coded(
            InvalidInput("The JSON format of the request message is invalid.", reason=Reason.BAD_BODY),
            errors.INVALID_JSON,
        ) from None
    if not isinstance(body, dict):
        raise errors.coded(
            InvalidInput("The JSON format of the request message is invalid.", reason=Reason.BAD_BODY),
            errors.INVALID_JSON,
        )
    sequence = body.get("sequence")
    if sequence is not None and (not isinstance(sequence, str) or not _SEQUENCE.fullmatch(sequence)):
        raise errors.invalid("sequence", errors.INVALID_SEQUENCE)
    return body


Handler = Callable[[Request, str, dict[str, Any]], Awaitable[dict[str, Any] | None]]


def operation(name: str) -> Callable[[Handler], Callable[..., Awaitable[Response]]]:
    """Run the handler as Huawei's KMS action `name` (``kms:{name}`` in security/authz.py)."""

    def decorate(handler: Handler) -> Callable[..., Awaitable[Response]]:
        # Not functools.wraps: FastAPI would read the handler's signature through __wrapped__ and
        # take `body` for a request-body model; the route's parameters are exactly these two.
        async def run(request: Request, project_id: str) -> Response:
            try:
                st = state(request)
                raw = await request.body()
                if len(raw) > MAX_BODY:
                    raise errors.coded(
                        InvalidInput("The request message length has exceeded the upper limit."),
                        errors.TOO_LONG,
                    )
                signed = SignedRequest(
                    request.method,
                    request.scope["path"],
                    request.scope.get("query_string", b"").decode("latin-1"),
                    dict(request.headers),
                    raw,
                )

                def instance() -> str:
                    if not valid_project(project_id):
                        raise errors.coded(InvalidInput("Invalid request URL."), errors.INVALID_URL)
                    return tenant_for(project_id)

                client = f"{request.client.host}:{request.client.port}" if request.client else None
                with st.gate.call(
                    st.gate.authorizer.action(f"kms:{name}"),
                    lambda: st.authenticator.identify(signed, project_id),
                    instance,
                    transport="rest",
                    client=client,
                    correlation_id=request.headers.get("x-request-id"),
                ):
                    result = await handler(request, project_id, _parse(raw))
                return JSONResponse(result if result is not None else {}, status_code=200)
            except Exception as exc:
                return error_response(exc)

        run.__name__ = run.__qualname__ = handler.__name__
        run.__doc__ = handler.__doc__
        return run

    return decorate


def body_doc(example: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI for the JSON body the handler reads itself (the signature covers its raw bytes)."""
    return {
        "requestBody": {
            "required": True,
            "description": "JSON, signed with AK/SK (SDK-HMAC-SHA256) or sent with X-Auth-Token.",
            "content": {"application/json": {"schema": {"type": "object"}, "example": example}},
        }
    }


# -- field helpers: Huawei's models are strings almost everywhere ------------------------------


def required_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None or value == "":
        raise errors.missing(name)
    if not isinstance(value, str):
        raise errors.invalid(name)
    return value


def optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise errors.invalid(name)
    return value


def key_id(body: dict[str, Any]) -> str:
    value = required_str(body, "key_id")
    if not KEY_ID.fullmatch(value):
        raise errors.invalid("key_id", errors.INVALID_KEY_ID)
    return value


def int_field(
    body: dict[str, Any], name: str, *, minimum: int, maximum: int, code: str, default: int | None = None
) -> int:
    """Huawei sends numbers as strings ("512") in most models; both spellings are accepted."""
    value = body.get(name)
    if value is None or value == "":
        if default is None:
            raise errors.missing(name)
        return default
    if isinstance(value, bool):
        raise errors.invalid(name, code)
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,10}", value):
        value = int(value)
    if not isinstance(value, int) or not minimum <= value <= maximum:
        raise errors.invalid(name, code)
    return value
