"""Store faults (issue 15, item 7): a full disk and a read-only file system under a real daemon
answer 503 + ``Retry-After`` with reason STORE_UNAVAILABLE on REST and UNAVAILABLE on gRPC while
they last, service resumes by itself once the store works again (no restart), and every key the
daemon acknowledged before, during and after is there afterwards.

The faults are real: the SQLite file lives on a small ext4 file system (a loop mount of an image
file) that the test fills up (ENOSPC) and then makes immutable (EPERM on every write, as after the
kernel remounted it read-only). Mounting needs root with CAP_SYS_ADMIN and a loop device (as
`make test` runs in CI). The driver-level mapping is also tested without mounting, with SQLite's
own limits (``max_page_count`` for full, ``query_only`` for read-only).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from daemon import DEV_TOKEN, Daemon
from security_support import error_info
from store_fixtures import PostgresCluster, start_cluster, stop_cluster

from hsmbridge.core.store.sqlite import SqliteStore
from hsmbridge.errors import InternalError, StoreUnavailable
from hsmbridge.grpc.errors import status_code_for
from hsmbridge.rest.errors import Operation, to_http_error
from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc, keys_pb2, keys_pb2_grpc

pytestmark = pytest.mark.softhsm

TENANT = "store-fault-tenant"
MD = (("x-hsmbridge-tenant", TENANT),)
#: A functional deadline for "resumes by itself", generous for a loaded 2-core machine.
RESUME_WITHIN_S = 30.0
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# --- the mapping, without a daemon -----------------------------------------------------------------


def test_sqlite_full_and_read_only_become_store_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.migrate()
    with store._conns.acquire() as conn:  # this thread's connection: make it hit SQLITE_FULL
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreUnavailable) as info, store.transaction() as tx:
        for i in range(2000):
            tx.ensure_tenant(f"t{i}-" + "x" * 500, NOW)
    assert info.value.metadata["retry_after"] == "1"
    assert "SQLITE_FULL" in info.value.message
    # the connection that hit the limit was dropped: the thread's next call works on a fresh one
    store.ping()
    with store._conns.acquire() as conn:
        assert conn.execute("PRAGMA max_page_count").fetchone()[0] > pages
    store.close()


def test_a_read_only_database_is_store_unavailable_and_a_bug_stays_internal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.migrate()
    with store._conns.acquire() as conn:
        conn.execute("PRAGMA query_only = ON")
    with pytest.raises(StoreUnavailable), store.transaction() as tx:
        tx.ensure_tenant("x", NOW)
    with store._conns.acquire() as conn:
        conn.execute("DROP TABLE tenants")  # a schema the code does not expect: a bug, not a fault
    with pytest.raises(InternalError) as info, store.transaction() as tx:
        tx.ensure_tenant("z", NOW)
    assert not isinstance(info.value, StoreUnavailable)
    store.close()


def test_store_unavailable_is_503_with_retry_after_and_grpc_unavailable() -> None:
    error = StoreUnavailable("the store is unavailable", metadata={"retry_after": "1"})
    http = to_http_error(error, Operation("Key", "created"))
    assert http.status == 503
    assert status_code_for(error) is grpc.StatusCode.UNAVAILABLE


# --- a real daemon on a real file system ------------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB ext4 file system on a loop device: small enough to fill, and ext4 honours the
    immutable attribute on files already open for writing (tmpfs does not)."""
    image, where = tmp_path / "fs.img", tmp_path / "fs"
    where.mkdir()
    with open(image, "wb") as f:
        f.truncate(8 * 1024 * 1024)
    try:
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True, timeout=60
        )
        _mount("-o", "loop", str(image), str(where))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"cannot mount a loop ext4 file system for the store fault test (needs root): {exc}")
    try:
        yield where
    finally:
        subprocess.run(["chattr", "-R", "-i", str(where)], check=False, capture_output=True, timeout=30)
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True, timeout=30)


def read_only(where: Path, on: bool) -> None:
    """Every file of the store and its directory immutable: writes through the daemon's open
    descriptors fail (EPERM), as on a file system the kernel remounted read-only after an error
    (which cannot be done to a mounted file system with files open for writing)."""
    # Not the -shm file: SQLite maps it, and a write fault on a mapped immutable page is SIGBUS
    # (it is shared memory between connections, never the data).
    paths = [str(where / n) for n in ("hsmbridge.db", "hsmbridge.db-wal") if (where / n).exists()]
    paths.append(str(where))
    subprocess.run(["chattr", "+i" if on else "-i", *paths], check=True, capture_output=True, timeout=30)


class Ledger:
    """Keys the daemon acknowledged (and a ciphertext of a known plaintext under each)."""

    def __init__(self, address: str, rest_url: str) -> None:
        self.channel = grpc.insecure_channel(address)
        self.keys = keys_pb2_grpc.KeyServiceStub(self.channel)
        self.crypto = crypto_pb2_grpc.CryptoServiceStub(self.channel)
        self.http = httpx.Client(
            base_url=rest_url,
            headers={"authorization": f"Bearer {DEV_TOKEN}", "bluemix-instance": TENANT},
            timeout=60,  # a PostgreSQL outage answers after the pool's 10 s wait for a connection
        )
        self.acknowledged: dict[str, tuple[bytes, bytes]] = {}

    def create(self) -> grpc.RpcError | None:
        try:
            key = self.keys.CreateKey(
                keys_pb2.CreateKeyRequest(name=f"k-{uuid.uuid4()}"), metadata=MD, timeout=30
            )
        except grpc.RpcError as err:
            return err
        plaintext = os.urandom(32)
        wrapped = self.crypto.Wrap(
            crypto_pb2.WrapRequest(key_id=key.id, plaintext=plaintext), metadata=MD, timeout=30
        )
        self.acknowledged[key.id] = (plaintext, wrapped.ciphertext)
        return None

    def rest_create(self) -> httpx.Response:
        body = {
            "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": f"r-{uuid.uuid4()}"}],
        }
        return self.http.post("/api/v2/keys", json=body)

    def check(self) -> None:
        for key_id, (plaintext, ciphertext) in self.acknowledged.items():
            got = self.crypto.Unwrap(
                crypto_pb2.UnwrapRequest(key_id=key_id, ciphertext=ciphertext), metadata=MD, timeout=30
            )
            assert got.plaintext == plaintext

    def close(self) -> None:
        self.http.close()
        self.channel.close()


#: A full file system can still take a few writes: SQLite reuses free pages of the database and
#: its WAL, and such a write is durable, so it is acknowledged (and the ledger checks it later).
#: What must hold is that the writes that no longer fit are refused, cleanly.
WRITES_THAT_MAY_STILL_FIT = 20


def refused_while_faulty(ledger: Ledger) -> None:
    for _ in range(WRITES_THAT_MAY_STILL_FIT):
        err = ledger.create()
        if err is not None:
            break
    assert err is not None, "writes were still acknowledged long after the store was full"
    assert err.code() is grpc.StatusCode.UNAVAILABLE, err
    assert error_info(err).reason == "STORE_UNAVAILABLE"
    response = ledger.rest_create()
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert "errorMsg" in response.json()["resources"][0]


def resumes(ledger: Ledger) -> float:
    started = time.monotonic()
    while ledger.create() is not None:
        assert time.monotonic() - started < RESUME_WITHIN_S, "the store did not come back by itself"
        time.sleep(0.1)
    assert ledger.rest_create().status_code == 201
    return time.monotonic() - started


def test_a_full_and_a_read_only_store_answer_503_and_recover_by_themselves(
    softhsm_token: dict[str, str], hsm_backend: object, small_fs: Path, tmp_path: Path
) -> None:
    daemon = Daemon(softhsm_token, tmp_path, HSMBRIDGE_STORE__PATH=str(small_fs / "hsmbridge.db"))
    daemon.start(timeout=120)
    ledger = Ledger(daemon.address, daemon.rest_url)
    try:
        for _ in range(5):
            assert ledger.create() is None
        # disk full
        filler = small_fs / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        for _ in range(3):
            refused_while_faulty(ledger)
        ledger.check()  # reads go on
        filler.unlink()
        full_resumed = resumes(ledger)
        # read-only
        read_only(small_fs, True)
        for _ in range(3):
            refused_while_faulty(ledger)
        ledger.check()
        read_only(small_fs, False)
        ro_resumed = resumes(ledger)
        for _ in range(5):
            assert ledger.create() is None
        print(f"service resumed {full_resumed:.2f} s after the disk had room, {ro_resumed:.2f} s after rw")
        assert "Traceback" not in "".join(daemon.output)
    finally:
        ledger.close()
        assert daemon.stop() == 0
    # nothing acknowledged is lost: a fresh daemon on the same store has every key
    again = Daemon(softhsm_token, tmp_path, HSMBRIDGE_STORE__PATH=str(small_fs / "hsmbridge.db"))
    again.start(timeout=120)
    after = Ledger(again.address, again.rest_url)
    try:
        after.acknowledged = ledger.acknowledged
        assert len(after.acknowledged) >= 12
        after.check()
    finally:
        after.close()
        again.stop()


# --- PostgreSQL down --------------------------------------------------------------------------------


@pytest.fixture
def private_cluster() -> Iterator[tuple[PostgresCluster, Any]]:
    """A cluster of this test's own: stopping the session's would fail other tests' connections."""
    cluster, runner = start_cluster()
    try:
        yield cluster, runner
    finally:
        cluster.close()
        stop_cluster(runner, cluster.root / "data")
        shutil.rmtree(cluster.root, ignore_errors=True)


def test_postgresql_down_answers_503_and_the_daemon_resumes_when_it_is_back(
    softhsm_token: dict[str, str],
    hsm_backend: object,
    private_cluster: tuple[PostgresCluster, Any],
    tmp_path: Path,
) -> None:
    cluster, runner = private_cluster
    _, url = cluster.create_database()
    data = cluster.root / "data"
    daemon = Daemon(
        softhsm_token,
        tmp_path,
        HSMBRIDGE_STORE__PATH="",
        HSMBRIDGE_STORE__URL=url,
        HSMBRIDGE_STORE__POOL_MAX_SIZE="4",
    )
    daemon.start(timeout=120)
    ledger = Ledger(daemon.address, daemon.rest_url)
    try:
        for _ in range(5):
            assert ledger.create() is None
        cluster.close()  # the fixture's admin connection would otherwise block a fast stop
        stopped = runner.run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        assert stopped.returncode == 0, stopped.stderr
        refused_while_faulty(ledger)  # once: each waits the pool's 10 s for a connection
        options = f"-k {cluster.root} -p {cluster.port} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = runner.run(
            "pg_ctl", "-D", str(data), "-l", str(cluster.root / "server.log"), "-w", "-o", options, "start"
        )
        assert started.returncode == 0, started.stderr
        resumed = resumes(ledger)
        for _ in range(5):
            assert ledger.create() is None
        ledger.check()
        print(f"service resumed {resumed:.2f} s after PostgreSQL was back")
        assert "Traceback" not in "".join(daemon.output)
    finally:
        ledger.close()
        daemon.stop()
