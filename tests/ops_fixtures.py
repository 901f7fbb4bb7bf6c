"""Fixtures for the operator-CLI tests (`pytest_plugins = ("ops_fixtures",)`): one real
`hsmbridge serve` on the session's SoftHSM2 token per module, and `hsmbridge(*args)`, which runs
a command through `hsmbridge.cli.main` in this process with the environment the dev banner's
export lines give (HSMBRIDGE_GRPC_ADDRESS, and a fresh KP_INSTANCE per test: its own tenant)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from daemon import Daemon

from hsmbridge import cli

OPS_ENV = ("HSMBRIDGE_TENANT", "HSMBRIDGE_TOKEN", "HSMBRIDGE_GRPC_CA_FILE", "HSMBRIDGE_GRPC_ADDRESS")


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


Hsmbridge = Callable[..., Run]


@pytest.fixture(scope="module")
def daemon(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    """`hsm_backend` has created the master KEK on the session's token."""
    served = Daemon(softhsm_token, tmp_path_factory.mktemp("ops"))
    served.start()
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def tenant() -> str:
    return f"ops-{uuid.uuid4()}"


@pytest.fixture
def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Hsmbridge:
    """`run_cli(*args)`: one command, with none of the caller's HSMBRIDGE_* connection settings."""
    for name in OPS_ENV:
        monkeypatch.delenv(name, raising=False)

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture
def hsmbridge(daemon: Daemon, tenant: str, run_cli: Hsmbridge, monkeypatch: pytest.MonkeyPatch) -> Hsmbridge:
    """`run_cli` pointed at the module's daemon, as after pasting the dev banner's lines."""
    monkeypatch.setenv("HSMBRIDGE_GRPC_ADDRESS", daemon.address)
    monkeypatch.setenv("KP_INSTANCE", tenant)
    return run_cli
