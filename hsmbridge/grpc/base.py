"""What every servicer holds: the service layer, the authenticator and the security gate."""

from __future__ import annotations

from typing import ClassVar

import grpc

from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.grpc.context import Authenticator, call_context
from hsmbridge.security.authz import Authorizer, AuthzConfig
from hsmbridge.security.gate import SecurityGate


class ServicerBase:
    #: the full gRPC service name, for the IAM action table (`security.authz.rpc_action`)
    SERVICE: ClassVar[str] = ""

    def __init__(
        self, services: Services, authenticator: Authenticator, gate: SecurityGate | None = None
    ) -> None:
        self.services = services
        self.authenticator = authenticator
        self.gate = gate or SecurityGate(Authorizer(AuthzConfig()))

    def ctx(self, context: grpc.aio.ServicerContext) -> CallContext:
        return call_context()
