"""kill -9 under load loses nothing acknowledged (issue 15, fault suite): concurrent clients create
root keys, rotate them and wrap data keys under them over gRPC while the daemon (one process) or
one worker of ``serve --workers 2`` is killed with SIGKILL. Every operation the daemon answered OK
goes into a ledger; after the restart every acknowledged key is there, every acknowledged rotation
shows as a second version, and every acknowledged ciphertext unwraps to exactly its plaintext.

The load is seeded; its length is bounded by the number of operations, not by time, and the kill
happens once a given number of operations were acknowledged (no sleeps as synchronisation).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from daemon import Daemon

from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc, keys_pb2, keys_pb2_grpc

pytestmark = pytest.mark.softhsm

TENANT = "kill-tenant"
MD = (("x-hsmbridge-tenant", TENANT),)
CLIENTS = 3
#: operations acknowledged before the kill, and after it (per run)
BEFORE, AFTER = 60, 40
#: what an operation may answer around a kill (gone) or when two clients rotate one key at once
TOLERATED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED)


@dataclass
class Ledger:
    """What the daemon acknowledged; shared by the client threads."""

    keys: dict[str, bool] = field(default_factory=dict)  # key id → rotation acknowledged
    wraps: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # key, plaintext, ciphertext
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def acknowledged(self) -> int:
        with self.lock:
            return len(self.keys) + sum(self.keys.values()) + len(self.wraps)


class Load:
    """`CLIENTS` threads, each on its own channel, until `stop` is set."""

    def __init__(self, address: str, ledger: Ledger, seed: int) -> None:
        self.address = address
        self.ledger = ledger
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._client, args=(random.Random(seed + i),), daemon=True)
            for i in range(CLIENTS)
        ]
        for t in self.threads:
            t.start()

    def _client(self, rng: random.Random) -> None:
        channel = grpc.insecure_channel(self.address)
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        crypto = crypto_pb2_grpc.CryptoServiceStub(channel)
        ledger = self.ledger
        try:
            while not self.stop.is_set():
                with ledger.lock:
                    known = list(ledger.keys)
                    unrotated = [k for k, rotated in ledger.keys.items() if not rotated]
                choice = rng.random()
                try:
                    if not known or choice < 0.25:
                        key = keys.CreateKey(
                            keys_pb2.CreateKeyRequest(name=f"kill-{uuid.uuid4()}"), metadata=MD, timeout=20
                        )
                        with ledger.lock:
                            ledger.keys[key.id] = False
                    elif unrotated and choice < 0.45:
                        key_id = rng.choice(unrotated)
                        keys.RotateKey(keys_pb2.RotateKeyRequest(key_id=key_id), metadata=MD, timeout=20)
                        with ledger.lock:
                            ledger.keys[key_id] = True
                    else:
                        key_id = rng.choice(known)
                        plaintext = rng.randbytes(32)
                        wrapped = crypto.Wrap(
                            crypto_pb2.WrapRequest(key_id=key_id, plaintext=plaintext, aad=[key_id]),
                            metadata=MD,
                            timeout=20,
                        )
                        with ledger.lock:
                            ledger.wraps.append((key_id, plaintext, wrapped.ciphertext))
                except grpc.RpcError as err:
                    # not acknowledged: the daemon (or its worker) is gone, or a rotation raced
                    with ledger.lock:
                        ledger.failures += 1
                    if err.code() not in TOLERATED:
                        raise
                    time.sleep(0.05)  # back off before the channel reconnects
        finally:
            channel.close()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a client thread hung"


def wait_until(check: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def verify(address: str, ledger: Ledger) -> None:
    """0 lost, 0 wrong plaintexts."""
    with grpc.insecure_channel(address) as channel:
        keys = keys_pb2_grpc.KeyServiceStub(channel)
        crypto = crypto_pb2_grpc.CryptoServiceStub(channel)
        for key_id, rotated in ledger.keys.items():
            versions = keys.ListKeyVersions(
                keys_pb2.ListKeyVersionsRequest(key_id=key_id), metadata=MD, timeout=30, wait_for_ready=True
            ).versions
            assert len(versions) >= (2 if rotated else 1), key_id
        for key_id, plaintext, ciphertext in ledger.wraps:
            got = crypto.Unwrap(
                crypto_pb2.UnwrapRequest(key_id=key_id, ciphertext=ciphertext, aad=[key_id]),
                metadata=MD,
                timeout=30,
                wait_for_ready=True,
            )
            assert got.plaintext == plaintext


def children(pid: int) -> set[int]:
    return {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def test_kill_9_of_the_daemon_under_load_loses_nothing_acknowledged(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path: Path
) -> None:
    ledger = Ledger()
    daemon = Daemon(softhsm_token, tmp_path)
    daemon.start(timeout=120)
    load = Load(daemon.address, ledger, seed=15)
    try:
        wait_until(lambda: ledger.acknowledged >= BEFORE, "load before the kill")
        assert daemon.proc is not None
        daemon.proc.kill()  # SIGKILL
        daemon.proc.wait(timeout=30)
        acknowledged_at_kill = ledger.acknowledged
    finally:
        load.finish()
    again = Daemon(softhsm_token, tmp_path)
    again.start(timeout=120)
    try:
        verify(again.address, ledger)
        more = Load(again.address, ledger, seed=16)
        try:
            wait_until(lambda: ledger.acknowledged >= acknowledged_at_kill + AFTER, "load after the restart")
        finally:
            more.finish()
        verify(again.address, ledger)
    finally:
        assert again.stop() == 0
    print(f"{ledger.acknowledged} acknowledged, {ledger.failures} refused around the kill: 0 lost")


def test_kill_9_of_a_worker_under_load_loses_nothing_acknowledged(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path: Path
) -> None:
    ledger = Ledger()
    daemon = Daemon(softhsm_token, tmp_path, args=("serve", "--workers", "2"))
    daemon.start(timeout=120)
    assert daemon.proc is not None
    try:
        workers = children(daemon.proc.pid)
        assert len(workers) == 2
        load = Load(daemon.address, ledger, seed=25)
        try:
            wait_until(lambda: ledger.acknowledged >= BEFORE, "load before the kill")
            victim = min(workers)
            os.kill(victim, signal.SIGKILL)
            acknowledged_at_kill = ledger.acknowledged
            wait_until(
                lambda: len(children(daemon.proc.pid)) == 2 and victim not in children(daemon.proc.pid),  # type: ignore[union-attr]
                "the supervisor to restart the worker",
            )
            wait_until(lambda: ledger.acknowledged >= acknowledged_at_kill + AFTER, "load after the kill")
        finally:
            load.finish()
        verify(daemon.address, ledger)
    finally:
        assert daemon.stop() == 0, "".join(daemon.output)
    # and after a restart of the whole daemon on the same store
    again = Daemon(softhsm_token, tmp_path)
    again.start(timeout=120)
    try:
        verify(again.address, ledger)
    finally:
        again.stop()
    print(f"{ledger.acknowledged} acknowledged, {ledger.failures} refused around the kill: 0 lost")
