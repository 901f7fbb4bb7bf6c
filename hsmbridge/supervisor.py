"""`hsmbridge serve --workers N`: N worker processes behind one pair of ports.

Why processes: a SoftHSM2 token does not scale with threads (1→2 threads: 57k→47k GCM ops/s)
but does with processes (58k→114k), and a Python gRPC server is bounded by one core anyway.

How, and why each rule:

- **No PKCS#11 here.** The supervisor never loads the module: PKCS#11 state does not survive a
  fork, so workers are fresh interpreters (`python -m hsmbridge.cli worker`, fork+exec by
  `subprocess`), each doing its own `C_Initialize` with OS locking and owning its session pool,
  handle cache and import-keypair pool slot.
- **Shared ports.** The supervisor binds (without listening) a SO_REUSEPORT socket on the gRPC
  and REST addresses first: port 0 becomes a concrete port it hands to every worker, a busy port
  is refused before any worker starts, and the port stays reserved while workers restart. Only
  listening sockets receive connections, so the kernel spreads them over the workers alone.
- **One set of listen lines.** Workers report readiness as a JSON line on a pipe; once all have,
  the supervisor prints "metrics/REST/gRPC listening on" once, as a single daemon would.
- **Restarts.** A worker that dies unexpectedly is restarted after a backoff (0.5 s doubling to
  30 s; reset once a worker has served for a minute) and counted in
  `hsmbridge_worker_restarts_total`. A worker that fails while the daemon *starts* (bad PIN, busy
  port) stops everything with its exit status instead: that is a configuration error.
- **Shutdown.** SIGTERM/SIGINT is forwarded as SIGTERM; workers drain (gRPC `stop(grace)`,
  uvicorn shutdown), destroy their pooled keypairs, close their sessions (the login session last)
  and exit 0; the supervisor exits 0 once all are down (1 if one had to be killed or failed).
  Workers also hold the read end of a "lifeline" pipe whose write end only the supervisor has:
  if the supervisor is killed outright, they see EOF and shut down instead of lingering.
- **Metrics.** Each worker serves its own registry on an ephemeral loopback port; the supervisor
  serves `metrics.listen`, merging them with a `worker` label (see hsmbridge/metrics.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from hsmbridge.config import DEV_TOKEN_ENV, Config, dev_credentials
from hsmbridge.daemon import _split_listen, require_safe_listeners, reuseport_socket
from hsmbridge.errors import InvalidInput

log = logging.getLogger("hsmbridge.supervisor")

READY_TIMEOUT = 120.0
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 30.0
HEALTHY_AFTER = 60.0


class WorkerFailed(Exception):
    def __init__(self, index: int, returncode: int | None) -> None:
        super().__init__(f"worker {index} exited with status {returncode} before it was ready")
        self.index = index
        self.returncode = returncode


@dataclass
class WorkerSlot:
    index: int
    proc: asyncio.subprocess.Process | None = None
    ready: dict[str, Any] = field(default_factory=dict)
    started: float = 0.0
    failures: int = 0
    restarts: int = 0


def _replace_port(listen: str, port: int) -> str:
    return f"{listen.rsplit(':', 1)[0]}:{port}"


def _read_ready(fd: int, timeout: float) -> bytes:
    """Read one line (or EOF) from a worker's readiness pipe, closing it."""
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            readable, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data


class Supervisor:
    def __init__(self, config: Config, workers: int, *, config_path: str | None = None) -> None:
        if workers < 2:
            raise ValueError("the supervisor runs two or more workers; one runs in-process")
        self.config = config
        self.workers = workers
        self.config_path = config_path
        self.slots = [WorkerSlot(i) for i in range(workers)]
        self._stopping = False
        self._stop = asyncio.Event()
        self._reserved: list[socket.socket] = []
        self._env: dict[str, str] = {}
        self._lifeline_r = -1
        self._lifeline_w = -1
        self._metrics_http: Any = None

    # -- preparation (no PKCS#11) -------------------------------------------------------------------

    def _check(self) -> None:
        """The same refusals a single-process daemon makes, made once, before any worker starts."""
        require_safe_listeners(self.config)
        if self.config.rest.enabled:
            _split_listen(self.config.rest.listen)
        if self.config.grpc.listen.startswith("unix:"):
            raise InvalidInput(
                "a unix-socket gRPC listener cannot be shared by worker processes: run "
                "`serve --workers 1` (a sidecar needs one) or listen on TCP"
            )

    def _reserve(self, listen: str, what: str) -> str:
        sock = reuseport_socket(listen, what, backlog=None)
        self._reserved.append(sock)
        return _replace_port(listen, sock.getsockname()[1])

    def _prepare(self) -> None:
        self._check()
        env = {k: v for k, v in os.environ.items()}
        env["HSMBRIDGE_GRPC__LISTEN"] = self._reserve(self.config.grpc.listen, "gRPC")
        if self.config.grpc.health_listen:
            env["HSMBRIDGE_GRPC__HEALTH_LISTEN"] = self._reserve(
                self.config.grpc.health_listen, "grpc.health_listen"
            )
        if self.config.rest.enabled:
            env["HSMBRIDGE_REST__LISTEN"] = self._reserve(self.config.rest.listen, "REST")
        if self.config.rest.enabled and self.config.server.dev:
            credentials = dev_credentials()
            if credentials.token_generated:
                # every worker must accept the same token: choose it once, here
                print(f"hsmbridge: REST dev bearer token {credentials.token}", flush=True)
            env[DEV_TOKEN_ENV] = credentials.token
            if self.config.huawei.enabled:
                from hsmbridge.huawei.auth import DEV_AK_ENV, DEV_SK_ENV, dev_access_key

                pair = dev_access_key()
                if pair.generated:
                    print(f"hsmbridge: Huawei dev AK {pair.access_key} SK {pair.secret_key}", flush=True)
                env[DEV_AK_ENV], env[DEV_SK_ENV] = pair.access_key, pair.secret_key
        env["HSMBRIDGE_METRICS__LISTEN"] = "127.0.0.1:0"  # per worker; merged on metrics.listen
        self._env = env
        self._lifeline_r, self._lifeline_w = os.pipe()

    def _start_metrics(self) -> str | None:
        if not self.config.metrics.enabled:
            return None
        from prometheus_client import CollectorRegistry

        from hsmbridge.metrics import WorkerMetricsCollector, serve_http

        registry = CollectorRegistry(auto_describe=False)
        registry.register(
            WorkerMetricsCollector(
                lambda: {s.index: s.ready["metrics"] for s in self.slots if "metrics" in s.ready},
                lambda: {s.index: s.restarts for s in self.slots},
            )
        )
        try:
            self._metrics_http, url = serve_http(registry, self.config.metrics.listen)
        except (OSError, ValueError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidInput(
                f"cannot listen on {self.config.metrics.listen} for metrics: {detail}"
            ) from None
        return url

    # -- workers ---------------------------------------------------------------------------------------

    def _command(self, slot: WorkerSlot, ready_w: int) -> list[str]:
        config = ["--config", self.config_path] if self.config_path else []
        return [
            sys.executable,
            "-m",
            "hsmbridge.cli",
            *config,
            "worker",
            "--index",
            str(slot.index),
            "--count",
            str(self.workers),
            "--ready-fd",
            str(ready_w),
            "--lifeline-fd",
            str(self._lifeline_r),
        ]

    async def _spawn(self, slot: WorkerSlot) -> None:
        """Start one worker and wait until it reports ready; WorkerFailed if it dies first."""
        ready_r, ready_w = os.pipe()
        try:
            slot.proc = await asyncio.create_subprocess_exec(
                *self._command(slot, ready_w), env=self._env, pass_fds=(ready_w, self._lifeline_r)
            )
        finally:
            os.close(ready_w)
        slot.started = time.monotonic()
        line = await asyncio.to_thread(_read_ready, ready_r, READY_TIMEOUT)
        try:
            slot.ready = json.loads(line)
        except ValueError:
            slot.ready = {}
            proc = slot.proc
            if proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
            if proc.returncode is None:  # alive but silent: it never became ready
                proc.kill()
                await proc.wait()
            raise WorkerFailed(slot.index, proc.returncode) from None
        log.info("worker %d ready (pid %d)", slot.index, slot.proc.pid)

    async def _watch(self, slot: WorkerSlot) -> None:
        """Restart `slot`'s worker whenever it dies, until shutdown."""
        while True:
            assert slot.proc is not None
            returncode = await slot.proc.wait()
            if self._stopping:
                return
            slot.ready = {}
            lived = time.monotonic() - slot.started
            slot.failures = 1 if lived >= HEALTHY_AFTER else slot.failures + 1
            delay = min(FIRST_BACKOFF * 2 ** (slot.failures - 1), MAX_BACKOFF)
            slot.restarts += 1
            log.warning(
                "worker %d (pid %d) exited with status %s after %.1fs; restarting in %.1fs",
                slot.index,
                slot.proc.pid,
                returncode,
                lived,
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stopping:
                return
            try:
                await self._spawn(slot)
            except WorkerFailed as failed:
                log.warning("%s", failed)
            except Exception as exc:
                # e.g. exec failed: slot.proc is still the dead one, so the loop retries with a
                # longer backoff; never let the watcher die and the slot stay empty
                log.error("restarting worker %d failed: %r", slot.index, exc)

    async def _terminate_all(self, grace: float) -> bool:
        """SIGTERM every worker, wait `grace` (then SIGKILL); True when all exited cleanly."""
        self._stopping = True
        self._stop.set()
        procs = [s.proc for s in self.slots if s.proc is not None]
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        clean = True
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                log.error("worker pid %d did not stop within %.0fs: killing it", proc.pid, grace)
                proc.kill()
                await proc.wait()
                clean = False
            if proc.returncode not in (0, -signal.SIGTERM):
                clean = False
        return clean

    # -- the whole life -------------------------------------------------------------------------------

    async def run(self) -> int:
        self._prepare()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        grace = self.config.server.shutdown_grace + max(self.config.rest.shutdown_grace, 0) + 20
        try:
            metrics_url = self._start_metrics()
            starting = [asyncio.ensure_future(self._spawn(slot)) for slot in self.slots]
            stop_wait = asyncio.ensure_future(self._stop.wait())
            pending = set(starting)
            failure: WorkerFailed | None = None
            while pending and failure is None and not self._stop.is_set():
                done, pending = await asyncio.wait(pending | {stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(stop_wait)
                for task in done:
                    error = None if task is stop_wait else task.exception()
                    if error is not None:
                        failure = error if isinstance(error, WorkerFailed) else WorkerFailed(-1, None)
                        if not isinstance(error, WorkerFailed):
                            log.error("starting a worker failed: %r", error)
            if failure is not None or self._stop.is_set():
                for task in pending:
                    task.cancel()
                await self._terminate_all(grace)
                if failure is None:
                    return 0
                log.error("%s", failure)
                return 2 if failure.returncode == 2 else 1
            first = self.slots[0].ready
            if metrics_url:
                print(f"hsmbridge: metrics listening on {metrics_url}", flush=True)
            if "rest" in first:
                print(f"hsmbridge: REST listening on {first['rest']}", flush=True)
            print(f"hsmbridge: gRPC listening on {first['grpc']}", flush=True)
            log.info("hsmbridge serving with %d workers (pids %s)", self.workers, self.pids())
            watchers = [asyncio.ensure_future(self._watch(slot)) for slot in self.slots]
            await self._stop.wait()
            log.info("shutting down %d workers", self.workers)
            clean = await self._terminate_all(grace)
            for watcher in watchers:
                watcher.cancel()
            log.info("all workers stopped")
            return 0 if clean else 1
        finally:
            self._stopping = True
            if self._metrics_http is not None:
                self._metrics_http.shutdown()
            for sock in self._reserved:
                sock.close()
            for fd in (self._lifeline_r, self._lifeline_w):
                if fd >= 0:
                    os.close(fd)

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None]


def run(config: Config, workers: int, *, config_path: str | None = None) -> int:
    return asyncio.run(Supervisor(config, workers, config_path=config_path).run())
