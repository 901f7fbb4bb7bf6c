"""An HSM group on SoftHSM2 for the failover tests; load with `pytest_plugins = ("failover_fixtures",)`.

Two tokens in the session's SoftHSM2 token directory (two slots of one module, as a Luna HA
group's members are slots of one library), holding one master KEK that `import_shared_kek` puts
on both — what `hsmbridge init --softhsm` does for a group. An outage is a token's directory moved
out of the token directory and back (as tests/test_hsm_recovery.py does for one token).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from hsmbridge import softhsm
from hsmbridge.hsm.backend import Pkcs11Settings
from hsmbridge.hsm.group import import_shared_kek
from hsmbridge.hsm.library import Pkcs11Library

GROUP_KEK = "failover-kek"
LABELS = ("failover-a", "failover-b")
#: a token the group's KEK was never put on (it gets a KEK of its own)
STRANGER = "failover-stranger"


def token_dir(softhsm_dir: str, label: str) -> Path:
    """SoftHSM2 names token directories by UUID; the label is in the token's own object file."""
    for path in (Path(softhsm_dir) / "tokens").iterdir():
        marker = path / "token.object"
        if marker.exists() and label.encode() in marker.read_bytes():
            return path
    raise LookupError(f"no SoftHSM2 token directory for {label!r}")


@contextmanager
def outage(softhsm_dir: str, label: str) -> Iterator[None]:
    """The token is gone for the duration of the block (moved out of the token directory)."""
    path = token_dir(softhsm_dir, label)
    aside = Path(softhsm_dir) / "outage" / path.name
    aside.parent.mkdir(exist_ok=True)
    shutil.move(path, aside)
    try:
        yield
    finally:
        shutil.move(aside, path)


@pytest.fixture(scope="module")
def group_members(softhsm_token: dict[str, str], hsm_backend: object) -> Iterator[list[Pkcs11Settings]]:
    """Settings of the two member tokens (`hsm_backend` first: it owns the session token's login,
    and this re-initialises the module it shares). The tokens are deleted after the module, so
    tests that look for the session token's directory (test_hsm_recovery.py) find only it."""
    conf = Path(softhsm_token["conf"])
    for label in (*LABELS, STRANGER):
        if not softhsm.token_exists(conf, label):
            softhsm.init_token(conf, label, softhsm_token["pin"])
    base = Pkcs11Settings(
        module=softhsm_token["module"],
        pin=softhsm_token["pin"],
        kek_label=GROUP_KEK,
        pool_size=4,
        cache_size=64,
        oaep_sha256_fallback=True,
    )
    members = [replace(base, token_label=label) for label in LABELS]
    # SoftHSM2 sees tokens created after C_Initialize only after the next one.
    library = Pkcs11Library.load(base.module)
    library.reinitialize(library.generation, drain_timeout=10)
    import_shared_kek(members)
    yield members
    for label in (*LABELS, STRANGER):
        shutil.rmtree(token_dir(softhsm_token["dir"], label))
    library.reinitialize(library.generation, drain_timeout=10)


@pytest.fixture
def token_outage(softhsm_token: dict[str, str]) -> Callable[[str], AbstractContextManager[None]]:
    """`with token_outage(label):` — that token is unavailable inside the block."""
    return lambda label: outage(softhsm_token["dir"], label)
