"""An HSM group in a real daemon: `[[hsm.tokens]]` in its configuration, a gRPC client generated
from protos/, and the Prometheus endpoint. GetHsmInfo and the metrics show each token's health
while one token is out and after it returns, and the client's keys work throughout."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from daemon import Daemon

from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc, hsm_pb2, hsm_pb2_grpc, keys_pb2, keys_pb2_grpc

pytestmark = pytest.mark.softhsm
pytest_plugins = ("failover_fixtures",)
TENANT = (("x-hsmbridge-tenant", "failover-tenant"),)

GROUP_CONFIG = """\
[hsm]
kek_label = "failover-kek"
health_interval = 0.1
recovery_interval = 0.5

[[hsm.tokens]]
token_label = "failover-a"

[[hsm.tokens]]
token_label = "failover-b"
"""


@pytest.fixture
def group_daemon(group_members: object, softhsm_token: dict[str, str], tmp_path: Path) -> Iterator[Daemon]:
    config = tmp_path / "hsmbridge.toml"
    config.write_text(GROUP_CONFIG)
    d = Daemon(softhsm_token, tmp_path, HSMBRIDGE_CONFIG=str(config))
    d.start()
    yield d
    if d.proc and d.proc.poll() is None:
        d.stop()


def tokens(stub: hsm_pb2_grpc.HsmServiceStub) -> dict[str, tuple[str, bool]]:
    info = stub.GetHsmInfo(hsm_pb2.GetHsmInfoRequest(), metadata=TENANT)
    return {t.name: (t.state, t.active) for t in info.tokens}


def metric(d: Daemon, name: str, token: str) -> float:
    text = urllib.request.urlopen(d.metrics_url, timeout=10).read().decode()
    prefix = f'{name}{{token="{token}"}} '
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(line[len(prefix) :])


def until(predicate: Callable[[], bool], timeout: float) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(0.05)


def test_hsm_info_and_metrics_follow_a_token_out_and_back(
    group_daemon: Daemon, token_outage: Callable[[str], AbstractContextManager[None]]
) -> None:
    channel = group_daemon.channel()
    hsm = hsm_pb2_grpc.HsmServiceStub(channel)
    keys = keys_pb2_grpc.KeyServiceStub(channel)
    crypto = crypto_pb2_grpc.CryptoServiceStub(channel)

    info = hsm.GetHsmInfo(hsm_pb2.GetHsmInfoRequest(), metadata=TENANT)
    assert [(t.name, t.state, t.active) for t in info.tokens] == [
        ("failover-a", "up", True),
        ("failover-b", "up", False),
    ]
    assert info.tokens[0].kek_check == info.tokens[1].kek_check != ""
    assert info.token_label == "failover-a" and info.capabilities.aes_gcm
    assert metric(group_daemon, "hsmbridge_hsm_token_up", "failover-a") == 1

    root = keys.CreateKey(keys_pb2.CreateKeyRequest(name="group-root"), metadata=TENANT)
    before = crypto.Wrap(crypto_pb2.WrapRequest(key_id=root.id, plaintext=b"before"), metadata=TENANT)

    with token_outage("failover-a"):
        # A request that needs the token (a new key wrapped under the KEK) notices at once.
        other = keys.CreateKey(keys_pb2.CreateKeyRequest(name="during-outage"), metadata=TENANT)
        until(lambda: tokens(hsm) == {"failover-a": ("down", False), "failover-b": ("up", True)}, 5)
        during = crypto.Wrap(crypto_pb2.WrapRequest(key_id=other.id, plaintext=b"during"), metadata=TENANT)
        opened = crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=root.id, ciphertext=before.ciphertext), metadata=TENANT
        )
        assert opened.plaintext == b"before"
        assert metric(group_daemon, "hsmbridge_hsm_token_up", "failover-a") == 0
        assert metric(group_daemon, "hsmbridge_hsm_token_active", "failover-b") == 1

    until(lambda: tokens(hsm)["failover-a"] == ("up", True), 15)
    assert metric(group_daemon, "hsmbridge_hsm_token_failures_total", "failover-a") == 1
    # What was made on the second token opens on the first.
    opened = crypto.Unwrap(
        crypto_pb2.UnwrapRequest(key_id=other.id, ciphertext=during.ciphertext), metadata=TENANT
    )
    assert opened.plaintext == b"during"


def test_init_puts_one_kek_on_every_token_of_a_softhsm_group_and_hsm_info_shows_them(tmp_path: Path) -> None:
    """`hsmbridge init --softhsm` with a group configuration, in a fresh directory, as a developer
    runs it: both tokens created, one KEK imported into both (equal check values)."""
    import json
    import os
    import subprocess
    import sys

    config = tmp_path / "hsmbridge.toml"
    config.write_text(GROUP_CONFIG)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HSMBRIDGE_") and k != "SOFTHSM2_CONF"}

    def hsmbridge(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "hsmbridge.cli", "--config", str(config), *args],
            cwd=tmp_path,
            env=environ,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    init = hsmbridge("init", "--softhsm")
    assert init.returncode == 0, init.stderr
    assert "imported one new master KEK 'failover-kek' into 2 tokens" in init.stdout
    checks = [line.rsplit(" ", 1)[1] for line in init.stdout.splitlines() if "master KEK check value" in line]
    assert len(checks) == 2 and checks[0] == checks[1]
    again = hsmbridge("init", "--softhsm")
    assert again.returncode == 0 and "imported" not in again.stdout, again.stderr
    info = hsmbridge("hsm-info", "--json")
    assert info.returncode == 0, info.stderr
    tokens = json.loads(info.stdout)["tokens"]
    assert [(t["name"], t["state"], t["kek_check"]) for t in tokens] == [
        ("failover-a", "up", checks[0]),
        ("failover-b", "up", checks[0]),
    ]
    pin = (tmp_path / "var" / "softhsm" / "pin").read_text()
    assert pin not in init.stdout + init.stderr + info.stdout + info.stderr
