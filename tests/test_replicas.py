"""Two daemons (replicas) sharing one PostgreSQL and one SoftHSM2 token agree.

- A key created on one is usable on the other at once (nothing is cached before first use).
- A state change made on one takes effect on the other within the documented bound: the
  replicas cache a key for wrap/unwrap for at most `KEY_USE_CACHE_SECONDS` (1 s); the test waits
  up to 5× that, polling, and asserts the change arrived — a bound, not a timing measurement.
- Concurrent rotations or deletions of one key from both replicas leave a consistent state: one
  new version, never two "latest"; one deletion, the other refused.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from daemon import Daemon

from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc, keys_pb2, keys_pb2_grpc

pytest_plugins = ("store_fixtures",)
pytestmark = pytest.mark.softhsm

KEY_USE_CACHE_SECONDS = 1.0
MD = (("x-hsmbridge-tenant", "replicated"),)


class Replica:
    def __init__(self, daemon: Daemon) -> None:
        channel = grpc.insecure_channel(daemon.address)
        self.keys = keys_pb2_grpc.KeyServiceStub(channel)
        self.crypto = crypto_pb2_grpc.CryptoServiceStub(channel)


@pytest.fixture
def replicas(
    softhsm_token: dict[str, str], hsm_backend: object, postgres_url: str, tmp_path: Path
) -> Iterator[tuple[Replica, Replica]]:
    daemons = []
    for name in ("a", "b"):
        workdir = tmp_path / name
        workdir.mkdir()
        d = Daemon(
            softhsm_token,
            workdir,
            HSMBRIDGE_STORE__PATH="",
            HSMBRIDGE_STORE__URL=postgres_url,
            HSMBRIDGE_REST__ENABLED="false",
        )
        d.start()
        daemons.append(d)
    yield Replica(daemons[0]), Replica(daemons[1])
    for d in daemons:
        d.stop()


def eventually(check: object, bound: float) -> None:
    deadline = time.monotonic() + bound
    while True:
        try:
            check()  # type: ignore[operator]
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_key_created_on_one_replica_is_usable_on_the_other_at_once(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    key = a.keys.CreateKey(keys_pb2.CreateKeyRequest(name="shared"), metadata=MD)
    wrapped = a.crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id, aad=["x"]), metadata=MD)
    opened = b.crypto.Unwrap(
        crypto_pb2.UnwrapRequest(key_id=key.id, ciphertext=wrapped.ciphertext, aad=["x"]), metadata=MD
    )
    assert opened.plaintext == wrapped.plaintext


def test_state_changes_reach_the_other_replica_within_the_bound(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    key = a.keys.CreateKey(keys_pb2.CreateKeyRequest(name="to-disable"), metadata=MD)
    b.crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id), metadata=MD)  # b has it cached now
    a.keys.SetKeyState(
        keys_pb2.SetKeyStateRequest(key_id=key.id, state=keys_pb2.KEY_STATE_SUSPENDED), metadata=MD
    )

    def b_refuses() -> None:
        try:
            b.crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id), metadata=MD)
        except grpc.RpcError as err:
            assert err.code() is grpc.StatusCode.FAILED_PRECONDITION
            return
        raise AssertionError("replica b still wraps with a disabled key")

    eventually(b_refuses, 5 * KEY_USE_CACHE_SECONDS)

    rotated_on_a = a.keys.CreateKey(keys_pb2.CreateKeyRequest(name="to-rotate"), metadata=MD)
    old = b.crypto.Wrap(crypto_pb2.WrapRequest(key_id=rotated_on_a.id), metadata=MD)
    latest = a.keys.RotateKey(
        keys_pb2.RotateKeyRequest(key_id=rotated_on_a.id), metadata=MD
    ).current_version.id

    def b_wraps_with_the_new_version() -> None:
        assert (
            b.crypto.Wrap(crypto_pb2.WrapRequest(key_id=rotated_on_a.id), metadata=MD).key_version_id
            == latest
        )

    eventually(b_wraps_with_the_new_version, 5 * KEY_USE_CACHE_SECONDS)
    opened = b.crypto.Unwrap(
        crypto_pb2.UnwrapRequest(key_id=rotated_on_a.id, ciphertext=old.ciphertext), metadata=MD
    )
    assert opened.rewrapped_key_version_id == latest


def test_concurrent_rotations_and_deletions_leave_a_consistent_state(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    for _ in range(3):
        key = a.keys.CreateKey(keys_pb2.CreateKeyRequest(name="raced"), metadata=MD)

        def rotate(replica: Replica, key_id: str = key.id) -> str:
            try:
                return replica.keys.RotateKey(
                    keys_pb2.RotateKeyRequest(key_id=key_id), metadata=MD
                ).current_version.id
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED), err
                return ""

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(rotate, (a, b)))
        winners = [v for v in outcomes if v]
        assert len(winners) == 1, outcomes  # one rotation per hour: exactly one wins the race
        versions = [
            v.id
            for v in b.keys.ListKeyVersions(
                keys_pb2.ListKeyVersionsRequest(key_id=key.id), metadata=MD
            ).versions
        ]
        assert versions == [winners[0], key.id]
        assert (
            a.keys.GetKey(keys_pb2.GetKeyRequest(key_id=key.id), metadata=MD).current_version.id == winners[0]
        )

        def delete(replica: Replica, key_id: str = key.id) -> bool:
            try:
                replica.keys.DeleteKey(keys_pb2.DeleteKeyRequest(key_id=key_id), metadata=MD)
                return True
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED), err
                return False

        with ThreadPoolExecutor(2) as pool:
            deleted = list(pool.map(delete, (a, b)))
        assert deleted.count(True) == 1, deleted
        assert (
            b.keys.GetKey(keys_pb2.GetKeyRequest(key_id=key.id), metadata=MD).state
            == keys_pb2.KEY_STATE_DESTROYED
        )
