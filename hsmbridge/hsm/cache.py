"""A bounded LRU of unwrapped root-key versions, keyed by key-version id.

Why: unwrapping a stored key version costs ≈100 µs on SoftHSM2 (≈9,800/s) against ≈16 µs for the
GCM call itself; without the cache every request pays the unwrap. The entries are HSM session
objects (non-extractable, sensitive); evicting one means destroying it, which the caller does
(under the login-session lock), so this class stays pure bookkeeping.

Counters are plain integers read at scrape time by the metrics collector: nothing on the hot path
beyond a dict move.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

#: Process-wide, so that two backends sharing one module never label two objects alike.
_LOAD_IDS = itertools.count(1)


@dataclass(eq=False, slots=True)
class CachedKey:
    version_id: str
    load_id: int
    obj: Any  # the object as seen from the login session that owns it
    #: the session pool's epoch it was loaded in (`SessionPool.epoch`): its object belongs to that
    #: epoch's login session, and died with it when the pool was rebuilt (re-initialisation)
    epoch: int = 0
    #: operations using it now; an evicted entry is destroyed only when this reaches zero
    users: int = 0
    retired: bool = False

    @property
    def cka_id(self) -> bytes:
        return cka_id_for(self.load_id)


def cka_id_for(load_id: int) -> bytes:
    return b"hsmbridge-use:" + load_id.to_bytes(8, "big")


def next_load_id() -> int:
    return next(_LOAD_IDS)


class HandleCache:
    """LRU with reference counts.

    Every method that drops entries returns those the caller must destroy *now* (retired and
    unused); an entry retired while an operation uses it is returned by that operation's
    `release()` instead. So no thread ever has its key object destroyed under it, however hard
    the cache thrashes.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the handle cache needs room for at least one key")
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedKey] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def acquire(self, version_id: str, epoch: int, *, count_miss: bool = True) -> CachedKey | None:
        """Take a reference on the cached entry; `count_miss=False` for a loader's double-check."""
        with self._lock:
            entry = self._entries.get(version_id)
            if entry is None or entry.epoch != epoch:
                self.misses += count_miss
                return None
            self._entries.move_to_end(version_id)
            entry.users += 1
            self.hits += 1
            return entry

    def peek(self, version_id: str, epoch: int) -> CachedKey | None:
        with self._lock:
            entry = self._entries.get(version_id)
            return entry if entry is not None and entry.epoch == epoch else None

    def _retire(self, entry: CachedKey) -> bool:
        entry.retired = True
        self.evictions += 1
        return entry.users == 0

    def put_acquired(self, entry: CachedKey) -> list[CachedKey]:
        """Insert a freshly loaded entry already held by its loader; return entries to destroy."""
        doomed: list[CachedKey] = []
        with self._lock:
            entry.users += 1
            old = self._entries.pop(entry.version_id, None)
            if old is not None and self._retire(old):
                doomed.append(old)
            self._entries[entry.version_id] = entry
            while len(self._entries) > self.capacity:
                victim = self._entries.popitem(last=False)[1]
                if self._retire(victim):
                    doomed.append(victim)
        return doomed

    def release(self, entry: CachedKey) -> bool:
        """True when the caller was the last user of a retired entry and must destroy it."""
        with self._lock:
            entry.users -= 1
            return entry.retired and entry.users == 0

    def pop(self, version_id: str) -> list[CachedKey]:
        with self._lock:
            entry = self._entries.pop(version_id, None)
            return [entry] if entry is not None and self._retire(entry) else []

    def clear(self) -> list[CachedKey]:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            return [e for e in entries if self._retire(e)]

    def __len__(self) -> int:
        return len(self._entries)
