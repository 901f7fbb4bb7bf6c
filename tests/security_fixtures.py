"""Fixtures for the security tests over the wire; a test module loads them with

    pytest_plugins = ("security_fixtures",)

and imports callers and helpers from `security_support`. All module-scoped (one stack per test
module; keys are reused within a module where a test allows it):

- `stack`: services over SoftHSM2 + the production authenticator + gate + `MemorySink` audit;
- `rest`: a Starlette `TestClient` over `create_app(..., gate=stack.gate)`;
- `grpc_server` / `stubs`: the real `build_server` on 127.0.0.1:0 and synchronous stubs.

A module changes the stack by overriding `security_limits` (rate limits), `security_authenticator`
(JWT, mTLS) or `grpc_credentials` (TLS) with a fixture of the same name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from security_support import (
    RENDER,
    GrpcServer,
    Stack,
    Stubs,
    make_stack,
    release_hsm_objects,
    static_authenticator,
)
from services import close_services

from hsmbridge.rest.app import create_app
from hsmbridge.security.authz import ActionClass
from hsmbridge.security.ratelimit import BucketConfig


@pytest.fixture(scope="module")
def security_limits() -> Mapping[ActionClass, BucketConfig] | None:
    """Rate limits of the module's stack: none unless a module overrides this fixture."""
    return None


@pytest.fixture(scope="module")
def security_authenticator() -> Any:
    return static_authenticator()


@pytest.fixture(scope="module")
def stack(
    hsm_backend: Any,
    security_limits: Mapping[ActionClass, BucketConfig] | None,
    security_authenticator: Any,
) -> Iterator[Stack]:
    s = make_stack(hsm_backend, authenticator=security_authenticator, limits=security_limits)
    yield s
    release_hsm_objects(s)
    close_services(s.services)


@pytest.fixture(scope="module")
def rest(stack: Stack) -> Iterator[TestClient]:
    app = create_app(stack.services, stack.authenticator, RENDER, gate=stack.gate)
    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="module")
def grpc_credentials() -> grpc.ServerCredentials | None:
    """Server credentials of the module's gRPC server: plaintext unless overridden."""
    return None


@pytest.fixture(scope="module")
def grpc_server(stack: Stack, grpc_credentials: grpc.ServerCredentials | None) -> Iterator[GrpcServer]:
    server = GrpcServer(stack, grpc_credentials)
    yield server
    server.close()


@pytest.fixture(scope="module")
def stubs(grpc_server: GrpcServer) -> Iterator[Stubs]:
    """Stubs over one plaintext channel to the module's server."""
    channel = grpc_server.channel()
    yield Stubs(channel)
    channel.close()
