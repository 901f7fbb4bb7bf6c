"""The PKCS#11 module is initialised with CKF_OS_LOCKING_OK, and that makes threads safe.

These guard the one place hsmbridge leans on python-pkcs11 internals: if an upgrade changes how
the module is loaded or initialised, they fail loudly instead of the daemon crashing under load.
"""

from __future__ import annotations

import os
import random
import threading
from importlib.metadata import version

import pytest

from hsmbridge.core.backend import KeyRef, MaterialKind
from hsmbridge.hsm.backend import Pkcs11Backend
from hsmbridge.hsm.library import Pkcs11Library

pytestmark = [pytest.mark.softhsm, pytest.mark.any_hsm]


def test_python_pkcs11_is_the_pinned_version() -> None:
    # library.py relies on python-pkcs11 resolving the function list at load time and calling
    # the overridable `initialize()` from lib.__init__ (and nothing else that needs an initialised
    # module but C_GetInfo); re-check both before moving the pin in pyproject.toml.
    assert version("python-pkcs11") == "0.10.1"


def test_the_module_is_initialised_by_us_and_shared_per_path(hsm_backend: Pkcs11Backend) -> None:
    library = Pkcs11Library.load(hsm_backend.settings.module, hsm_backend.settings.init_args)
    assert library is hsm_backend.library
    assert library.is_initialized_by_us()  # a second C_Initialize is refused: ours is in force
    assert not library.lib.initialized  # python-pkcs11 never called C_Initialize(NULL) itself


@pytest.mark.slow
def test_eight_threads_of_mixed_gcm_and_unwrap_run_clean(hsm_settings, hsm_backend) -> None:  # type: ignore[no-untyped-def]
    """8 threads × 5,000 operations: GCM encrypt/decrypt on cached keys, and, through a cache far
    smaller than the key set, constant C_UnwrapKey loads and destroys. Without OS locking SoftHSM2
    crashes the process within the first few hundred operations."""
    from dataclasses import replace

    backend = Pkcs11Backend(replace(hsm_settings, cache_size=4, pool_size=8))
    try:
        refs = [KeyRef(f"stress-{i}", backend.generate_key(MaterialKind.AES, 32)) for i in range(16)]
        errors: list[BaseException] = []
        done = [0] * 8

        def worker(n: int) -> None:
            rng = random.Random(n)
            try:
                for _ in range(5000):
                    ref = refs[rng.randrange(len(refs))]
                    data = os.urandom(rng.randrange(1, 64))
                    iv, ct = backend.gcm_encrypt(ref, data, b"aad-%d" % n)
                    assert bytes(backend.gcm_decrypt(ref, iv, ct, b"aad-%d" % n)) == data
                    done[n] += 1
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert sum(done) == 40_000
        assert backend.cache.evictions > 0  # the unwrap path really ran, many times
    finally:
        backend.close()
