"""Fixtures for the service-layer tests; a test module loads them with

    pytest_plugins = ("services_fixtures",)

`services` is parametrised over the software `FakeBackend` and the real session-wide SoftHSM2
backend, so every rule is checked against both: the fake keeps the rules fast to iterate on, the
real token proves the HSM does what the fake pretends.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import FakeBackend
from services import ALICE, BOB, build_services, call_context, clock_of, close_services, new_tenant

from hsmbridge.core.clock import FixedClock
from hsmbridge.core.principal import CallContext
from hsmbridge.core.services import Services


def _services_over(request: pytest.FixtureRequest, backend_name: str) -> Iterator[Services]:
    if backend_name == "fake":
        fake = FakeBackend()
        services = build_services(fake)
        yield services
        close_services(services)
        fake.close()
    else:
        # The session-wide backend owns the token login: share it, never close it here.
        services = build_services(request.getfixturevalue("hsm_backend"))
        yield services
        close_services(services)


@pytest.fixture(params=["fake", pytest.param("softhsm", marks=pytest.mark.softhsm)])
def services(request: pytest.FixtureRequest) -> Iterator[Services]:
    """The service layer over each backend, with a fresh in-memory store and a FixedClock."""
    yield from _services_over(request, request.param)


@pytest.fixture
def hsm_services(request: pytest.FixtureRequest) -> Iterator[Services]:
    """The service layer over the real SoftHSM2 backend only, for HSM-specific behaviour."""
    yield from _services_over(request, "softhsm")


@pytest.fixture
def clock(services: Services) -> FixedClock:
    return clock_of(services)


@pytest.fixture
def ctx(tenant: str) -> CallContext:
    """alice in the test's tenant."""
    return call_context(tenant, ALICE)


@pytest.fixture
def bob(tenant: str) -> CallContext:
    """bob in the same tenant: the second principal dual authorization needs."""
    return call_context(tenant, BOB)


@pytest.fixture
def other_tenant() -> CallContext:
    """alice in another tenant."""
    return call_context(new_tenant(), ALICE)
