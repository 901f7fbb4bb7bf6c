"""gRPC metadata → the caller: the tenant/principal plumbing every RPC goes through.

Authentication is pluggable (`Authenticator`: anything with `identify_context(context) ->
Identity`): `security.authn.Authenticator` verifies bearer tokens, JWTs and mTLS client
certificates; `security.dev.DevIdentities` is the development one (loopback only). Either way the
RPC then passes the security gate (see `errors.mapped`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import grpc

from hsmbridge.core.principal import CallContext
from hsmbridge.errors import InternalError, InvalidInput, Reason
from hsmbridge.security.gate import current_call
from hsmbridge.security.principals import Identity

TENANT_KEYS = ("x-hsmbridge-tenant", "bluemix-instance")
CORRELATION_KEY = "correlation-id"


class Authenticator(Protocol):
    def identify_context(self, context: grpc.aio.ServicerContext) -> Identity: ...


def DevAuthenticator() -> Authenticator:
    """Development: trusts the caller's `x-hsmbridge-principal` metadata, every right."""
    from hsmbridge.security.dev import DevIdentities

    return DevIdentities()


def metadata_of(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def tenant_of(metadata: Mapping[str, str]) -> str:
    tenant = next((metadata[k] for k in TENANT_KEYS if metadata.get(k)), None)
    if tenant is None:
        raise InvalidInput(
            "every call must name its tenant in the x-hsmbridge-tenant metadata",
            reason=Reason.MISSING_FIELD,
            target="x-hsmbridge-tenant",
        )
    return tenant


def call_context() -> CallContext:
    """The admitted caller of the RPC in progress (set by the gate in `errors.mapped`)."""
    record = current_call()
    if record is None or record.instance is None:
        raise InternalError("RPC ran outside the security gate")
    return CallContext(record.principal, record.instance, record.correlation_id, observer=record.key)
