"""gRPC metadata → `CallContext`: the tenant/principal plumbing every RPC goes through.

Authentication is pluggable (`Authenticator`): the development authenticator below trusts the
caller's `x-hsmbridge-principal` metadata and is only wired on loopback dev servers; the security
layer replaces it with token/JWT/mTLS verification without touching a servicer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import grpc

from hsmbridge.core.principal import ANONYMOUS_DEV_PRINCIPAL, CallContext, Principal
from hsmbridge.errors import InvalidInput, Reason

TENANT_KEYS = ("x-hsmbridge-tenant", "bluemix-instance")
PRINCIPAL_KEY = "x-hsmbridge-principal"
CORRELATION_KEY = "correlation-id"


class Authenticator(Protocol):
    def authenticate(self, metadata: Mapping[str, str], peer: str) -> Principal: ...


class DevAuthenticator:
    """Trusts the caller. Only for development servers bound to loopback."""

    def authenticate(self, metadata: Mapping[str, str], peer: str) -> Principal:
        return Principal(metadata.get(PRINCIPAL_KEY) or ANONYMOUS_DEV_PRINCIPAL)


def call_context(context: grpc.aio.ServicerContext, authenticator: Authenticator) -> CallContext:
    metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
    principal = authenticator.authenticate(metadata, context.peer())
    tenant = next((metadata[k] for k in TENANT_KEYS if metadata.get(k)), None)
    if tenant is None:
        raise InvalidInput(
            "every call must name its tenant in the x-hsmbridge-tenant metadata",
            reason=Reason.MISSING_FIELD,
            target="x-hsmbridge-tenant",
        )
    return CallContext(principal, tenant, metadata.get(CORRELATION_KEY))
