"""Shared fixtures: one real SoftHSM2 token per test session, in a temp dir.

SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, and the module is initialised once
per process, so the token directory is chosen here, at import time, before anything loads it.
Tests that need a fresh key space use a fresh tenant rather than a fresh token.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hsmbridge import softhsm

SOFTHSM_DIR = Path(tempfile.mkdtemp(prefix="hsmbridge-test-softhsm-"))
SOFTHSM_CONF = softhsm.write_config(SOFTHSM_DIR)
os.environ["SOFTHSM2_CONF"] = str(SOFTHSM_CONF)
TOKEN_LABEL = "hsmbridge-test"
TOKEN_PIN = softhsm.new_pin()
MODULE = softhsm.find_module()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SOFTHSM_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def softhsm_token() -> dict[str, str]:
    """A SoftHSM2 token with a user PIN; the master KEK is created by the first backend."""
    if MODULE is None:
        pytest.fail("SoftHSM2 is not installed (apt-get install softhsm2); `make test` installs it")
    if not softhsm.token_exists(SOFTHSM_CONF, TOKEN_LABEL):
        softhsm.init_token(SOFTHSM_CONF, TOKEN_LABEL, TOKEN_PIN)
    pin_file = SOFTHSM_DIR / "pin"
    pin_file.write_text(TOKEN_PIN)
    pin_file.chmod(0o600)
    return {
        "module": MODULE,
        "label": TOKEN_LABEL,
        "pin": TOKEN_PIN,
        "pin_file": str(pin_file),
        "conf": str(SOFTHSM_CONF),
        "dir": str(SOFTHSM_DIR),
    }


@pytest.fixture(scope="session")
def hsm_settings(softhsm_token: dict[str, str]):  # type: ignore[no-untyped-def]
    from hsmbridge.hsm.backend import Pkcs11Settings

    return Pkcs11Settings(
        module=softhsm_token["module"],
        pin=softhsm_token["pin"],
        token_label=softhsm_token["label"],
        pool_size=8,
        cache_size=64,
        oaep_sha256_fallback=True,
        export_software_fallback=True,
    )


@pytest.fixture(scope="session")
def hsm_backend(hsm_settings) -> Iterator[object]:  # type: ignore[no-untyped-def]
    """The session-wide real backend (it owns the token login for the whole run)."""
    from hsmbridge.hsm.backend import Pkcs11Backend

    backend = Pkcs11Backend(hsm_settings, create_kek=True)
    yield backend
    backend.close()


@pytest.fixture
def tenant() -> str:
    return f"tenant-{uuid.uuid4()}"
