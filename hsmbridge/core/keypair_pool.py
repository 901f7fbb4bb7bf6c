"""A small pool of pre-generated RSA import keypairs, so creating an import token takes
milliseconds instead of the ≈1 s an RSA-4096 keygen costs on SoftHSM2.

Shape and why:

- **Per process.** Each serving process (each worker) owns its pool (size
  `hsm.import_key_pool_size`, default 2) and refills it from one background thread: keygen
  releases the GIL, and a pool shared across processes would need a cross-process hand-off for a
  few keypairs. An import token created in one process is used by any process afterwards (the
  private key is a token object found by its id).
- **Owned, by a process, not a slot.** A pool draws an owner id unique to its process when it is
  built (`new_owner`) and names its keypairs `pool-o<owner>-<hex>` (label
  `hsmbridge-import-pool-o<owner>-<hex>`). Worker slots (the scheme before) are not unique:
  a second daemon on the same token, a replica on another host, or a restarted worker all have
  "worker 0", and one of them destroyed the live daemon's pool at start-up (issue 15).
- **Taken = claimed.** When a keypair is handed to an import token it is relabelled
  `hsmbridge-import-token-…` (`claim_import_keypair`; its CKA_ID, the token's `hsm_object_id`,
  stays). From then on it is an import keypair like any other, destroyed when its token is
  replaced or expires (`ImportTokenService.sweep_expired`), and no pool cleanup of any process
  can mistake it for an unused pooled keypair — whichever store that process reads.
- **"Provably gone" is a lease on the token.** An owner keeps a lease: a private data object on
  the token whose label carries an expiry in wall-clock seconds (`LEASE_SECONDS` = 120 s ahead),
  renewed every `RENEW_EVERY` (30 s) by a small thread, and written *before* the owner's first
  keypair exists. The token is what every process sharing keypairs shares — two daemons with
  their own SQLite stores on one token, replicas on several hosts in front of one network HSM —
  so the lease holds across hosts without any other coordination. A cleaner (every pool, at
  start-up and every `SWEEP_EVERY`) destroys a pooled keypair only when:
  1. its owner is not the cleaner itself, and
  2. the owner has no lease, or its lease expired more than `CLOCK_SKEW` (60 s) ago by the
     cleaner's clock (so hosts whose clocks disagree by less than that never misjudge), and
  3. no import token in the cleaner's store refers to it (a belt to the claim's braces).
  An owner id also names its host-and-pid-namespace scope, pid and process start time
  (`new_owner`): a cleaner in the same scope knows at once that an owner whose pid is free, or
  taken by a younger process, is gone (`locally_gone`) — so the worker the supervisor restarts
  after a `kill -9` destroys its predecessor's unused keypairs at start-up, without waiting for
  the lease. Other hosts and containers (another pid namespace) wait for the lease.
  The cleaner lists keypairs *before* it reads leases, so a keypair it saw was made while its
  owner's lease existed. An owner hands out pooled keypairs only while its lease has at least
  `HAND_OUT_MARGIN` (30 s) to run by its own clock; an owner that could not renew in time (an HSM
  outage longer than that) stops handing out, and when it renews after its lease lapsed (or finds
  it removed) it destroys its ready keypairs and starts over: a cleaner may have judged it gone.
  Expired leases whose keypairs are all gone are removed by the cleaner.
- **Keypairs from before owners** (`pool-w<slot>-…`) are never destroyed by this code: nothing
  proves their owner gone (an older version may still run on the token during an upgrade).
- **Shutdown.** `close()` stops the threads (waiting for a keygen in flight), destroys every
  unused keypair and then releases the lease, so a graceful stop leaves no pool objects behind.
- **Refill after a pause.** The refill starts `refill_delay` (0.25 s) after the last take, so the
  request that took a keypair finishes before a ≈1 s keygen competes with it for the CPU and the
  token (measured: creation p90 18 → 9 ms, max 58 → 11–36 ms with two workers).
- **Ageing.** A keypair older than `max_age` is destroyed rather than handed out, so a pool that is
  rarely used does not hand out keys generated long ago.

Backends without leases (the unit tests' fake) get a pool that never sweeps and always hands out.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from hsmbridge.core.backend import CryptoBackend
from hsmbridge.errors import HsmBridgeError, NotFound

log = logging.getLogger(__name__)

POOL_ID_PREFIX = "pool-"
#: `pool-o<owner>-<hex>`; the scheme before owners was `pool-w<slot>-<hex>`
OWNER_MARK = "o"
DEFAULT_MAX_AGE = 24 * 3600.0
LEASE_SECONDS = 120.0
RENEW_EVERY = 30.0
CLOCK_SKEW = 60.0
HAND_OUT_MARGIN = 30.0
SWEEP_EVERY = 600.0


def _proc_start(pid: int) -> int | None:
    """The start time (clock ticks since boot) of process `pid` in this pid namespace, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[19]) if len(fields) > 19 and fields[19].isdigit() else None


@functools.cache
def _local_scope() -> str | None:
    """This boot of this host and this pid namespace, hashed: two processes with the same scope
    can check each other's pids in /proc. None where there is no /proc (then leases alone)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    return hashlib.sha256(f"{boot} {namespace}".encode()).hexdigest()[:12]


def new_owner() -> str:
    """`<scope>.<pid>.<start>.<random>`: unique per process, and checkable by any process of the
    same host and pid namespace (`locally_gone`); random alone where /proc is missing."""
    scope, start = _local_scope(), _proc_start(os.getpid())
    if scope is None or start is None:
        return secrets.token_hex(8)
    return f"{scope}.{os.getpid()}.{start}.{secrets.token_hex(3)}"


def locally_gone(owner: str) -> bool:
    """True when `owner` names a process of this host and pid namespace that no longer runs (its
    pid is free or belongs to a process started at another time): gone now, no lease needed."""
    parts = owner.split(".")
    if len(parts) != 4 or parts[0] != _local_scope() or not (parts[1].isdigit() and parts[2].isdigit()):
        return False
    return _proc_start(int(parts[1])) != int(parts[2])


def owner_prefix(owner: str) -> str:
    return f"{POOL_ID_PREFIX}{OWNER_MARK}{owner}-"


def owner_of(object_id: str) -> str | None:
    """The owner named by a pooled keypair's id; None for ids of the scheme before owners."""
    if not object_id.startswith(POOL_ID_PREFIX + OWNER_MARK):
        return None
    owner, sep, rest = object_id[len(POOL_ID_PREFIX) + 1 :].partition("-")
    return owner if sep and rest and owner else None


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
    """Pre-generated import keypairs of one size for one process; see the module docstring."""

    def __init__(
        self,
        backend: CryptoBackend,
        *,
        size: int,
        bits: int = 4096,
        owner: str | None = None,
        max_age: float = DEFAULT_MAX_AGE,
        retry_delay: float = 5.0,
        refill_delay: float = 0.25,
        lease_seconds: float = LEASE_SECONDS,
        renew_every: float = RENEW_EVERY,
        sweep_every: float = SWEEP_EVERY,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self.size = size
        self.bits = bits
        self.owner = owner or new_owner()
        self.max_age = max_age
        self._retry_delay = retry_delay
        self._refill_delay = refill_delay
        self._lease_seconds = lease_seconds
        self._renew_every = renew_every
        self._sweep_every = sweep_every
        self._last_take_wall = float("-inf")
        self._clock = clock
        self._wall = wall_clock
        self._leased = hasattr(backend, "renew_pool_lease")
        #: wall-clock expiry of the lease last written (0: none yet)
        self._lease_expires = 0.0
        self._in_use: Callable[[], Iterable[str]] = lambda: ()
        self._ready: deque[PooledKeypair] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._taken = 0
        self._misses = 0
        self._generated = 0
        self._orphans_destroyed = 0

    # -- ownership -----------------------------------------------------------------------------------

    def owns(self, object_id: str) -> bool:
        return owner_of(object_id) == self.owner

    def _lease_valid(self) -> bool:
        return not self._leased or self._wall() < self._lease_expires - HAND_OUT_MARGIN

    def renew(self) -> None:
        """Write the lease `lease_seconds` ahead. If it had lapsed (or a cleaner removed it),
        the ready keypairs may have been judged orphans and destroyed: drop them all."""
        if not self._leased:
            return
        now = self._wall()
        expires = now + self._lease_seconds
        existed = self._backend.renew_pool_lease(self.owner, int(expires))  # type: ignore[attr-defined]
        with self._cond:
            lapsed = self._lease_expires > 0 and (not existed or now >= self._lease_expires)
            self._lease_expires = float(int(expires))
            dropped, self._ready = (list(self._ready), deque()) if lapsed else ([], self._ready)
            self._cond.notify_all()
        if lapsed:
            log.warning(
                "import keypair pool: the lease had lapsed; dropping %d ready keypair(s)", len(dropped)
            )
            for keypair in dropped:
                self._destroy_quietly(keypair.object_id)

    def destroy_orphans(self, in_use: Iterable[str]) -> int:
        """Destroy the pooled keypairs whose owner is provably gone and that no stored import
        token refers to (see the module docstring); return how many."""
        find = getattr(self._backend, "find_import_keypairs", None)
        leases_of = getattr(self._backend, "pool_leases", None)
        if find is None or leases_of is None:
            return 0
        found = find(POOL_ID_PREFIX)  # first the keypairs, then the leases: see the docstring
        leases: dict[str, int] = leases_of()
        now = self._wall()
        keep = set(in_use)

        def gone(owner: str | None) -> bool:
            if owner is None or owner == self.owner:
                return False
            expires = leases.get(owner)
            return expires is None or expires + CLOCK_SKEW < now or locally_gone(owner)

        orphans = [oid for oid in found if gone(owner_of(oid)) and oid not in keep]
        for object_id in orphans:
            self._destroy_quietly(object_id)
        remaining = {owner_of(oid) for oid in found if oid not in orphans}
        for owner in [o for o in leases if gone(o) and o not in remaining]:
            try:
                self._backend.release_pool_lease(owner)  # type: ignore[attr-defined]
            except HsmBridgeError as exc:
                log.warning("could not remove the expired pool lease of %s: %s", owner, exc.reason)
        if orphans:
            log.info("destroyed %d unused pooled import keypair(s) of owners that are gone", len(orphans))
        self._orphans_destroyed += len(orphans)
        return len(orphans)

    def start(self, in_use: Callable[[], Iterable[str]] | None = None) -> None:
        """Take the lease, then start the background refill and the lease keeper. `in_use` lists
        the object ids stored import tokens refer to, for the periodic sweep."""
        if in_use is not None:
            self._in_use = in_use
        if self._threads:
            return
        if self.size > 0:
            try:
                self.renew()  # before any keypair of this owner exists
            except HsmBridgeError as exc:
                log.warning("import keypair pool: no lease yet (%s); retrying in the background", exc.reason)
            self._spawn(self._refill, "hsmbridge-keypair-pool")
        if self._leased:
            self._spawn(self._keep_lease, "hsmbridge-keypair-pool-lease")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- use ---------------------------------------------------------------------------------------

    def take(self, bits: int) -> PooledKeypair | None:
        """A ready keypair of `bits`, claimed for an import token, or None (the caller generates
        one inline)."""
        stale: list[PooledKeypair] = []
        found: PooledKeypair | None = None
        with self._cond:
            if bits == self.bits and not self._closed and self._lease_valid():
                now = self._clock()
                while self._ready:
                    candidate = self._ready.popleft()
                    if now - candidate.created > self.max_age:
                        stale.append(candidate)
                        continue
                    found = candidate
                    break
            self._last_take_wall = time.monotonic()
            self._cond.notify_all()
        for keypair in stale:
            self._destroy_quietly(keypair.object_id)
        if found is not None and not self._claim(found):
            found = None
        with self._cond:
            if found is None:
                self._misses += 1
            else:
                self._taken += 1
        return found

    def _claim(self, keypair: PooledKeypair) -> bool:
        claim = getattr(self._backend, "claim_import_keypair", None)
        if claim is None:
            return True
        try:
            claim(keypair.object_id)
        except NotFound:
            return False  # gone from the token: nothing to keep
        except HsmBridgeError as exc:
            # still unclaimed and ours (the HSM is down, say): keep it for the next take
            log.warning("import keypair pool: could not claim a keypair (%s)", exc.reason)
            with self._cond:
                if not self._closed:
                    self._ready.appendleft(keypair)
                    return False
            self._destroy_quietly(keypair.object_id)
            return False
        return True

    def give_back(self, keypair: PooledKeypair) -> None:
        """A taken keypair whose token could not be stored: it was claimed, so it is destroyed."""
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

    # -- background --------------------------------------------------------------------------------

    def _keep_lease(self) -> None:
        """Renew every `renew_every`; sweep for orphans every `sweep_every`."""
        next_sweep = self._clock() + self._sweep_every
        while True:
            with self._cond:
                if self._cond.wait_for(lambda: self._closed, self._renew_every):
                    return
            try:
                if self.size > 0:
                    self.renew()
                if self._clock() >= next_sweep:
                    next_sweep = self._clock() + self._sweep_every
                    self.destroy_orphans(self._in_use())
            except HsmBridgeError as exc:
                log.warning("import keypair pool: lease renewal or sweep failed (%s)", exc.reason)
            except Exception as exc:  # never let the lease die silently
                log.error("import keypair pool: unexpected %s in the lease keeper", type(exc).__name__)

    def _refill(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closed or (len(self._ready) < self.size and self._lease_valid()),
                    self._retry_delay,
                )
                if not self._closed and (len(self._ready) >= self.size or not self._lease_valid()):
                    continue
                # Let the request that just took a keypair finish first: a keygen started at once
                # competes with it for the CPU and the token (its p99 doubled in benchmarks).
                while not self._closed:
                    quiet = self._refill_delay - (time.monotonic() - self._last_take_wall)
                    if quiet <= 0:
                        break
                    self._cond.wait(quiet)
                if self._closed:
                    return
            object_id = f"{owner_prefix(self.owner)}{uuid.uuid4().hex}"
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
        """Stop the threads (a keygen in flight finishes first), destroy every unused keypair,
        then give up the lease."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        with self._cond:
            unused, self._ready = list(self._ready), deque()
        for keypair in unused:
            self._destroy_quietly(keypair.object_id)
        if self._leased and self._lease_expires > 0:
            try:
                self._backend.release_pool_lease(self.owner)  # type: ignore[attr-defined]
            except HsmBridgeError as exc:
                log.warning("could not release the import keypair pool lease: %s", exc.reason)

    def _destroy_quietly(self, object_id: str) -> None:
        try:
            self._backend.destroy_import_keypair(object_id)
        except HsmBridgeError as exc:
            log.warning("could not destroy pooled import keypair %s: %s", object_id, exc.reason)
