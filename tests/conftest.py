"""Shared fixtures: one real token per test session, in a temp dir.

SoftHSM2 reads SOFTHSM2_CONF when the module is initialised, and the module is initialised once
per process, so the token directory is chosen here, at import time, before anything loads it.
Tests that need a fresh key space use a fresh tenant rather than a fresh token.

`--hsm nss` makes the session token (`hsm_settings`, `hsm_backend`) one of NSS's softoken
instead: `make test` runs the HSM-facing modules a second time that way (the second PKCS#11
implementation, docs/hsm.md). Tests of one implementation's own facts are marked
`only_on("softhsm2")` and are deselected on the other.
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
NSS_DIR = Path(tempfile.mkdtemp(prefix="hsmbridge-test-nss-"))


IMPLEMENTATIONS = ("softhsm2", "nss")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hsm",
        choices=IMPLEMENTATIONS,
        default="softhsm2",
        help="the PKCS#11 implementation of the session token (hsm_settings / hsm_backend)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    chosen = config.getoption("--hsm")
    keep, drop = [], []
    for item in items:
        marker = item.get_closest_marker("only_on")
        (drop if marker is not None and chosen not in marker.args else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SOFTHSM_DIR, ignore_errors=True)
    shutil.rmtree(NSS_DIR, ignore_errors=True)


def _pin_file(directory: Path) -> Path:
    """The session PIN in a 0600 file, as a daemon under test reads it (`hsm.pin_file`)."""
    pin_file = directory / "pin"
    pin_file.write_text(TOKEN_PIN)
    pin_file.chmod(0o600)
    return pin_file


@pytest.fixture(scope="session")
def hsm_implementation(pytestconfig: pytest.Config) -> str:
    return str(pytestconfig.getoption("--hsm"))


@pytest.fixture(scope="session")
def nss_token() -> dict[str, str]:
    """An NSS softoken database in a temp dir with a user PIN; the KEK comes with the backend."""
    from hsmbridge.hsm import nss

    module = nss.find_module()
    if module is None:
        pytest.fail("NSS's softoken is not installed (apt-get install libnss3); `make test` installs it")
    args = nss.init_args(NSS_DIR, TOKEN_LABEL)
    nss.init_token(module, args, TOKEN_LABEL, TOKEN_PIN)
    pin_file = _pin_file(NSS_DIR)
    return {
        "module": module,
        "label": TOKEN_LABEL,
        "pin": TOKEN_PIN,
        "pin_file": str(pin_file),
        "init_args": args,
        "dir": str(NSS_DIR),
    }


@pytest.fixture(scope="session")
def hsm_token(request: pytest.FixtureRequest, hsm_implementation: str) -> dict[str, str]:
    """The session token of the implementation under test (`--hsm`), for a daemon to serve;
    NSS's database is opened by both processes at once (SQLite locking)."""
    return request.getfixturevalue("nss_token" if hsm_implementation == "nss" else "softhsm_token")


@pytest.fixture(scope="session")
def softhsm_token() -> dict[str, str]:
    """A SoftHSM2 token with a user PIN; the master KEK is created by the first backend."""
    if MODULE is None:
        pytest.fail("SoftHSM2 is not installed (apt-get install softhsm2); `make test` installs it")
    if not softhsm.token_exists(SOFTHSM_CONF, TOKEN_LABEL):
        softhsm.init_token(SOFTHSM_CONF, TOKEN_LABEL, TOKEN_PIN)
    pin_file = _pin_file(SOFTHSM_DIR)
    return {
        "module": MODULE,
        "label": TOKEN_LABEL,
        "pin": TOKEN_PIN,
        "pin_file": str(pin_file),
        "conf": str(SOFTHSM_CONF),
        "dir": str(SOFTHSM_DIR),
    }


@pytest.fixture(scope="session")
def hsm_settings(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    from hsmbridge.hsm.backend import Pkcs11Settings

    token = request.getfixturevalue("hsm_token")
    return Pkcs11Settings(
        module=token["module"],
        init_args=token.get("init_args"),
        pin=token["pin"],
        token_label=token["label"],
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
