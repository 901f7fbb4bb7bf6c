"""What every servicer holds: the service layer and the authenticator."""

from __future__ import annotations

import grpc

from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services
from hsmbridge.grpc.context import Authenticator, call_context


class ServicerBase:
    def __init__(self, services: Services, authenticator: Authenticator) -> None:
        self.services = services
        self.authenticator = authenticator

    def ctx(self, context: grpc.aio.ServicerContext) -> CallContext:
        return call_context(context, self.authenticator)
