"""Prometheus metrics that cost (almost) nothing on the hot path.

Three kinds of sources, chosen by what each costs per request:

- **read at scrape time**: the HSM layer counts with plain integers (handle-cache hits/misses/
  evictions, session-pool statistics) and the import-keypair pool knows its depth; collectors
  here read them when Prometheus scrapes, so a wrap pays no metric call for them at all;
- **HSM operation latency by mechanism**: the backend's public methods are wrapped on the
  instance (`instrument_backend`) with a timer that does two `perf_counter()` calls, a bisect and
  two integer increments under an uncontended lock (≈0.3 µs against ≈17 µs for the cheapest HSM
  call); a prometheus-client `Histogram` child would cost several times more;
- **request counts and latency** per gRPC method / REST route and outcome: prometheus-client
  counters and histograms whose labelled children are looked up once and cached by the
  interceptor (grpc/interceptors.py) and the middleware (rest/middleware.py).

Several worker processes: each worker serves its own registry on a loopback port of its own,
and the supervisor's metrics port merges them, adding a `worker` label (`WorkerMetricsCollector`).
Chosen over prometheus-client's multiprocess mode because that mode cannot run custom collectors
(the scrape-time readings above live in each worker's memory), keeps one mmap file per process
that grows with every restart, and has no way to label series by worker. docs/BENCHMARKS.md and
README explain the choice to operators.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)

# `_created` series double the output and tell nothing a restart counter does not.
disable_created_metrics()

#: request latency buckets (seconds): a unary call is ≈0.3 ms, a 1,000-item batch ≈20 ms
REQUEST_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: HSM call buckets (seconds): GCM ≈17 µs, RSA-4096 unwrap ≈7 ms, RSA-4096 keygen ≈1 s
HSM_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


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
        health = getattr(self._backend, "health", None)
        if health is not None:
            state = health.snapshot()
            yield GaugeMetricFamily(
                "hsmbridge_hsm_up",
                "1 while the HSM serves, 0 while it recovers from an outage",
                value=float(state.state.value == "up"),
            )
            yield CounterMetricFamily(
                "hsmbridge_hsm_recoveries",
                "HSM outages recovered from without a restart",
                value=state.recoveries,
            )
            yield CounterMetricFamily(
                "hsmbridge_hsm_recovery_attempts",
                "HSM re-initialisation attempts during outages",
                value=state.attempts,
            )
            yield GaugeMetricFamily(
                "hsmbridge_hsm_down_seconds",
                "How long the current HSM outage has lasted (0 when up)",
                value=state.down_for,
            )
        info = InfoMetricFamily("hsmbridge_hsm", "The HSM and what the start-up probe found")
        caps = self._backend.capabilities().as_dict()
        info.add_metric(
            [],
            {"kek_label": self._backend.settings.kek_label, **{k: str(v).lower() for k, v in caps.items()}},
        )
        yield info


class HsmGroupCollector(Collector):
    """Each token of an HSM group (hsm/group.py): whether it serves, and how often it failed."""

    def __init__(self, group: Any) -> None:
        self._group = group

    def collect(self) -> Iterator[Any]:
        tokens = self._group.status()
        up = GaugeMetricFamily(
            "hsmbridge_hsm_token_up", "1 while the group's token is in service", labels=["token"]
        )
        active = GaugeMetricFamily(
            "hsmbridge_hsm_token_active", "1 for the token new requests go to", labels=["token"]
        )
        failures = CounterMetricFamily(
            "hsmbridge_hsm_token_failures", "Times the token was taken out of service", labels=["token"]
        )
        for token in tokens:
            up.add_metric([token.name], 1 if token.state == "up" else 0)
            active.add_metric([token.name], 1 if token.active else 0)
            failures.add_metric([token.name], token.failures)
        yield up
        yield active
        yield failures


# --- HSM operation latency ---------------------------------------------------------------------


class _Timing:
    """One (mechanism, operation) series: bucket counts and a sum, behind an uncontended lock
    (the hot path runs on one event-loop thread; slow operations run in a few worker threads)."""

    __slots__ = ("_bounds", "_lock", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self._lock = threading.Lock()
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        index = bisect_left(self._bounds, seconds)  # `le` buckets: a value equal to a bound is in it
        with self._lock:
            self.counts[index] += 1
            self.total += seconds

    def snapshot(self) -> tuple[list[int], float]:
        with self._lock:
            return list(self.counts), self.total


class HsmOperationTimer(Collector):
    """`hsmbridge_hsm_operation_seconds{mechanism, operation}` without prometheus-client's
    per-observation cost; see the module docstring."""

    def __init__(self, bounds: tuple[float, ...] = HSM_BUCKETS) -> None:
        self._bounds = bounds
        self._series: dict[tuple[str, str], _Timing] = {}

    def series(self, mechanism: str, operation: str) -> _Timing:
        return self._series.setdefault((mechanism, operation), _Timing(self._bounds))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "hsmbridge_hsm_operation_seconds",
            "Latency of backend calls into the HSM (session checkout and handle lookup included)",
            labels=["mechanism", "operation"],
        )
        for (mechanism, operation), timing in sorted(self._series.items()):
            counts, total = timing.snapshot()
            cumulative, buckets = 0, []
            for bound, count in zip((*map(repr, self._bounds), "+Inf"), counts, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([mechanism, operation], buckets, total)
        yield family


#: backend method → (PKCS#11 mechanism, operation). Batches are one observation per call.
BACKEND_OPERATIONS: Mapping[str, tuple[str, str]] = {
    "gcm_encrypt": ("CKM_AES_GCM", "encrypt"),
    "gcm_decrypt": ("CKM_AES_GCM", "decrypt"),
    "gcm_encrypt_many": ("CKM_AES_GCM", "encrypt_batch"),
    "gcm_decrypt_many": ("CKM_AES_GCM", "decrypt_batch"),
    "generate_key": ("CKM_AES_KEY_GEN", "generate"),
    "wrap_material": ("CKM_AES_KEY_WRAP_PAD", "wrap"),
    "reveal_secret": ("CKM_AES_KEY_WRAP_PAD", "unwrap"),
    "random": ("CKM_RNG", "generate_random"),
    "import_key": ("CKM_RSA_PKCS_OAEP", "unwrap"),
    "create_import_keypair": ("CKM_RSA_PKCS_KEY_PAIR_GEN", "generate"),
    "destroy_import_keypair": ("none", "destroy"),
}


def _timed(function: Callable[..., Any], timing: _Timing) -> Callable[..., Any]:
    clock = time.perf_counter
    observe = timing.observe

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            observe(clock() - started)

    timed.__wrapped__ = function  # type: ignore[attr-defined]
    timed.__doc__ = function.__doc__
    return timed


def instrument_backend(backend: Any, timer: HsmOperationTimer) -> None:
    """Time the backend's HSM calls by replacing its bound methods on the instance: every caller
    (services, batches, import tokens) reaches the backend through attribute lookup."""
    for name, (mechanism, operation) in BACKEND_OPERATIONS.items():
        method = getattr(backend, name, None)
        if method is not None and not hasattr(method, "__wrapped__"):
            setattr(backend, name, _timed(method, timer.series(mechanism, operation)))


# --- the per-process registry ------------------------------------------------------------------


class Metrics:
    """Everything one process exports, in a registry of its own (never the global default, so
    tests and embedded servers can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.grpc_handled = Counter(
            "hsmbridge_grpc_server_handled",
            "gRPC calls completed, by method and status code",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=self.registry,
        )
        self.grpc_seconds = Histogram(
            "hsmbridge_grpc_server_handling_seconds",
            "gRPC call latency inside the server, by method and status code",
            ["grpc_service", "grpc_method", "grpc_code"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.rest_requests = Counter(
            "hsmbridge_rest_requests",
            "Key Protect REST requests completed, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.rest_seconds = Histogram(
            "hsmbridge_rest_request_seconds",
            "Key Protect REST request latency, by method, route template and status",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.hsm = HsmOperationTimer()
        self.registry.register(self.hsm)
        self._grpc_children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._rest_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def watch_backend(self, backend: Any) -> None:
        """Scrape-time cache/pool readings (real PKCS#11 backends only) and HSM call latency."""
        if hasattr(backend, "cache") and hasattr(backend, "pool"):
            self.registry.register(HsmCollector(backend))
        if hasattr(backend, "status"):
            self.registry.register(HsmGroupCollector(backend))
        instrument_backend(backend, self.hsm)

    def watch_keypair_pool(self, pool: Any) -> None:
        self.registry.register(KeypairPoolCollector(pool))

    def watch_rotation_scheduler(self, scheduler: Any) -> None:
        self.registry.register(RotationSchedulerCollector(scheduler))

    def grpc_observer(self, full_method: str, code: str) -> tuple[Any, Any]:
        """(counter child, histogram child) for one method and code, looked up once."""
        key = (full_method, code)
        children = self._grpc_children.get(key)
        if children is None:
            service, _, method = full_method.lstrip("/").partition("/")
            labels = (service, method, code)
            children = (self.grpc_handled.labels(*labels), self.grpc_seconds.labels(*labels))
            self._grpc_children[key] = children
        return children

    def rest_observer(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        key = (method, route, status)
        children = self._rest_children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = (self.rest_requests.labels(*labels), self.rest_seconds.labels(*labels))
            self._rest_children[key] = children
        return children


class KeypairPoolCollector(Collector):
    """The import-token keypair pool, read at scrape time."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        stats = self._pool.stats()
        yield GaugeMetricFamily(
            "hsmbridge_import_keypair_pool_ready", "Pre-generated import keypairs ready", value=stats.ready
        )
        yield GaugeMetricFamily(
            "hsmbridge_import_keypair_pool_target", "Keypairs the pool refills to", value=stats.target
        )
        yield CounterMetricFamily(
            "hsmbridge_import_keypair_pool_taken",
            "Import tokens created with a pooled keypair",
            value=stats.taken,
        )
        yield CounterMetricFamily(
            "hsmbridge_import_keypair_pool_misses",
            "Import tokens that had to generate their keypair inline (pool empty or other size)",
            value=stats.misses,
        )
        yield CounterMetricFamily(
            "hsmbridge_import_keypair_pool_generated", "Keypairs generated by the pool", value=stats.generated
        )
        yield CounterMetricFamily(
            "hsmbridge_import_keypair_pool_orphans_destroyed",
            "Unused pooled keypairs of a previous process found on the token and destroyed",
            value=stats.orphans_destroyed,
        )


class RotationSchedulerCollector(Collector):
    """Automatic rotation (core/rotation_scheduler.py), read at scrape time. Summed over every
    process that scans (one per replica), ``rotated`` counts each policy rotation exactly once;
    ``lost`` counts due keys another process rotated first."""

    def __init__(self, scheduler: Any) -> None:
        self._scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        stats = self._scheduler.stats
        yield CounterMetricFamily(
            "hsmbridge_auto_rotations", "Keys rotated by their rotation policy", value=stats.rotated
        )
        yield CounterMetricFamily(
            "hsmbridge_auto_rotations_failed",
            "Automatic rotations that failed (retried at the next scan)",
            value=stats.failed,
        )
        yield CounterMetricFamily(
            "hsmbridge_auto_rotations_lost",
            "Due keys another process (worker or replica) rotated first",
            value=stats.lost,
        )
        yield GaugeMetricFamily(
            "hsmbridge_auto_rotations_due", "Keys found due by the last rotation scan", value=stats.due
        )
        yield CounterMetricFamily(
            "hsmbridge_auto_rotation_scans", "Rotation scans completed", value=stats.scans
        )
        if stats.last_scan is not None:
            yield GaugeMetricFamily(
                "hsmbridge_auto_rotation_last_scan_timestamp_seconds",
                "When the last rotation scan started (Unix time)",
                value=stats.last_scan.timestamp(),
            )


# --- HTTP exposition -----------------------------------------------------------------------------


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics.listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def serve_http(registry: CollectorRegistry, listen: str) -> tuple[Any, str]:
    """Serve `registry` on `listen` from a daemon thread; return (server, http://host:port/metrics).
    Raises OSError when the port is taken."""
    host, port = split_listen(listen)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    real = server.server_port
    shown = f"[{host}]" if ":" in host else host
    return server, f"http://{shown}:{real}/metrics"


# --- the supervisor's view of its workers --------------------------------------------------------


class WorkerMetricsCollector(Collector):
    """Merge every worker's own metrics endpoint into one exposition, labelling each series with
    its `worker` index, and add the supervisor's own counters (restarts, workers up).

    A worker that does not answer within `timeout` is left out of that scrape (and counted in
    `hsmbridge_worker_scrape_failures_total`): one stuck worker must not blank the others.
    """

    def __init__(
        self,
        endpoints: Callable[[], Mapping[int, str]],
        restarts: Callable[[], Mapping[int, int]],
        timeout: float = 2.0,
    ) -> None:
        self._endpoints = endpoints
        self._restarts = restarts
        self._timeout = timeout
        self._failures = 0

    def _fetch(self, url: str) -> str:
        if not url.startswith("http://"):  # workers report http://127.0.0.1:PORT/metrics
            raise OSError(f"not a worker metrics URL: {url!r}")
        with urllib.request.urlopen(url, timeout=self._timeout) as response:  # noqa: S310
            return response.read().decode()

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        endpoints = dict(self._endpoints())
        for index, url in sorted(endpoints.items()):
            try:
                text = self._fetch(url)
            except OSError as exc:
                self._failures += 1
                log.debug("worker %d metrics scrape failed: %s", index, exc)
                continue
            for family in text_string_to_metric_families(text):
                target = merged.get(family.name)
                if target is None:
                    target = merged[family.name] = Metric(family.name, family.documentation, family.type)
                target.samples.extend(_labelled(family.samples, index))
        yield from merged.values()
        restarts = CounterMetricFamily(
            "hsmbridge_worker_restarts", "Worker processes restarted after dying", labels=["worker"]
        )
        for index, count in sorted(self._restarts().items()):
            restarts.add_metric([str(index)], count)
        yield restarts
        yield GaugeMetricFamily("hsmbridge_workers_up", "Worker processes serving", value=len(endpoints))
        yield CounterMetricFamily(
            "hsmbridge_worker_scrape_failures",
            "Worker metric endpoints that did not answer",
            value=self._failures,
        )


def _labelled(samples: Iterable[Sample], index: int) -> Iterator[Sample]:
    worker = str(index)
    for sample in samples:
        yield sample._replace(labels={**sample.labels, "worker": worker})
