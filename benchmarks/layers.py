"""What each layer costs on top of the HSM: AES-256-GCM encrypt of 32 bytes with 16 bytes of AAD.

    .venv/bin/python -m benchmarks.layers [--seconds 2] [--runs 5]

Measured in one run, on one throw-away SoftHSM2 token, one thread each:
  raw       python-pkcs11 key.encrypt on a session object (the limit from Python)
  backend   Pkcs11Backend.gcm_encrypt (pool checkout, handle cache, HSM-random IV)
  metered   the same call through the HSM latency timer the daemon installs
            (hsmbridge.metrics.instrument_backend): the before/after of HSM metrics
  service   EnvelopeService.wrap (key lookup in SQLite, lifecycle checks, envelope, AAD binding)
  grpc      CryptoService/Wrap through a real daemon over loopback, one client, unary calls
  grpc-bare the same daemon's health Check: a unary call that does no work (the gRPC floor)
Prints median and min–max ops/s of the runs and each layer as a ratio of `raw`, and gRPC Wrap as
a ratio of the bare call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hsmbridge import softhsm


def measure(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(200):  # warm the handle cache, the session pool and the allocator
        fn()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn()
        count += 100
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="hsmbridge-bench-"))
    conf = softhsm.write_config(workdir)
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = softhsm.new_pin()
    softhsm.init_token(conf, "bench", pin)
    (workdir / "pin").write_text(pin)
    module = softhsm.find_module()
    assert module, "SoftHSM2 is not installed"

    from pkcs11 import Attribute, GCMParams, KeyType, Mechanism

    from hsmbridge.core.backend import KeyRef
    from hsmbridge.core.keys import KeySpec
    from hsmbridge.core.principal import CallContext, Principal
    from hsmbridge.core.services import Services
    from hsmbridge.core.store.sqlite import SqliteStore
    from hsmbridge.hsm.backend import Pkcs11Backend, Pkcs11Settings

    backend = Pkcs11Backend(Pkcs11Settings(module=module, pin=pin, token_label="bench"), create_kek=True)
    store = SqliteStore(workdir / "bench.db")
    store.migrate()
    services = Services.build(store, backend)
    ctx = CallContext(Principal("bench"), "bench-tenant")
    key = services.keys.create(ctx, KeySpec(name="bench"))

    with backend.pool.checkout() as pooled:
        raw_key = pooled.session.generate_key(
            KeyType.AES, 256, store=False, template={Attribute.ENCRYPT: True, Attribute.SENSITIVE: True}
        )
        iv, aad, data = os.urandom(12), os.urandom(16), os.urandom(32)

        def raw() -> object:
            return raw_key.encrypt(data, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(iv, aad))

        version = services.keys.current_version(ctx, key)
        ref = KeyRef(version.id, version.wrapped)
        from hsmbridge.metrics import HsmOperationTimer, _timed

        metered = _timed(backend.gcm_encrypt, HsmOperationTimer().series("CKM_AES_GCM", "encrypt"))
        layers: dict[str, Callable[[], object]] = {
            "raw": raw,
            "backend": lambda: backend.gcm_encrypt(ref, data, aad),
            "metered": lambda: metered(ref, data, aad),
            "service": lambda: services.envelopes.wrap(ctx, key.id, data, ["0123456789abcdef"]),
        }
        results: dict[str, list[float]] = {name: [] for name in layers}
        results["grpc"] = []
        results["grpc-bare"] = []
        daemon = _start_daemon(workdir, pin)
        try:
            grpc_call, bare_call = _grpc_calls(daemon, key.id)
            for _ in range(args.runs):
                for name, fn in layers.items():
                    results[name].append(measure(fn, args.seconds))
                results["grpc"].append(measure(grpc_call, args.seconds))
                results["grpc-bare"].append(measure(bare_call, args.seconds))
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        raw_key.destroy()
    services.close()

    raw_median = statistics.median(results["raw"])
    runs = f"{args.runs} runs x {args.seconds:.0f} s"
    print(f"\nAES-256-GCM encrypt, 32 B + 16 B AAD, one thread; {runs}; SoftHSM2")
    print(f"{'layer':10} {'median ops/s':>13} {'min-max':>19} {'vs raw':>7}")
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"{name:10} {median:13,.0f} {min(values):9,.0f}-{max(values):<9,.0f} {median / raw_median:7.2f}"
        )
    grpc_ratio = statistics.median(results["grpc"]) / statistics.median(results["grpc-bare"])
    print(f"gRPC Wrap / bare gRPC call on the same daemon: {grpc_ratio:.2f}")
    return 0


def _start_daemon(workdir: Path, pin: str):  # type: ignore[no-untyped-def]
    import subprocess

    env = {
        **os.environ,
        "HSMBRIDGE_HSM__TOKEN_LABEL": "bench",
        "HSMBRIDGE_HSM__PIN_FILE": str(workdir / "pin"),
        "HSMBRIDGE_STORE__PATH": str(workdir / "bench.db"),
        "HSMBRIDGE_GRPC__LISTEN": "127.0.0.1:0",
        "HSMBRIDGE_REST__LISTEN": "127.0.0.1:0",
        "HSMBRIDGE_METRICS__LISTEN": "127.0.0.1:0",
        "HSMBRIDGE_SERVER__WORKERS": "1",
        "HSMBRIDGE_SERVER__LOG_LEVEL": "WARNING",
    }
    import time

    # stdout to a file: the audit log writes a line per call, which would fill an unread pipe
    log = workdir / "daemon.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hsmbridge.cli", "serve"], env=env, cwd=workdir, stdout=out, text=True
        )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        for line in log.read_text().splitlines():
            if "gRPC listening on" in line:
                proc.address = line.rsplit(" ", 1)[1].strip()  # type: ignore[attr-defined]
                return proc
        time.sleep(0.1)
    raise RuntimeError("daemon did not start")


def _grpc_calls(daemon, key_id: str) -> tuple[Callable[[], object], Callable[[], object]]:  # type: ignore[no-untyped-def]
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc

    channel = grpc.insecure_channel(daemon.address)
    stub = crypto_pb2_grpc.CryptoServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    request = crypto_pb2.WrapRequest(key_id=key_id, plaintext=os.urandom(32), aad=["0123456789abcdef"])
    md = (("x-hsmbridge-tenant", "bench-tenant"),)
    check = health_pb2.HealthCheckRequest()
    return (lambda: stub.Wrap(request, metadata=md)), (lambda: health.Check(check))


if __name__ == "__main__":
    sys.exit(main())
