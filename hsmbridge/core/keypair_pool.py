"""A small pool of pre-generated RSA import keypairs, so creating an import token takes
milliseconds instead of the ≈1 s an RSA-4096 keygen costs on SoftHSM2.

Shape and why:

- **Per worker process.** Each worker owns its pool (size `hsm.import_key_pool_size`, default 2)
  and refills it from one background thread: keygen releases the GIL, and a pool shared across
  processes would need a cross-process hand-off for a few keypairs. With N workers the token holds
  up to N × size unused keypairs; an import token created in one worker is used by any worker
  afterwards (the private key is a token object found by its id).
- **Recognisable on the token.** Pooled keypairs get the object id `pool-w<index>-<hex>` (so the
  label `hsmbridge-import-pool-w<index>-<hex>`). When a keypair is taken, its id becomes the import
  token's `hsm_object_id`, so from then on it is an import keypair like any other and is destroyed
  when the token is replaced or expires (`ImportTokenService.sweep_expired`).
- **Restarts.** A worker that died left its unused pooled keypairs behind. At start-up the pool
  finds the keypairs of its own slot (`w<index>`; worker 0 also claims slots at or beyond the
  current worker count, left by a larger configuration), keeps those a stored import token refers
  to and destroys the rest. Slots keep workers from destroying each other's live pools. One daemon
  per token is assumed (as for the store).
- **Shutdown.** `close()` stops the refill thread (waiting for a keygen in flight) and destroys
  every unused keypair, so a graceful stop leaves no pool objects on the token.
- **Refill after a pause.** The refill starts `refill_delay` (0.25 s) after the last take, so the
  request that took a keypair finishes before a ≈1 s keygen competes with it for the CPU and the
  token (measured: creation p90 18 → 9 ms, max 58 → 11–36 ms with two workers).
- **Ageing.** A keypair older than `max_age` is destroyed rather than handed out, so a pool that is
  rarely used does not hand out keys generated long ago.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from hsmbridge.core.backend import CryptoBackend
from hsmbridge.errors import HsmBridgeError

log = logging.getLogger(__name__)

POOL_ID_PREFIX = "pool-"
DEFAULT_MAX_AGE = 24 * 3600.0


def slot_prefix(worker: int) -> str:
    return f"{POOL_ID_PREFIX}w{worker}-"


@dataclass(frozen=True, slots=True)
class PooledKeypair:
    object_id: str
    bits: int
    public_key_der: bytes
    created: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class PoolStats:
    ready: int
    target: int
    taken: int
    misses: int
    generated: int
    orphans_destroyed: int


class KeypairPool:
    """Pre-generated import keypairs of one size for one worker; see the module docstring."""

    def __init__(
        self,
        backend: CryptoBackend,
        *,
        size: int,
        bits: int = 4096,
        worker: int = 0,
        workers: int = 1,
        max_age: float = DEFAULT_MAX_AGE,
        retry_delay: float = 5.0,
        refill_delay: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self.size = size
        self.bits = bits
        self.worker = worker
        self.workers = max(workers, 1)
        self.max_age = max_age
        self._retry_delay = retry_delay
        self._refill_delay = refill_delay
        self._last_take_wall = float("-inf")
        self._clock = clock
        self._ready: deque[PooledKeypair] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._taken = 0
        self._misses = 0
        self._generated = 0
        self._orphans_destroyed = 0

    # -- start-up ----------------------------------------------------------------------------------

    def owns(self, object_id: str) -> bool:
        """Whether a pool keypair with this id belongs to this worker's slot (see the docstring)."""
        if not object_id.startswith(POOL_ID_PREFIX + "w"):
            return False
        slot = object_id[len(POOL_ID_PREFIX) + 1 :].partition("-")[0]
        if not slot.isdigit():
            return self.worker == 0  # malformed: someone has to clean it up
        index = int(slot)
        return index == self.worker or (self.worker == 0 and index >= self.workers)

    def destroy_orphans(self, in_use: Iterable[str]) -> int:
        """Destroy this slot's pooled keypairs that no import token refers to; return how many."""
        find = getattr(self._backend, "find_import_keypairs", None)
        if find is None:
            return 0
        keep = set(in_use)
        orphans = [oid for oid in find(POOL_ID_PREFIX) if self.owns(oid) and oid not in keep]
        for object_id in orphans:
            self._destroy_quietly(object_id)
        if orphans:
            log.info("destroyed %d unused pooled import keypair(s) left by a previous process", len(orphans))
        self._orphans_destroyed += len(orphans)
        return len(orphans)

    def start(self) -> None:
        """Start the background refill (nothing to do with size 0)."""
        if self.size <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._refill, name="hsmbridge-keypair-pool", daemon=True)
        self._thread.start()

    # -- use ---------------------------------------------------------------------------------------

    def take(self, bits: int) -> PooledKeypair | None:
        """A ready keypair of `bits`, or None (the caller generates one inline)."""
        stale: list[PooledKeypair] = []
        found: PooledKeypair | None = None
        with self._cond:
            if bits == self.bits and not self._closed:
                now = self._clock()
                while self._ready:
                    candidate = self._ready.popleft()
                    if now - candidate.created > self.max_age:
                        stale.append(candidate)
                        continue
                    found = candidate
                    break
            if found is None:
                self._misses += 1
            else:
                self._taken += 1
            self._last_take_wall = time.monotonic()
            self._cond.notify_all()
        for keypair in stale:
            self._destroy_quietly(keypair.object_id)
        return found

    def give_back(self, keypair: PooledKeypair) -> None:
        """Return a keypair that was taken but not used (the token could not be stored)."""
        with self._cond:
            if not self._closed and len(self._ready) < self.size:
                self._ready.appendleft(keypair)
                return
        self._destroy_quietly(keypair.object_id)

    def stats(self) -> PoolStats:
        with self._cond:
            return PoolStats(
                len(self._ready),
                self.size,
                self._taken,
                self._misses,
                self._generated,
                self._orphans_destroyed,
            )

    def wait_ready(self, count: int | None = None, timeout: float = 60.0) -> bool:
        """Block until `count` (default: the pool size) keypairs are ready; for tests and benchmarks."""
        want = self.size if count is None else count
        with self._cond:
            return self._cond.wait_for(lambda: len(self._ready) >= want or self._closed, timeout)

    # -- refill --------------------------------------------------------------------------------------

    def _refill(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or len(self._ready) < self.size)
                # Let the request that just took a keypair finish first: a keygen started at once
                # competes with it for the CPU and the token (its p99 doubled in benchmarks).
                while not self._closed:
                    quiet = self._refill_delay - (time.monotonic() - self._last_take_wall)
                    if quiet <= 0:
                        break
                    self._cond.wait(quiet)
                if self._closed:
                    return
            object_id = f"{slot_prefix(self.worker)}{uuid.uuid4().hex}"
            try:
                public_der = self._backend.create_import_keypair(object_id, self.bits)
            except HsmBridgeError as exc:
                log.warning("import keypair pool: keygen failed (%s); retrying later", exc.reason)
                self._destroy_quietly(object_id)  # a half-done keygen may have left an object
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, self._retry_delay)
                continue
            except Exception as exc:  # never let the thread die silently
                log.error("import keypair pool: unexpected %s; refill stopped", type(exc).__name__)
                self._destroy_quietly(object_id)
                return
            keypair = PooledKeypair(object_id, self.bits, public_der, self._clock())
            with self._cond:
                self._generated += 1
                if not self._closed:
                    self._ready.append(keypair)
                    self._cond.notify_all()
                    continue
            self._destroy_quietly(object_id)  # closed while generating
            return

    # -- shutdown --------------------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Stop refilling (a keygen in flight finishes first) and destroy every unused keypair."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:
            unused, self._ready = list(self._ready), deque()
        for keypair in unused:
            self._destroy_quietly(keypair.object_id)

    def _destroy_quietly(self, object_id: str) -> None:
        try:
            self._backend.destroy_import_keypair(object_id)
        except HsmBridgeError as exc:
            log.warning("could not destroy pooled import keypair %s: %s", object_id, exc.reason)
