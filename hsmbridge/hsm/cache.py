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


@dataclass(frozen=True, slots=True)
class CachedKey:
    version_id: str
    load_id: int
    obj: Any  # the object as seen from the login session that owns it

    @property
    def cka_id(self) -> bytes:
        return cka_id_for(self.load_id)


def cka_id_for(load_id: int) -> bytes:
    return b"hsmbridge-use:" + load_id.to_bytes(8, "big")


def next_load_id() -> int:
    return next(_LOAD_IDS)


class HandleCache:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the handle cache needs room for at least one key")
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedKey] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, version_id: str) -> CachedKey | None:
        with self._lock:
            entry = self._entries.get(version_id)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(version_id)
            self.hits += 1
            return entry

    def peek(self, version_id: str) -> CachedKey | None:
        with self._lock:
            return self._entries.get(version_id)

    def put(self, entry: CachedKey) -> list[CachedKey]:
        """Insert; return what fell out (the caller destroys those objects)."""
        evicted: list[CachedKey] = []
        with self._lock:
            old = self._entries.pop(entry.version_id, None)
            if old is not None:
                evicted.append(old)
            self._entries[entry.version_id] = entry
            while len(self._entries) > self.capacity:
                evicted.append(self._entries.popitem(last=False)[1])
            self.evictions += len(evicted)
        return evicted

    def pop(self, version_id: str) -> CachedKey | None:
        with self._lock:
            entry = self._entries.pop(version_id, None)
            if entry is not None:
                self.evictions += 1
            return entry

    def clear(self) -> list[CachedKey]:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
            self.evictions += len(entries)
            return entries

    def __len__(self) -> int:
        return len(self._entries)
