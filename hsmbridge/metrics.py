"""Prometheus metrics that cost nothing on the hot path.

The HSM layer counts with plain integers (handle-cache hits/misses/evictions, pool statistics);
this collector reads them when Prometheus scrapes, so a wrap pays no metric call at all.
Request counters and latency histograms (per RPC and REST route) live with the transports.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector


class HsmCollector(Collector):
    """Exports one `Pkcs11Backend`'s cache and session-pool state."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def collect(self) -> Iterator[Any]:
        cache = self._backend.cache
        pool = self._backend.pool.stats()
        yield CounterMetricFamily(
            "hsmbridge_handle_cache_hits", "Root-key handle cache hits", value=cache.hits
        )
        yield CounterMetricFamily(
            "hsmbridge_handle_cache_misses", "Root-key handle cache misses (HSM unwraps)", value=cache.misses
        )
        yield CounterMetricFamily(
            "hsmbridge_handle_cache_evictions",
            "Unwrapped key versions evicted and destroyed in the HSM",
            value=cache.evictions,
        )
        yield GaugeMetricFamily(
            "hsmbridge_handle_cache_size", "Key versions currently unwrapped in the HSM", value=len(cache)
        )
        yield GaugeMetricFamily("hsmbridge_hsm_sessions_max", "Worker session pool size", value=pool.size)
        yield GaugeMetricFamily("hsmbridge_hsm_sessions_open", "Worker sessions open", value=pool.open)
        yield GaugeMetricFamily(
            "hsmbridge_hsm_sessions_in_use", "Worker sessions checked out", value=pool.in_use
        )
        yield CounterMetricFamily(
            "hsmbridge_hsm_session_waits", "Checkouts that had to wait", value=pool.waits
        )
        yield CounterMetricFamily(
            "hsmbridge_hsm_session_wait_seconds", "Time spent waiting for a session", value=pool.wait_seconds
        )
        yield CounterMetricFamily(
            "hsmbridge_hsm_sessions_replaced", "Dead sessions replaced", value=pool.replaced
        )
        yield CounterMetricFamily(
            "hsmbridge_hsm_reinitializations",
            "PKCS#11 re-initialisations after failures",
            value=pool.rebuilds,
        )
        info = InfoMetricFamily("hsmbridge_hsm", "The HSM and what the start-up probe found")
        caps = self._backend.capabilities().as_dict()
        info.add_metric(
            [],
            {"kek_label": self._backend.settings.kek_label, **{k: str(v).lower() for k, v in caps.items()}},
        )
        yield info
