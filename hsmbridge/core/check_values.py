"""Key check values of key versions, for hsmbridge's own APIs (and the cloud push's same-material
rule): operators compare material across systems without anyone revealing it.

A version's material never changes (a master KEK rotation rewraps the same bytes), so each value
is computed once in the HSM (`CryptoBackend.key_check_value`: AES-CMAC of a zero block, 3 bytes)
and cached per process. Standard keys (revealable secrets, not AES keys) have none.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from hsmbridge.core.backend import CryptoBackend, MaterialKind
from hsmbridge.core.model import KeyVersion


class CheckValues:
    def __init__(self, backend: CryptoBackend, capacity: int = 10_000) -> None:
        self._backend = backend
        self._capacity = capacity
        self._values: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, version: KeyVersion) -> str | None:
        """Upper-case hex, as vendors print it ("A1B2C3"); None for a standard key's secret."""
        if version.wrapped.kind != MaterialKind.AES:
            return None
        with self._lock:
            cached = self._values.get(version.id)
            if cached is not None:
                self._values.move_to_end(version.id)
                return cached
        value = self._backend.key_check_value(version.wrapped).hex().upper()
        with self._lock:
            self._values[version.id] = value
            while len(self._values) > self._capacity:
                self._values.popitem(last=False)
        return value
