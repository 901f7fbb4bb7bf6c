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

    .venv/bin/python -m benchmarks.layers --micro [--runs 5]

The per-request layers around the HSM call, each alone, in CPU µs per call (`time.process_time`
over many calls, so other load on the box inflates it far less than a throughput
figure): authenticate (a dev bearer token, REST and gRPC metadata), authorise, rate-limit,
metadata parsing (gRPC metadata to tenant and correlation id; the REST action of a path), the
audit event (built and rendered; written to a file; through the group-commit writer), the
envelope (AAD encoding and envelope bytes), JSON (request body in, key-action answer out) and the
whole security gate around a no-op. No HSM, no daemon: ≈20 s.
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
    parser.add_argument("--micro", action="store_true", help="only the per-request layers, in CPU µs")
    args = parser.parse_args()
    if args.micro:
        return micro(args.runs)

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


def cpu_us(fn: Callable[[], object], calls: int = 20_000) -> float:
    """CPU µs per call of `fn` (the whole process) (after a warm-up)."""
    for _ in range(min(500, calls)):
        fn()
    start = time.process_time()  # the process: the audit writer thread's CPU counts too
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


class _Context:
    """What grpc.aio's servicer context offers the metadata code."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"


def micro_layers(workdir: Path) -> dict[str, Callable[[], object]]:
    import asyncio
    import base64

    from hsmbridge.core.envelope import Envelope, associated_data
    from hsmbridge.grpc.context import CORRELATION_KEY, metadata_of, tenant_of
    from hsmbridge.rest.actions import KeyActionResponse
    from hsmbridge.rest.bodies import parse_json
    from hsmbridge.security.audit import AuditLog, FileSink, NullSink
    from hsmbridge.security.authz import ACTIONS, Authorizer, rest_action, rpc_action
    from hsmbridge.security.dev import DevIdentities
    from hsmbridge.security.gate import SecurityGate
    from hsmbridge.security.ratelimit import RateLimitConfig, RateLimiter

    dev = DevIdentities({"bench-token": "IBMid-bench"})
    identity = dev.identify_rest("Bearer bench-token")
    authorizer = Authorizer()
    wrap_action = ACTIONS["kms.secrets.wrap"]
    limiter = RateLimiter.from_config(RateLimitConfig())
    metadata = (
        ("x-hsmbridge-tenant", "bench-tenant"),
        ("correlation-id", "5b7a9c1e-1111-4222-8333-444455556666"),
        ("user-agent", "grpc-c/50.0"),
        ("authorization", "Bearer bench-token"),
    )
    context = _Context(metadata)
    file_gate = SecurityGate(authorizer, AuditLog(FileSink(workdir / "audit.jsonl")))
    writer_gate = SecurityGate(authorizer, AuditLog(FileSink(workdir / "audit-writer.jsonl")))
    null_gate = SecurityGate(authorizer, AuditLog(NullSink()), limiter)
    key_id, version_id = "0a1b2c3d-0000-4000-8000-000000000000", "0a1b2c3d-0000-4000-8000-000000000001"
    body = b'{"plaintext":"' + base64.b64encode(os.urandom(32)) + b'","aad":["0123456789abcdef"]}'
    answer = {"ciphertext": base64.b64encode(os.urandom(77)).decode(), "keyVersion": {"id": version_id}}
    path = f"/api/v2/keys/{key_id}/actions/wrap"

    def gate_call(gate: SecurityGate) -> Callable[[], object]:
        def run() -> None:
            with gate.call(
                wrap_action, lambda: identity, "bench-tenant", transport="rest", client="127.0.0.1:5"
            ) as record:
                record.key(key_id, version_id)

        return run

    loop = asyncio.new_event_loop()

    async def one(gate: SecurityGate = writer_gate) -> None:
        async with gate.acall(
            wrap_action, lambda: identity, "bench-tenant", transport="rest", client="127.0.0.1:5"
        ) as record:
            record.key(key_id, version_id)

    def gate_acall(gate: SecurityGate) -> Callable[[], object]:
        async def hundred() -> None:
            await asyncio.gather(*(one(gate) for _ in range(100)))

        def run() -> None:  # 100 calls in flight, as under load; cpu_us divides by 100
            loop.run_until_complete(hundred())

        return run

    null_audit = AuditLog(NullSink())
    fields = {
        "event": "kms.secrets.wrap",
        "outcome": "success",
        "principal": "IBMid-bench",
        "instance": "bench-tenant",
        "key_id": key_id,
        "key_version": version_id,
        "correlation_id": "5b7a9c1e-1111-4222-8333-444455556666",
        "client": "127.0.0.1:5",
        "latency_ms": 0.123456,
        "transport": "rest",
        "auth_method": "dev",
    }

    def grpc_metadata() -> object:
        md = metadata_of(context)  # type: ignore[arg-type]
        return tenant_of(md), md.get(CORRELATION_KEY), rpc_action("/hsmbridge.v1.CryptoService/Wrap")

    return {
        "authenticate (REST bearer, dev token)": lambda: dev.identify_rest("Bearer bench-token"),
        "authenticate (gRPC metadata, dev)": lambda: dev.identify_context(context),  # type: ignore[arg-type]
        "authorise": lambda: authorizer.authorize(identity, wrap_action, "bench-tenant"),
        "rate-limit": lambda: limiter.acquire("bench-tenant", wrap_action.action_class, 1.0),
        "metadata parsing (gRPC)": grpc_metadata,
        "REST action of a path": lambda: rest_action("POST", path),
        "audit event via AuditLog.record (no sink)": lambda: null_audit.record(**fields),
        "gate + audit event written to a file (sync)": gate_call(file_gate),
        "gate, no sink (the gate alone, sync)": gate_call(null_gate),
        **(
            {
                "async gate, no sink (100 in flight)": gate_acall(null_gate),
                "async gate + audit via the group-commit writer (100 in flight)": gate_acall(writer_gate),
            }
            if hasattr(writer_gate, "acall")
            else {}
        ),
        "envelope (AAD + envelope bytes)": lambda: (
            Envelope(version_id, b"\x00" * 12, b"\x01" * 48).to_bytes()
            + associated_data(tenant="bench-tenant", key_id=key_id, key_version_id=version_id, aad=["a" * 16])
        ),
        "JSON in (request body)": lambda: parse_json(body),
        "JSON out (key-action answer)": lambda: KeyActionResponse(answer).body,
    }


def micro(runs: int) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="hsmbridge-layers-"))
    layers = micro_layers(workdir)
    results: dict[str, list[float]] = {name: [] for name in layers}
    for _ in range(runs):
        for name, fn in layers.items():
            per = 100 if "100 in flight" in name else 1
            results[name].append(cpu_us(fn, 20_000 // per) / per)
    print(f"\nPer-request layers, CPU µs per call (process time), median and min–max of {runs} runs")
    print("| layer | µs/call | min–max |")
    print("|---|---:|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f} |")
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
