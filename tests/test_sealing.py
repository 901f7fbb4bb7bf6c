"""Sealed secrets: HSM-held system keys, bound to purpose and context, unreachable by tenants."""

from __future__ import annotations

import pytest
from services import ALICE, call_context

from hsmbridge.core.principal import SYSTEM_TENANT, CallContext, Principal
from hsmbridge.core.sealing import MAX_SECRET_BYTES
from hsmbridge.core.services import Services
from hsmbridge.core.store.base import KeyQuery
from hsmbridge.errors import IntegrityError, InvalidInput

pytest_plugins = ("services_fixtures",)
pytestmark = pytest.mark.any_hsm


def test_round_trip_including_empty_secret(services: Services) -> None:
    for secret in (b"", b"s3cret", bytes(range(256)) * 29):
        sealed = services.sealer.seal("push-connection", secret, b"conn-1")
        assert secret not in sealed or not secret
        assert services.sealer.open("push-connection", sealed, b"conn-1") == secret


def test_bound_to_purpose_and_context(services: Services) -> None:
    sealed = services.sealer.seal("push-connection", b"aws-secret", b"conn-1")
    with pytest.raises(IntegrityError):
        services.sealer.open("push-connection", sealed, b"conn-2")
    with pytest.raises(IntegrityError):
        services.sealer.open("huawei-import-token", sealed, b"conn-1")


def test_tampering_is_one_integrity_error(services: Services) -> None:
    sealed = bytearray(services.sealer.seal("push-connection", b"aws-secret"))
    for index in (0, len(sealed) // 2, len(sealed) - 1):
        tampered = bytearray(sealed)
        tampered[index] ^= 0x01
        with pytest.raises(IntegrityError):
            services.sealer.open("push-connection", bytes(tampered))


def test_one_system_key_per_purpose_and_reused(services: Services) -> None:
    services.sealer.seal("push-connection", b"a")
    services.sealer.seal("push-connection", b"b")
    services.sealer.seal("huawei-import-token", b"c")
    assert len(services.store.list_keys(SYSTEM_TENANT, KeyQuery())) == 2


def test_a_second_process_finds_the_key_the_first_made(services: Services) -> None:
    sealed = services.sealer.seal("push-connection", b"shared")
    other = Services.build(services.store, services.backend, services.clock)
    assert other.sealer.open("push-connection", sealed) == b"shared"


def test_size_limit(services: Services) -> None:
    with pytest.raises(InvalidInput):
        services.sealer.seal("push-connection", b"x" * (MAX_SECRET_BYTES + 1))


def test_no_caller_can_name_the_system_tenant() -> None:
    with pytest.raises(InvalidInput):
        call_context(SYSTEM_TENANT, ALICE)
    with pytest.raises(InvalidInput):
        CallContext(Principal("hsmbridge:system"), SYSTEM_TENANT)
    with pytest.raises(InvalidInput):
        CallContext(Principal("alice"), "hsmbridge:anything")
