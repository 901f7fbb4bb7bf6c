"""`hsmbridge rewrap`: bulk rewrap through CryptoStream against a real daemon on SoftHSM2 — results
in input order as JSON lines, a bad item reported without stopping the others, a progress bar with
rate and ETA, and resuming after an interruption (a torn output file, and a real Ctrl-C)."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from daemon import Daemon

from hsmbridge.client import Client
from hsmbridge.v1 import crypto_pb2, keys_pb2

if TYPE_CHECKING:
    from ops_fixtures import Hsmbridge

pytest_plugins = ("ops_fixtures",)
pytestmark = pytest.mark.softhsm

AAD = "orders"


@dataclass
class Job:
    """Ciphertexts made under version 1 of `key`, which has since been rotated."""

    key: str
    new_version: str
    deks: list[bytes]
    ciphertexts: list[bytes]
    client: Client

    def unwrap_all(self, ciphertexts: list[bytes], aad: list[str]) -> list[bytes]:
        plaintexts: list[bytes] = []
        for start in range(0, len(ciphertexts), 500):
            request = crypto_pb2.UnwrapBatchRequest(
                key_id=self.key,
                items=[
                    crypto_pb2.UnwrapRequest(ciphertext=c, aad=aad) for c in ciphertexts[start : start + 500]
                ],
            )
            response = self.client.crypto.UnwrapBatch(request, metadata=self.client.metadata, timeout=60)
            plaintexts += [r.response.plaintext for r in response.results]
        return plaintexts


def make_job(daemon: Daemon, tenant: str, count: int) -> Job:
    client = Client(daemon.address, tenant)
    md = client.metadata
    key = client.keys.CreateKey(keys_pb2.CreateKeyRequest(name="bulk", aliases=["bulk"]), metadata=md)
    deks: list[bytes] = []
    ciphertexts: list[bytes] = []
    for start in range(0, count, 500):
        size = min(500, count - start)
        request = crypto_pb2.WrapBatchRequest(
            key_id=key.id, items=[crypto_pb2.WrapRequest(aad=[AAD]) for _ in range(size)]
        )
        for result in client.crypto.WrapBatch(request, metadata=md, timeout=60).results:
            deks.append(result.response.plaintext)
            ciphertexts.append(result.response.ciphertext)
    rotated = client.keys.RotateKey(keys_pb2.RotateKeyRequest(key_id=key.id), metadata=md)
    return Job(key.id, rotated.current_version.id, deks, ciphertexts, client)


def write_input(path: Path, ciphertexts: list[bytes]) -> None:
    path.write_text("".join(base64.b64encode(c).decode() + "\n" for c in ciphertexts))


def results(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_rewrapped(job: Job, lines: list[dict[str, object]], count: int) -> None:
    assert [line["index"] for line in lines] == list(range(count))
    assert all(line["ok"] for line in lines), [line for line in lines if not line["ok"]][:3]
    assert {line["rewrapped_key_version_id"] for line in lines} == {job.new_version}
    fresh = [base64.b64decode(str(line["ciphertext"])) for line in lines]
    assert job.unwrap_all(fresh, [AAD]) == job.deks[:count]


def test_rewrap_a_file(hsmbridge: Hsmbridge, daemon: Daemon, tenant: str, tmp_path: Path) -> None:
    job = make_job(daemon, tenant, 1200)
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    lines = [base64.b64encode(c).decode() for c in job.ciphertexts[:1000]]
    lines[10] = json.dumps({"ciphertext": lines[10], "aad": [AAD]})  # a JSON item with its own AAD
    lines.insert(500, "")  # blank lines are not items
    lines.append("this is not base64!")
    lines.append(
        json.dumps({"ciphertext": base64.b64encode(job.ciphertexts[1000]).decode(), "aad": ["other"]})
    )
    source.write_text("\n".join(lines) + "\n")

    run = hsmbridge("rewrap", "bulk", "--aad", AAD, "-i", str(source), "-o", str(out), "--batch-size", "128")
    assert run.code == 1  # two items failed; the others were all rewrapped
    written = results(out)
    assert len(written) == 1002
    check_rewrapped(job, written[:1000], 1000)
    assert written[1000] == {
        "index": 1000,
        "ok": False,
        "code": "INVALID_ARGUMENT",
        "reason": "",
        "message": "input line 1002: the ciphertext must be base64",
    }
    assert written[1001]["ok"] is False
    assert written[1001]["reason"] == "INTEGRITY_CHECK_FAILED"  # the daemon's verdict on the wrong AAD
    assert "1002/1002" in run.err  # the progress bar: done/total, rate, ETA
    assert "/s" in run.err
    assert "ETA" in run.err
    assert "rewrapped 1000, failed 2 into" in run.err

    again = hsmbridge("rewrap", "bulk", "-i", str(source), "-o", str(out))
    assert again.code == 2
    assert "--resume" in again.err
    assert len(results(out)) == 1002  # untouched


def test_resume_continues_a_torn_output(
    hsmbridge: Hsmbridge, daemon: Daemon, tenant: str, tmp_path: Path
) -> None:
    job = make_job(daemon, tenant, 900)
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    write_input(source, job.ciphertexts)
    assert hsmbridge("rewrap", "bulk", "--aad", AAD, "-i", str(source), "-o", str(out), "--json").code == 0
    complete = out.read_text().splitlines(keepends=True)
    # as if killed mid-write: 400 complete lines and half of the 401st
    out.write_text("".join(complete[:400]) + complete[400][:37])

    resumed = hsmbridge(
        "rewrap", "bulk", "--aad", AAD, "-i", str(source), "-o", str(out), "--resume", "--json"
    )
    assert resumed.code == 0, resumed.err
    summary = json.loads(resumed.out)
    assert (summary["rewrapped"], summary["failed"], summary["skipped"]) == (500, 0, 400)
    written = results(out)
    assert out.read_text().splitlines(keepends=True)[:400] == complete[:400]
    check_rewrapped(job, written, 900)


def test_ctrl_c_then_resume(daemon: Daemon, tenant: str, tmp_path: Path) -> None:
    """A real SIGINT while the job waits for more input on stdin, then --resume from the file."""
    job = make_job(daemon, tenant, 300)
    source, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    write_input(source, job.ciphertexts)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSMBRIDGE_")}
    env.update(HSMBRIDGE_GRPC_ADDRESS=daemon.address, KP_INSTANCE=tenant)
    command = [sys.executable, "-m", "hsmbridge.cli", "rewrap", "bulk", "--aad", AAD, "-o", str(out)]
    job_process = subprocess.Popen(
        [*command, "--batch-size", "50"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert job_process.stdin is not None
    job_process.stdin.write("".join(base64.b64encode(c).decode() + "\n" for c in job.ciphertexts[:100]))
    job_process.stdin.flush()
    deadline = time.monotonic() + 60  # a functional deadline: the first 100 results are written
    while (not out.exists() or out.read_text().count("\n") < 100) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.read_text().count("\n") == 100
    job_process.send_signal(signal.SIGINT)
    assert job_process.wait(timeout=30) == 130  # stdin still open: Ctrl-C alone ends it
    assert job_process.stderr is not None
    assert "interrupted after 100 item(s); run the same command with --resume" in job_process.stderr.read()
    job_process.stdin.close()

    resumed = subprocess.run(
        [*command, "-i", str(source), "--resume"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "rewrapped 200, failed 0 (resumed after 100)" in resumed.stderr
    check_rewrapped(job, results(out), 300)
