"""`hsmbridge serve --workers 2` as a real subprocess: both workers serve the shared gRPC and REST
ports, the supervisor never loads the PKCS#11 module, a worker killed with -9 is restarted (and
counted) while traffic goes on, SIGTERM stops everything with status 0, and the token holds the
same objects afterwards as before (pooled keypairs destroyed, nothing leaked).

Waits are bounded so a broken supervisor fails instead of hanging; no timing is asserted.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import pytest
from daemon import DEV_TOKEN, Daemon
from prometheus_client.parser import text_string_to_metric_families

from hsmbridge.hsm.backend import Pkcs11Backend
from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc, keys_pb2, keys_pb2_grpc

pytestmark = pytest.mark.softhsm

TENANT = "workers-tenant"
MD = (("x-hsmbridge-tenant", TENANT),)
T = TypeVar("T")


def token_objects(backend: Pkcs11Backend) -> set[tuple[str, bytes]]:
    """(label, id) of every token object, as any process sees them (SoftHSM2 re-reads the disk)."""
    from pkcs11 import Attribute

    with backend.pool.checkout() as pooled:
        return {
            (obj[Attribute.LABEL], bytes(obj[Attribute.ID] or b""))
            for obj in pooled.session.get_objects({Attribute.TOKEN: True})
        }


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody has reaped yet (orphans go to PID 1)."""
    try:
        return "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(p) for p in path.read_text().split()}


def metrics(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def eventually(check: Callable[[], T | None], what: str, timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def fresh_stub(address: str) -> tuple[grpc.Channel, crypto_pb2_grpc.CryptoServiceStub]:
    """A channel with its own TCP connection (no subchannel sharing), so SO_REUSEPORT may pick
    either worker for it."""
    channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
    return channel, crypto_pb2_grpc.CryptoServiceStub(channel)


def wrap_on_fresh_channels(address: str, key_id: str, calls: int) -> list[bytes]:
    ciphertexts = []
    for _ in range(calls):
        channel, stub = fresh_stub(address)
        try:
            response = stub.Wrap(
                crypto_pb2.WrapRequest(key_id=key_id, plaintext=os.urandom(32), aad=["w"]),
                metadata=MD,
                wait_for_ready=True,
                timeout=30,
            )
            ciphertexts.append(response.ciphertext)
        finally:
            channel.close()
    return ciphertexts


def per_worker(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for found, value in samples.get(name, []):
        if all(found.get(k) == v for k, v in labels.items()):
            out[found["worker"]] = out.get(found["worker"], 0.0) + value
    return out


def test_two_workers_share_ports_survive_a_kill_and_stop_cleanly(
    softhsm_token: dict[str, str], hsm_backend: Pkcs11Backend, tmp_path: Path
) -> None:
    before = token_objects(hsm_backend)
    daemon = Daemon(
        softhsm_token,
        tmp_path,
        args=("serve", "--workers", "2"),
        HSMBRIDGE_HSM__IMPORT_KEY_POOL_SIZE="1",
        HSMBRIDGE_HSM__IMPORT_KEY_POOL_BITS="2048",
    )
    daemon.start(timeout=120)
    assert daemon.proc is not None
    supervisor = daemon.proc.pid
    try:
        workers = children(supervisor)
        assert len(workers) == 2
        # the supervisor never loaded the PKCS#11 module (workers are exec'd, never forked from it)
        assert "softhsm" not in Path(f"/proc/{supervisor}/maps").read_text()
        assert all("softhsm" in Path(f"/proc/{w}/maps").read_text() for w in workers)

        channel = grpc.insecure_channel(daemon.address)
        key = keys_pb2_grpc.KeyServiceStub(channel).CreateKey(
            keys_pb2.CreateKeyRequest(name="workers-key"), metadata=MD
        )
        channel.close()
        ciphertexts = wrap_on_fresh_channels(daemon.address, key.id, 24)
        headers = {"authorization": f"Bearer {DEV_TOKEN}", "bluemix-instance": TENANT}
        for _ in range(24):  # a new connection each time: the kernel spreads them
            with httpx.Client(base_url=daemon.rest_url, headers=headers) as http:
                assert (
                    http.post(f"/api/v2/keys/{key.id}/actions/wrap", json={"plaintext": "AAAA"}).status_code
                    == 200
                )

        def both_served_and_pools_full() -> bool:
            samples = metrics(daemon.metrics_url)
            grpc_served = per_worker(samples, "hsmbridge_grpc_server_handled_total", grpc_method="Wrap")
            rest_served = per_worker(samples, "hsmbridge_rest_requests_total", status="200")
            pools = per_worker(samples, "hsmbridge_import_keypair_pool_ready")
            return set(grpc_served) | set(rest_served) == {"0", "1"} and pools == {"0": 1.0, "1": 1.0}

        eventually(both_served_and_pools_full, "traffic on both workers and full keypair pools")

        victim = min(workers)
        os.kill(victim, signal.SIGKILL)

        def restarted() -> set[int] | None:
            now = children(supervisor)
            if len(now) != 2 or victim in now:
                return None
            samples = metrics(daemon.metrics_url)
            ups = samples.get("hsmbridge_workers_up", [({}, 0.0)])[0][1]
            restarts = sum(v for _, v in samples.get("hsmbridge_worker_restarts_total", []))
            return now if ups == 2 and restarts == 1 else None

        workers = eventually(restarted, "the killed worker to be restarted")

        # traffic goes on, and old ciphertexts still open on whichever worker answers
        more = wrap_on_fresh_channels(daemon.address, key.id, 8)
        for ciphertext in ciphertexts[:4] + more[:4]:
            channel, stub = fresh_stub(daemon.address)
            try:
                stub.Unwrap(
                    crypto_pb2.UnwrapRequest(key_id=key.id, ciphertext=ciphertext, aad=["w"]),
                    metadata=MD,
                    wait_for_ready=True,
                    timeout=30,
                )
            finally:
                channel.close()
        # the restarted worker destroyed its predecessor's unused pooled keypair and refilled
        eventually(
            lambda: (
                per_worker(metrics(daemon.metrics_url), "hsmbridge_import_keypair_pool_ready")
                == {"0": 1.0, "1": 1.0}
            ),
            "the restarted worker's pool to refill",
        )
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.output)
    assert all(gone(w) for w in workers)
    # nothing new on the token: the restarted worker destroyed its killed predecessor's unused
    # pooled keypair and lease at start-up (that process provably no longer runs); a worker may
    # also have destroyed pooled keypairs (and leases) that gone processes of other tests left
    after = token_objects(hsm_backend)
    assert after <= before, f"HSM objects leaked: {after - before}"
    gone_owners = ("hsmbridge-import-pool-o", "hsmbridge-pool-lease-")
    assert {o for o in before - after if not o[0].startswith(gone_owners)} == set()


def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_status(
    softhsm_token: dict[str, str], hsm_backend: Pkcs11Backend, tmp_path: Path
) -> None:
    import subprocess
    import sys

    daemon = Daemon(
        softhsm_token, tmp_path, HSMBRIDGE_HSM__KEK_LABEL="no-such-kek", HSMBRIDGE_SERVER__WORKERS="2"
    )
    result = subprocess.run(
        [sys.executable, "-m", "hsmbridge.cli", "serve"],
        cwd=tmp_path,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "hsmbridge init" in result.stderr and "Traceback" not in result.stderr
    assert "listening on" not in result.stdout


def test_workers_stop_by_themselves_when_the_supervisor_is_killed(
    softhsm_token: dict[str, str], hsm_backend: Pkcs11Backend, tmp_path: Path
) -> None:
    """The lifeline pipe: a supervisor killed with -9 cannot forward SIGTERM, so the workers see
    its end of the pipe close and shut down gracefully instead of serving on, unsupervised."""
    before = token_objects(hsm_backend)
    daemon = Daemon(softhsm_token, tmp_path, args=("serve", "--workers", "2"))
    daemon.start(timeout=120)
    assert daemon.proc is not None
    workers = children(daemon.proc.pid)
    assert len(workers) == 2
    daemon.proc.kill()
    daemon.proc.wait(timeout=30)
    eventually(lambda: all(gone(w) for w in workers), "the orphaned workers to exit")
    assert token_objects(hsm_backend) <= before


def test_a_unix_socket_listener_is_refused_with_several_workers(
    softhsm_token: dict[str, str], tmp_path: Path
) -> None:
    """Worker processes share TCP ports through SO_REUSEPORT; a unix socket has no such sharing,
    so the supervisor says what to do instead of starting workers that would fight over it."""
    import subprocess
    import sys

    daemon = Daemon(softhsm_token, tmp_path, HSMBRIDGE_GRPC__LISTEN=f"unix:{tmp_path / 'grpc.sock'}")
    result = subprocess.run(
        [sys.executable, "-m", "hsmbridge.cli", "serve", "--workers", "2"],
        cwd=tmp_path,
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--workers 1" in result.stderr and "Traceback" not in result.stderr
