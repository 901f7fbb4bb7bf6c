"""Several processes on one token never destroy each other's pooled import keypairs (issue 15).

- Two `hsmbridge dev` in one directory (one token, one SQLite store): the second fails to start
  (its metrics port is the first's) after its keypair pool swept the token; the first daemon's
  pooled keypairs survive, so its next import tokens work end to end.
- Two replicas on one token and one PostgreSQL, each with a full pool: one is killed with -9, a
  third starts (and sweeps: it destroys the dead replica's unused keypairs at once, since that
  process provably no longer runs); the live replica's import tokens, created before and after,
  all import through either live replica, and nothing of theirs is lost.

Real daemons (tests/daemon.py), the generated gRPC client, RSA-2048 pools for speed.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from daemon import Daemon
from prometheus_client.parser import text_string_to_metric_families

from hsmbridge.core.keypair_pool import owner_of
from hsmbridge.hsm.backend import Pkcs11Backend
from hsmbridge.v1 import import_tokens_pb2, import_tokens_pb2_grpc, keys_pb2, keys_pb2_grpc

pytest_plugins = ("store_fixtures",)
pytestmark = pytest.mark.softhsm

POOL = {"HSMBRIDGE_HSM__IMPORT_KEY_POOL_SIZE": "2", "HSMBRIDGE_HSM__IMPORT_KEY_POOL_BITS": "2048"}


def pool_ready(d: Daemon) -> float:
    with urllib.request.urlopen(d.metrics_url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hsmbridge_import_keypair_pool_ready":
                return sample.value
    return -1.0


def eventually(check: Callable[[], bool], what: str, bound: float = 90.0) -> None:
    deadline = time.monotonic() + bound
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def import_through(d: Daemon, tenant: str, creator: Daemon | None = None) -> str:
    """Create an import token on `creator` (default `d`), then secure-import a key through `d`;
    returns the new key's id."""
    md = (("x-hsmbridge-tenant", tenant),)
    tokens = import_tokens_pb2_grpc.ImportTokenServiceStub(grpc.insecure_channel((creator or d).address))
    tokens.CreateImportToken(
        import_tokens_pb2.CreateImportTokenRequest(key_bits=2048, max_retrievals=1), metadata=md, timeout=60
    )
    return import_with_token(d, tenant)


def import_with_token(d: Daemon, tenant: str) -> str:
    md = (("x-hsmbridge-tenant", tenant),)
    channel = grpc.insecure_channel(d.address)
    token = import_tokens_pb2_grpc.ImportTokenServiceStub(channel).GetImportToken(
        import_tokens_pb2.GetImportTokenRequest(), metadata=md, timeout=30
    )
    public = serialization.load_pem_public_key(token.public_key_pem.encode())
    material, iv = os.urandom(32), os.urandom(12)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    key = keys_pb2_grpc.KeyServiceStub(channel).ImportKey(
        keys_pb2.ImportKeyRequest(
            key=keys_pb2.CreateKeyRequest(name="imported"),
            material=keys_pb2.KeyMaterial(
                secure=keys_pb2.SecureMaterial(
                    encrypted_key=public.encrypt(material, oaep),  # type: ignore[union-attr]
                    iv=iv,
                    encrypted_nonce=AESGCM(material).encrypt(iv, token.nonce, None),
                    oaep_hash=keys_pb2.OAEP_HASH_SHA1,
                )
            ),
        ),
        metadata=md,
        timeout=60,
    )
    assert key.imported
    return key.id


def pool_objects(backend: Pkcs11Backend) -> set[str]:
    return set(backend.find_import_keypairs("pool-"))


def test_a_second_dev_daemon_that_fails_to_start_leaves_the_first_ones_keypairs(tmp_path: Path) -> None:
    first = Daemon(None, tmp_path, args=("dev",), **POOL)
    first.start()
    try:
        eventually(lambda: pool_ready(first) == 2.0, "the first daemon's pool to fill")
        metrics_listen = first.metrics_url.removeprefix("http://").removesuffix("/metrics")
        second = Daemon(None, tmp_path, args=("dev",), HSMBRIDGE_METRICS__LISTEN=metrics_listen, **POOL)
        with pytest.raises(RuntimeError, match="daemon exited"):
            second.start()
        assert second.proc is not None and second.proc.wait(timeout=30) != 0
        output = "".join(second.output)
        assert "cannot listen on" in output and "Traceback" not in output
        assert "destroyed" not in output  # its start-up sweep found nothing of a gone owner
        # the first daemon's two pooled keypairs are intact: both next import tokens work
        for tenant in ("dev-a", "dev-b"):
            import_through(first, tenant)
    finally:
        assert first.stop() == 0


@pytest.fixture
def replica_env(postgres_url: str) -> dict[str, str]:
    return {
        "HSMBRIDGE_STORE__PATH": "",
        "HSMBRIDGE_STORE__URL": postgres_url,
        "HSMBRIDGE_REST__ENABLED": "false",
        **POOL,
    }


@pytest.fixture
def replicas(
    softhsm_token: dict[str, str], hsm_backend: Pkcs11Backend, replica_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[[str], Daemon]]:
    started: list[Daemon] = []

    def start(name: str) -> Daemon:
        workdir = tmp_path / name
        workdir.mkdir()
        d = Daemon(softhsm_token, workdir, **replica_env)
        d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.stop()


def test_replicas_on_one_token_and_one_postgres_keep_each_others_keypairs(
    replicas: Callable[[str], Daemon], hsm_backend: Pkcs11Backend
) -> None:
    before, leases_before = pool_objects(hsm_backend), set(hsm_backend.pool_leases())
    a, b = replicas("a"), replicas("b")
    eventually(lambda: pool_ready(a) == 2.0 and pool_ready(b) == 2.0, "both pools to fill")
    ours = pool_objects(hsm_backend) - before
    owners = {owner_of(i) for i in ours}
    assert len(ours) == 4 and len(owners) == 2  # two owners, two keypairs each

    # a token taken from A's pool, imported later through another replica
    md = (("x-hsmbridge-tenant", "replicas-early"),)
    import_tokens_pb2_grpc.ImportTokenServiceStub(grpc.insecure_channel(a.address)).CreateImportToken(
        import_tokens_pb2.CreateImportTokenRequest(key_bits=2048, max_retrievals=1), metadata=md, timeout=60
    )
    assert b.proc is not None
    b.proc.send_signal(signal.SIGKILL)  # leaves its two unused keypairs and its lease behind
    b.proc.wait(timeout=30)
    c = replicas("c")  # sweeps at start-up
    eventually(lambda: pool_ready(c) == 2.0, "the new replica's pool to fill")
    # Of the four, A's first was claimed by the token (no longer a pooled keypair) and B's two
    # were destroyed by C's sweep (B's process provably no longer runs): A's second is left.
    # Had C destroyed A's instead, B's two would be left.
    assert len(ours & pool_objects(hsm_backend)) == 1
    import_with_token(c, "replicas-early")
    import_through(c, "replicas-late", creator=a)  # takes A's remaining pooled keypair
    import_through(a, "replicas-on-c", creator=c)
    a.stop()
    c.stop()
    assert pool_objects(hsm_backend) <= before, "pooled keypairs leaked"
    assert set(hsm_backend.pool_leases()) <= leases_before, "pool leases leaked"
