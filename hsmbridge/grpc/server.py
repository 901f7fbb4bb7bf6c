"""Assemble the gRPC server: the four services, standard health checking and reflection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from hsmbridge.core.services import Services
from hsmbridge.grpc.context import Authenticator
from hsmbridge.grpc.crypto import BatchCryptoServicer
from hsmbridge.grpc.gateway import RestGatewayServicer
from hsmbridge.grpc.hsm_info import HsmServicer
from hsmbridge.grpc.import_tokens import ImportTokenServicer
from hsmbridge.grpc.keys import KeyServicer
from hsmbridge.grpc.limits import MESSAGE_SIZE_OPTIONS
from hsmbridge.grpc.malformed import MalformedMessageInterceptor
from hsmbridge.push import grpc as push_grpc
from hsmbridge.security.gate import SecurityGate
from hsmbridge.v1 import (
    crypto_pb2,
    crypto_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    hsm_pb2,
    hsm_pb2_grpc,
    import_tokens_pb2,
    import_tokens_pb2_grpc,
    keys_pb2,
    keys_pb2_grpc,
)

SERVICE_NAMES = (
    keys_pb2.DESCRIPTOR.services_by_name["KeyService"].full_name,
    crypto_pb2.DESCRIPTOR.services_by_name["CryptoService"].full_name,
    import_tokens_pb2.DESCRIPTOR.services_by_name["ImportTokenService"].full_name,
    hsm_pb2.DESCRIPTOR.services_by_name["HsmService"].full_name,
)


def build_server(
    services: Services,
    authenticator: Authenticator,
    rest_app: Any = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    gate: SecurityGate | None = None,
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """`rest_app`: the Key Protect facade, also reachable through `RestGateway` for a standalone
    REST server (hsmbridge.rest.gateway_proxy) in front of this daemon; its requests are
    authenticated and audited inside the facade. `gate`: the process's security gate, shared
    with REST (one rate limiter and one audit log per process)."""
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 1), *MESSAGE_SIZE_OPTIONS],
        # innermost, so the metrics interceptor sees the INVALID_ARGUMENT it answers
        interceptors=[*interceptors, MalformedMessageInterceptor()],
    )
    names = list(SERVICE_NAMES)
    if rest_app is not None:
        gateway_pb2_grpc.add_RestGatewayServicer_to_server(RestGatewayServicer(rest_app), server)
        names.append(gateway_pb2.DESCRIPTOR.services_by_name["RestGateway"].full_name)
    keys_pb2_grpc.add_KeyServiceServicer_to_server(KeyServicer(services, authenticator, gate), server)
    crypto_pb2_grpc.add_CryptoServiceServicer_to_server(
        BatchCryptoServicer(services, authenticator, gate), server
    )
    import_tokens_pb2_grpc.add_ImportTokenServiceServicer_to_server(
        ImportTokenServicer(services, authenticator, gate), server
    )
    hsm_pb2_grpc.add_HsmServiceServicer_to_server(HsmServicer(services, authenticator, gate), server)
    names.append(push_grpc.register(server, services, authenticator, gate))  # hsmbridge/push/
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    return server, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", *SERVICE_NAMES):
        await health_servicer.set(name, status)
