"""Batch RPCs and the bulk stream, through a real daemon: many items per call, one status per
item, a bad item never fails the rest; `Client.bulk_rewrap` migrates a table after rotation."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest
from daemon import Daemon
from google.rpc import code_pb2

from hsmbridge.client import Client
from hsmbridge.v1 import crypto_pb2, keys_pb2

pytestmark = pytest.mark.softhsm


@pytest.fixture(scope="module")
def client(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Client]:
    d = Daemon(softhsm_token, tmp_path_factory.mktemp("batch-daemon"))
    d.start()
    c = Client(d.address, tenant="batch-tenant")
    yield c
    c.close()
    d.stop()


def new_key(client: Client, name: str) -> keys_pb2.Key:
    return client.keys.CreateKey(keys_pb2.CreateKeyRequest(name=name), metadata=client.metadata)


def test_wrap_batch_returns_one_result_per_item_and_isolates_bad_items(client: Client) -> None:
    key = new_key(client, "batch-wrap")
    items = [crypto_pb2.WrapRequest(plaintext=os.urandom(32), aad=[f"row={i}"]) for i in range(200)]
    items[7] = crypto_pb2.WrapRequest(plaintext=b"x" * 7501)  # too large
    items[8] = crypto_pb2.WrapRequest()  # generate a DEK
    items[9] = crypto_pb2.WrapRequest(key_id="no-such-key", plaintext=b"k")
    response = client.crypto.WrapBatch(
        crypto_pb2.WrapBatchRequest(key_id=key.id, items=items), metadata=client.metadata
    )
    assert len(response.results) == 200
    codes = [r.status.code for r in response.results]
    assert codes[7] == code_pb2.INVALID_ARGUMENT and codes[9] == code_pb2.NOT_FOUND
    assert all(c == code_pb2.OK for i, c in enumerate(codes) if i not in (7, 9))
    assert len(response.results[8].response.plaintext) == 32

    unwrap = crypto_pb2.UnwrapBatchRequest(
        key_id=key.id,
        items=[
            crypto_pb2.UnwrapRequest(ciphertext=r.response.ciphertext, aad=list(items[i].aad))
            for i, r in enumerate(response.results)
            if r.status.code == code_pb2.OK
        ],
    )
    unwrap.items[0].aad[:] = ["wrong"]  # one item with the wrong AAD
    opened = client.crypto.UnwrapBatch(unwrap, metadata=client.metadata)
    assert opened.results[0].status.code == code_pb2.INVALID_ARGUMENT
    assert all(r.status.code == code_pb2.OK for r in opened.results[1:])
    expected = [
        items[i].plaintext or response.results[i].response.plaintext
        for i, r in enumerate(response.results)
        if r.status.code == code_pb2.OK
    ]
    assert [r.response.plaintext for r in opened.results[1:]] == expected[1:]


def test_bulk_rewrap_migrates_every_ciphertext_to_the_latest_version(client: Client) -> None:
    key = new_key(client, "batch-rotate")
    deks = [os.urandom(32) for _ in range(1200)]
    wrapped = client.crypto.WrapBatch(
        crypto_pb2.WrapBatchRequest(
            key_id=key.id, items=[crypto_pb2.WrapRequest(plaintext=d, aad=["t"]) for d in deks]
        ),
        metadata=client.metadata,
    )
    old = [r.response.ciphertext for r in wrapped.results]
    latest = client.keys.RotateKey(
        keys_pb2.RotateKeyRequest(key_id=key.id), metadata=client.metadata
    ).current_version.id

    rows: list[bytes | tuple[bytes, list[str]]] = [(c, ["t"]) for c in old]
    rows.insert(500, b"\x01" * 50)  # a corrupt row in the middle
    results = list(client.bulk_rewrap(key.id, rows, batch_size=256))
    assert [r.index for r in results] == list(range(len(rows)))
    assert not results[500].ok and results[500].reason == "INTEGRITY_CHECK_FAILED"
    good = [r for r in results if r.ok]
    assert len(good) == 1200
    assert {r.rewrapped_key_version_id for r in good} == {latest} and {r.key_version_id for r in good} == {
        key.id
    }

    unwrapped = client.crypto.UnwrapBatch(
        crypto_pb2.UnwrapBatchRequest(
            key_id=key.id, items=[crypto_pb2.UnwrapRequest(ciphertext=r.ciphertext, aad=["t"]) for r in good]
        ),
        metadata=client.metadata,
    )
    assert [r.response.plaintext for r in unwrapped.results] == deks
    assert all(not r.response.rewrapped_ciphertext for r in unwrapped.results)  # already the latest


def test_stream_without_a_tenant_is_refused(client: Client) -> None:
    stream = client.crypto.CryptoStream(iter([crypto_pb2.CryptoStreamRequest(sequence=1)]))
    with pytest.raises(grpc.RpcError) as err:
        list(stream)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
