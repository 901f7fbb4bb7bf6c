"""A soak at a steady rate: does anything grow while the daemon serves?

    .venv/bin/python -m benchmarks.soak [--minutes 10] [--markdown FILE]     (make soak)

Two workers (the default pool of 2 RSA-4096 keypairs each) serve, for `--minutes`, at fixed
rates set with h2load's `--rps` (not as fast as possible: a leak shows as growth at a constant
load, not as a throughput figure):

- gRPC unary Wrap, 1,000 calls/s; gRPC unary Unwrap, 500 calls/s;
- REST wrap through the Key Protect facade (HTTP/1.1), 200 requests/s;
- an import token created every 20 s (takes a pooled keypair, replaces and destroys the previous
  token's keypair, and makes the pool refill).

Every 15 s it samples each worker's RSS, the handle cache size (the session objects a worker
holds: one unwrapped key per cached key version), open PKCS#11 sessions, and — from a child
process, since this one never loads PKCS#11 — the token objects. Verdict: RSS after the first two
minutes grows by less than 5 % and the session-object and token-object counts do not drift.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import TENANT, TOKEN, Daemon, need, new_workspace, rest, rss_kib
from benchmarks.run import AAD, create_key, crypto_url, grpc_bodies

SAMPLE_EVERY = 15.0
TOKEN_EVERY = 20.0


def token_objects(env: dict[str, str]) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.raw", "count"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return json.loads(out.stdout) if out.returncode == 0 else {"token_objects": -1, "pool_labelled": -1}


def steady(
    url: str, body: bytes, rate: int, seconds: float, workdir: Path, *, h1: bool = False
) -> subprocess.Popen[str]:
    """h2load at a fixed total `rate`: 10 clients, each at rate/10 requests per second."""
    body_file = workdir / f"soak-{abs(hash(url))}.body"
    body_file.write_bytes(body)
    headers = (
        [
            "-H",
            "content-type: application/json",
            "-H",
            f"authorization: Bearer {TOKEN}",
            "-H",
            f"bluemix-instance: {TENANT}",
        ]
        if h1
        else [
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-H",
            f"x-hsmbridge-tenant: {TENANT}",
        ]
    )
    args = [need("h2load"), *(["--h1"] if h1 else []), "-c", "10", "-t", "1", f"--rps={rate / 10:g}"]
    args += ["-D", f"{seconds:g}", "-d", str(body_file), *headers, url]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--markdown")
    args = parser.parse_args()
    seconds = args.minutes * 60
    ws = new_workspace()
    samples: list[dict[str, float]] = []
    with Daemon(ws, 2, pool=2) as d:
        key_id = create_key(d)
        bodies = grpc_bodies(d, key_id)
        rest_body = json.dumps(
            {"plaintext": base64.b64encode(os.urandom(32)).decode(), "aad": [AAD]}
        ).encode()
        loads = [
            steady(crypto_url(d, "Wrap"), bodies["Wrap"], 1000, seconds, ws.root),
            steady(crypto_url(d, "Unwrap"), bodies["Unwrap"], 500, seconds, ws.root),
            steady(f"{d.rest}/api/v2/keys/{key_id}/actions/wrap", rest_body, 200, seconds, ws.root, h1=True),
        ]
        started = time.monotonic()
        next_sample = next_token = started
        tokens = 0
        print(
            f"soak: {args.minutes:g} min at 1,700 req/s on 2 workers; sampling every {SAMPLE_EVERY:g} s",
            flush=True,
        )
        while time.monotonic() - started < seconds:
            now = time.monotonic()
            if now >= next_token:
                rest(d.rest, "POST", "/api/v2/import_token", {"expiration": 600, "maxAllowedRetrievals": 1})
                tokens += 1
                next_token += TOKEN_EVERY
            if now >= next_sample:
                metrics = d.scrape()

                def total(name: str, metrics: dict = metrics) -> float:  # type: ignore[type-arg]
                    return sum(v for _, v in metrics.get(name, []))

                workers = d.worker_pids()
                sample = {
                    "t": now - started,
                    **{f"rss_w{i}_mib": rss_kib(pid) / 1024 for i, pid in enumerate(workers)},
                    "cache_objects": total("hsmbridge_handle_cache_size"),
                    "sessions_open": total("hsmbridge_hsm_sessions_open"),
                    "restarts": total("hsmbridge_worker_restarts_total"),
                    **token_objects(ws.env()),
                }
                samples.append(sample)
                print("  " + "  ".join(f"{k}={v:,.1f}" for k, v in sample.items()), flush=True)
                next_sample += SAMPLE_EVERY
            time.sleep(0.2)
        outputs = [p.communicate(timeout=120)[0] for p in loads]
        not_ok = d.grpc_not_ok()
    done = [
        int(line.split()[3]) for out in outputs for line in out.splitlines() if line.startswith("requests:")
    ]
    warm = [s for s in samples if s["t"] >= min(120.0, seconds / 5)] or samples
    rss_keys = [k for k in samples[0] if k.startswith("rss_")]
    growth = {k: (warm[-1][k] - warm[0][k]) / warm[0][k] * 100 for k in rss_keys}
    drift = {
        k: (min(s[k] for s in warm), max(s[k] for s in warm))
        for k in ("cache_objects", "sessions_open", "token_objects")
    }
    flat = all(g < 5 for g in growth.values())
    constant = (
        drift["cache_objects"][0] == drift["cache_objects"][1]
        and drift["token_objects"][1] - drift["token_objects"][0] <= 2
    )
    lines = [
        f"## Soak of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {args.minutes:g} min, 2 workers",
        "",
        f"Requests completed: {sum(done):,} ({', '.join(f'{n:,}' for n in done)} for Wrap, Unwrap, "
        f"REST wrap); gRPC calls not OK: {not_ok:.0f}; import tokens created: {tokens}.",
        "",
        "| t (s) | " + " | ".join(k for k in samples[0] if k != "t") + " |",
        "|---:|" + "---:|" * (len(samples[0]) - 1),
    ]
    for s in samples:
        lines.append(f"| {s['t']:.0f} | " + " | ".join(f"{v:,.1f}" for k, v in s.items() if k != "t") + " |")
    lines += [
        "",
        "RSS growth after warm-up: "
        + ", ".join(f"{k} {v:+.1f} %" for k, v in growth.items())
        + f" — {'flat' if flat else 'GROWING'}.",
        "Session objects (handle cache) min–max after warm-up: "
        f"{drift['cache_objects'][0]:.0f}–{drift['cache_objects'][1]:.0f}; sessions open "
        f"{drift['sessions_open'][0]:.0f}–{drift['sessions_open'][1]:.0f}; token objects "
        f"{drift['token_objects'][0]:.0f}–{drift['token_objects'][1]:.0f} (pool refills move it by ±2)"
        f" — {'constant' if constant else 'DRIFTING'}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    return 0 if flat and constant else 1


if __name__ == "__main__":
    sys.exit(main())
