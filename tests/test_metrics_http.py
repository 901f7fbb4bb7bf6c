"""Scrape a real daemon's Prometheus port after gRPC and REST traffic: request counters and
latency histograms by method and outcome, HSM latency by mechanism, session pool and handle
cache, import-keypair pool. Counts are asserted, never timings."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator

import grpc
import httpx
import pytest
from daemon import DEV_TOKEN, Daemon
from prometheus_client.parser import text_string_to_metric_families

from hsmbridge.client import Client
from hsmbridge.v1 import crypto_pb2, keys_pb2

pytestmark = pytest.mark.softhsm

TENANT = "metrics-tenant"
CRYPTO = "hsmbridge.v1.CryptoService"


@pytest.fixture(scope="module")
def daemon(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Daemon]:
    d = Daemon(softhsm_token, tmp_path_factory.mktemp("metrics-daemon"))
    d.start()
    yield d
    assert d.stop() == 0


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name → [(labels, value)]"""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if all(found.get(k) == x for k, x in labels.items()))


def test_requests_are_counted_and_timed_by_method_and_outcome(daemon: Daemon) -> None:
    assert daemon.metrics_url.startswith("http://127.0.0.1:")
    client = Client(daemon.address, tenant=TENANT)
    try:
        key = client.keys.CreateKey(keys_pb2.CreateKeyRequest(name="metrics-key"), metadata=client.metadata)
        for _ in range(5):
            wrapped = client.crypto.Wrap(
                crypto_pb2.WrapRequest(key_id=key.id, plaintext=os.urandom(32), aad=["a"]),
                metadata=client.metadata,
            )
        client.crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=key.id, ciphertext=wrapped.ciphertext, aad=["a"]),
            metadata=client.metadata,
        )
        with pytest.raises(grpc.RpcError) as missing:
            client.crypto.Wrap(
                crypto_pb2.WrapRequest(key_id="no-such-key", plaintext=b"x"), metadata=client.metadata
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        batch = crypto_pb2.WrapBatchRequest(
            key_id=key.id, items=[crypto_pb2.WrapRequest(plaintext=os.urandom(32)) for _ in range(10)]
        )
        client.crypto.WrapBatch(batch, metadata=client.metadata)
        stream = client.crypto.CryptoStream(
            iter([crypto_pb2.CryptoStreamRequest(sequence=1, wrap=batch)]), metadata=client.metadata
        )
        assert len(list(stream)) == 1
    finally:
        client.close()

    headers = {"authorization": f"Bearer {DEV_TOKEN}", "bluemix-instance": TENANT}
    with httpx.Client(base_url=daemon.rest_url, headers=headers) as http:
        for _ in range(3):
            ok = http.post(f"/api/v2/keys/{key.id}/actions/wrap", json={"plaintext": "AAAA" * 8})
            assert ok.status_code == 200
        assert http.post("/api/v2/keys/nope/actions/wrap", json={"plaintext": "AAAA"}).status_code == 404

    samples = scrape(daemon.metrics_url)
    handled = "hsmbridge_grpc_server_handled_total"
    assert value(samples, handled, grpc_service=CRYPTO, grpc_method="Wrap", grpc_code="OK") == 5
    assert value(samples, handled, grpc_service=CRYPTO, grpc_method="Wrap", grpc_code="NOT_FOUND") == 1
    assert value(samples, handled, grpc_service=CRYPTO, grpc_method="Unwrap", grpc_code="OK") == 1
    assert value(samples, handled, grpc_method="WrapBatch", grpc_code="OK") == 1
    assert value(samples, handled, grpc_method="CryptoStream", grpc_code="OK") == 1
    seconds = "hsmbridge_grpc_server_handling_seconds"
    assert value(samples, f"{seconds}_count", grpc_method="Wrap", grpc_code="OK") == 5
    assert value(samples, f"{seconds}_bucket", grpc_method="Wrap", grpc_code="OK", le="+Inf") == 5
    assert value(samples, f"{seconds}_sum", grpc_method="Wrap", grpc_code="OK") > 0

    route = "/api/v2/keys/{id}/actions/wrap"
    rest = "hsmbridge_rest_requests_total"
    assert value(samples, rest, method="POST", route=route, status="200") == 3
    assert value(samples, rest, method="POST", route=route, status="404") == 1
    assert value(samples, "hsmbridge_rest_request_seconds_count", route=route, status="200") == 3

    hsm = "hsmbridge_hsm_operation_seconds_count"
    # 5 unary wraps + 3 REST wraps (the failed one never reaches the HSM)
    assert value(samples, hsm, mechanism="CKM_AES_GCM", operation="encrypt") == 8
    assert value(samples, hsm, mechanism="CKM_AES_GCM", operation="decrypt") == 1
    assert value(samples, hsm, mechanism="CKM_AES_GCM", operation="encrypt_batch") == 2
    assert value(samples, hsm, mechanism="CKM_AES_KEY_GEN", operation="generate") >= 1

    assert value(samples, "hsmbridge_handle_cache_hits_total") >= 8
    assert value(samples, "hsmbridge_hsm_sessions_max") == 4
    assert "hsmbridge_hsm_session_wait_seconds_total" in samples
    assert "hsmbridge_hsm_sessions_in_use" in samples
    assert "hsmbridge_handle_cache_evictions_total" in samples
    # the test daemon runs without a keypair pool: no pool series at all
    assert "hsmbridge_import_keypair_pool_ready" not in samples


def test_a_busy_metrics_port_is_a_clear_start_up_error(
    softhsm_token: dict[str, str], hsm_backend: object, tmp_path: object
) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        d = Daemon(softhsm_token, tmp_path, HSMBRIDGE_METRICS__LISTEN=f"127.0.0.1:{port}")  # type: ignore[arg-type]
        result = subprocess.run(
            [sys.executable, "-m", "hsmbridge.cli", "serve"],
            cwd=tmp_path,  # type: ignore[arg-type]
            env=d.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port} for metrics" in result.stderr
    assert "Traceback" not in result.stderr


def test_streams_cancelled_by_their_client_are_counted_once_each(daemon: Daemon) -> None:
    """The interceptor records a bidi stream when the RPC ends, however it ends (from the RPC's
    done-callback, not from the generator, which grpc may leave suspended until garbage
    collection): three CryptoStreams cancelled by their client are counted exactly once each,
    and the daemon serves on. The code is CANCELLED or OK: grpc aio presents most client
    cancellations of a bidi stream to the server as a normal end of the request stream."""
    import threading

    before = sum(
        value(
            scrape(daemon.metrics_url),
            "hsmbridge_grpc_server_handled_total",
            grpc_method="CryptoStream",
            grpc_code=code,
        )
        for code in ("CANCELLED", "OK")
    )
    client = Client(daemon.address, tenant=TENANT)
    try:
        key = client.keys.CreateKey(keys_pb2.CreateKeyRequest(name="stream-cancel"), metadata=client.metadata)
        batch = crypto_pb2.WrapBatchRequest(
            key_id=key.id, items=[crypto_pb2.WrapRequest(plaintext=os.urandom(32)) for _ in range(3)]
        )
        hold = threading.Event()

        def requests() -> Iterator[crypto_pb2.CryptoStreamRequest]:
            yield crypto_pb2.CryptoStreamRequest(sequence=1, wrap=batch)
            hold.wait(30)  # keep the stream open until the client has cancelled it

        for _ in range(3):
            call = client.crypto.CryptoStream(requests(), metadata=client.metadata)
            assert next(call).sequence == 1
            call.cancel()
        hold.set()
        # the daemon still answers, and has counted the cancelled streams
        client.crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id, plaintext=b"x"), metadata=client.metadata)
    finally:
        client.close()
    import time

    deadline = time.monotonic() + 30  # the server sees the cancellations asynchronously
    while True:
        counted = sum(
            value(
                scrape(daemon.metrics_url),
                "hsmbridge_grpc_server_handled_total",
                grpc_method="CryptoStream",
                grpc_code=code,
            )
            for code in ("CANCELLED", "OK")
        )
        if counted >= before + 3 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted == before + 3
