"""The operator CLI (`hsmbridge keys|wrap|unwrap|import-token`) against a real daemon on SoftHSM2.

Commands run through `hsmbridge.cli.main` in this process (as the console script would, reading
HSMBRIDGE_GRPC_ADDRESS and KP_INSTANCE from the environment) and talk gRPC to a `hsmbridge serve`
subprocess; one README example runs as printed, in a shell. Each test uses its own tenant.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from daemon import Daemon

from hsmbridge.client import Client
from hsmbridge.v1 import keys_pb2

if TYPE_CHECKING:
    from ops_fixtures import Hsmbridge

pytest_plugins = ("ops_fixtures",)
pytestmark = pytest.mark.softhsm

PROPAGATION_TENANT = "ops-propagation"


@pytest.fixture(scope="module", autouse=True)
def disabled_early(daemon: Daemon) -> None:
    """Disabled now, enabled by the last test: Key Protect's 30 s propagation rule runs out while
    the other tests run instead of in a wait of its own."""
    client = Client(daemon.address, PROPAGATION_TENANT)
    try:
        key = client.keys.CreateKey(
            keys_pb2.CreateKeyRequest(name="later", aliases=["later"]), metadata=client.metadata
        )
        request = keys_pb2.SetKeyStateRequest(key_id=key.id, state=keys_pb2.KEY_STATE_SUSPENDED)
        client.keys.SetKeyState(request, metadata=client.metadata)
    finally:
        client.close()


def test_keys_create_list_get_rotate_versions_delete(hsmbridge: Hsmbridge) -> None:
    created = hsmbridge("keys", "create", "payments-root", "--alias", "payments", "--description", "orders")
    assert created.code == 0, created.err
    assert "payments-root" in created.out
    assert "active" in created.out
    key = hsmbridge("keys", "get", "payments", "--json").json()
    assert key["name"] == "payments-root"
    assert key["aliases"] == ["payments"]
    assert key["state"] == "KEY_STATE_ACTIVE"
    assert key["current_version"]["number"] == 1

    hsmbridge("keys", "create", "second")
    listed = hsmbridge("keys", "list")
    assert listed.code == 0
    assert key["id"] in listed.out  # never folded: a pipe gets whole lines
    assert "2 key(s)" in listed.out
    assert hsmbridge("keys", "list", "--json").json()["total"] == 2
    assert hsmbridge("keys", "list", "--limit", "1", "--json").json()["keys"][0]["name"] in (
        "second",
        "payments-root",
    )

    rotated = hsmbridge("keys", "rotate", "payments", "--json").json()
    assert rotated["current_version"]["number"] == 2
    versions = hsmbridge("keys", "versions", "payments")
    assert versions.code == 0
    assert rotated["current_version"]["id"] in versions.out
    assert [v["number"] for v in hsmbridge("keys", "versions", "payments", "--json").json()["versions"]] == [
        2,
        1,
    ]

    deleted = hsmbridge("keys", "delete", "payments", "--json").json()
    assert deleted["state"] == "KEY_STATE_DESTROYED"
    assert hsmbridge("keys", "list", "--state", "destroyed", "--json").json()["total"] == 1


def test_wrap_and_unwrap(hsmbridge: Hsmbridge, tmp_path: Path) -> None:
    hsmbridge("keys", "create", "root", "--alias", "root")
    wrapped = hsmbridge("wrap", "root", "--aad", "orders", "--json").json()
    assert len(base64.b64decode(wrapped["plaintext"])) == 32  # the HSM made the data key
    unwrapped = hsmbridge("unwrap", "root", wrapped["ciphertext"], "--aad", "orders", "--json").json()
    assert unwrapped["plaintext"] == wrapped["plaintext"]

    people = hsmbridge("wrap", "root")
    assert people.code == 0
    assert "ciphertext" in people.out
    assert "plaintext" in people.out

    dek = bytes(range(32))
    (tmp_path / "dek").write_bytes(dek)
    mine = hsmbridge("wrap", "root", "--plaintext-file", str(tmp_path / "dek"), "--json").json()
    assert "plaintext" not in mine
    back = hsmbridge("unwrap", "root", mine["ciphertext"])
    assert base64.b64encode(dek).decode() in back.out

    # after a rotation, unwrap also hands back the ciphertext under the new version
    hsmbridge("keys", "rotate", "root")
    again = hsmbridge("unwrap", "root", mine["ciphertext"], "--json").json()
    assert again["rewrapped_ciphertext"]
    assert again["rewrapped_key_version_id"] != again["key_version_id"]


def test_server_refusals_exit_non_zero_with_the_reason(hsmbridge: Hsmbridge) -> None:
    missing = hsmbridge("keys", "get", "no-such-key")
    assert missing.code == 1
    assert missing.err.strip() == "hsmbridge: NOT_FOUND KEY_NOT_FOUND: Key does not exist"
    as_json = hsmbridge("keys", "get", "no-such-key", "--json")
    assert as_json.code == 1
    assert json.loads(as_json.err) == {
        "error": {"code": "NOT_FOUND", "reason": "KEY_NOT_FOUND", "message": "Key does not exist"}
    }
    hsmbridge("keys", "create", "tamper", "--alias", "tamper")
    wrapped = hsmbridge("wrap", "tamper", "--aad", "right", "--json").json()
    tampered = hsmbridge("unwrap", "tamper", wrapped["ciphertext"], "--aad", "wrong")
    assert tampered.code == 1
    assert "INTEGRITY_CHECK_FAILED" in tampered.err
    assert wrapped["plaintext"] not in tampered.out + tampered.err
    assert hsmbridge("unwrap", "tamper", "not base64!").code == 2
    bad_expiry = hsmbridge("keys", "create", "x", "--expires", "tomorrow")
    assert bad_expiry.code == 2
    assert "ISO 8601" in bad_expiry.err
    for run in (missing, tampered, bad_expiry):
        assert "Traceback" not in run.err


def test_disable_refuses_wrap_and_enable_waits_for_propagation(hsmbridge: Hsmbridge) -> None:
    hsmbridge("keys", "create", "pausable", "--alias", "pausable")
    assert hsmbridge("keys", "disable", "pausable", "--json").json()["state"] == "KEY_STATE_SUSPENDED"
    refused = hsmbridge("wrap", "pausable")
    assert refused.code == 1
    assert "FAILED_PRECONDITION INVALID_STATE" in refused.err
    early = hsmbridge("keys", "enable", "pausable")  # Key Protect's 30 s propagation rule
    assert early.code == 1
    assert "TOO_EARLY" in early.err


def test_connection_problems_are_one_line(hsmbridge: Hsmbridge, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KP_INSTANCE")
    no_tenant = hsmbridge("keys", "list")
    assert no_tenant.code == 2
    assert "--tenant" in no_tenant.err
    down = hsmbridge("keys", "list", "--tenant", "t", "--address", "127.0.0.1:1", "--timeout", "5")
    assert down.code == 1
    assert down.err.startswith("hsmbridge: UNAVAILABLE")
    monkeypatch.setenv("HSMBRIDGE_TOKEN", "not-a-token")  # the dev server knows no gRPC tokens
    refused = hsmbridge("keys", "list", "--tenant", "t")
    assert refused.code == 1
    assert "UNAUTHENTICATED" in refused.err
    assert "not-a-token" not in refused.err


def test_import_token_create_and_get(hsmbridge: Hsmbridge, tmp_path: Path) -> None:
    created = hsmbridge(
        "import-token", "create", "--max-retrievals", "1", "--key-bits", "2048", "--json"
    ).json()
    assert created["max_retrievals"] == 1
    pem = tmp_path / "token.pem"
    got = hsmbridge("import-token", "get", "--pem-out", str(pem))
    assert got.code == 0
    assert "0 of 1 left" in got.out
    assert load_pem_public_key(pem.read_bytes()).key_size == 2048  # type: ignore[union-attr]
    spent = hsmbridge("import-token", "get")
    assert spent.code == 1
    assert "IMPORT_TOKEN_EXPIRED" in spent.err
    assert "retrievals are used up" in spent.err


def test_create_with_material_imports_it(hsmbridge: Hsmbridge, tmp_path: Path) -> None:
    material = tmp_path / "material"
    material.write_bytes(bytes(range(100, 132)))
    key = hsmbridge(
        "keys", "create", "byok", "--alias", "byok", "--material-file", str(material), "--json"
    ).json()
    assert key["imported"] is True
    wrapped = hsmbridge("wrap", "byok", "--json").json()
    assert (
        hsmbridge("unwrap", "byok", wrapped["ciphertext"], "--json").json()["plaintext"]
        == wrapped["plaintext"]
    )


README = Path(__file__).resolve().parent.parent / "README.md"


def readme_cli_examples() -> list[str]:
    """The README's Operator CLI shell blocks, as printed."""
    section = README.read_text().split("## Operator CLI", 1)[1].split("\n## ", 1)[0]
    return [block.split("\n", 1)[1] for block in section.split("```")[1::2] if block.startswith("sh\n")]


def test_the_readme_examples_as_printed(daemon: Daemon, tmp_path: Path) -> None:
    """Both blocks in bash, with the dev banner's variables; only the first line (where the
    `hsmbridge` function finds the command) points at this interpreter instead of .venv/bin."""
    first, second = readme_cli_examples()
    assert first.startswith("hsmbridge() { .venv/bin/hsmbridge")
    script = "\n".join(
        [
            "set -euo pipefail",
            f'hsmbridge() {{ {sys.executable} -m hsmbridge.cli "$@"; }}',
            first.split("\n", 1)[1],
            second,
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HSMBRIDGE_", "KP_"))}
    env.update(HSMBRIDGE_GRPC_ADDRESS=daemon.address, KP_INSTANCE=f"readme-{uuid.uuid4()}")
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "1 key(s)" in result.stdout
    assert "suspended" in result.stdout  # the last line disabled the key
    assert (tmp_path / "token.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    rewrapped = [json.loads(line) for line in (tmp_path / "rewrapped.jsonl").read_text().splitlines()]
    assert [line["ok"] for line in rewrapped] == [True]
    assert "rewrapped 0, failed 0 (resumed after 1)" in result.stderr


def test_enable_after_propagation(hsmbridge: Hsmbridge) -> None:
    """The key the fixture disabled, enabled once Key Protect's 30 s rule allows it (the last
    test of the module, so that time has mostly passed; the deadline is a functional one)."""
    deadline = time.monotonic() + 120
    while True:
        enabled = hsmbridge("keys", "enable", "later", "--tenant", PROPAGATION_TENANT, "--json")
        if enabled.code == 0 or time.monotonic() > deadline:
            break
        assert "TOO_EARLY" in enabled.err
        time.sleep(1)
    assert enabled.code == 0, enabled.err
    assert enabled.json()["state"] == "KEY_STATE_ACTIVE"
