"""The HSM collector exports the handle cache and the session pool as Prometheus metrics."""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from hsmbridge.core.backend import KeyRef, MaterialKind
from hsmbridge.hsm.backend import Pkcs11Backend
from hsmbridge.metrics import HsmCollector

pytestmark = pytest.mark.softhsm


@pytest.fixture
def backend(hsm_settings, hsm_backend):  # type: ignore[no-untyped-def]
    """A private backend, so other tests' keys in the shared cache cannot cause evictions here."""
    b = Pkcs11Backend(replace(hsm_settings, cache_size=8))
    yield b
    b.close()


def test_handle_cache_hits_misses_and_evictions_are_counted(backend: Pkcs11Backend) -> None:
    hsm_backend = backend
    registry = CollectorRegistry()
    registry.register(HsmCollector(hsm_backend))

    def value(name: str) -> float:
        sample = registry.get_sample_value(name)
        assert sample is not None, name
        return sample

    before = {n: value(f"hsmbridge_handle_cache_{n}_total") for n in ("hits", "misses", "evictions")}
    ref = KeyRef("metrics-key", hsm_backend.generate_key(MaterialKind.AES, 32))
    for _ in range(3):
        hsm_backend.gcm_encrypt(ref, b"x", b"")
    hsm_backend.evict([ref.version_id])
    assert value("hsmbridge_handle_cache_misses_total") == before["misses"] + 1
    assert value("hsmbridge_handle_cache_hits_total") == before["hits"] + 2
    assert value("hsmbridge_handle_cache_evictions_total") == before["evictions"] + 1
    assert value("hsmbridge_hsm_sessions_max") == hsm_backend.pool.size
    text = generate_latest(registry).decode()
    assert 'aes_gcm="true"' in text and "hsmbridge_hsm_info" in text
