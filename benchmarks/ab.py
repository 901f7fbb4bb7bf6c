"""Before/after of a change, in one run: the same hot rows against daemons started from two (or
more) source trees, interleaved run by run so the machine's noise falls on every tree alike.

    .venv/bin/python -m benchmarks.ab --tree before=/tmp/base --tree after=. \\
        [--rows rest-wrap,grpc-wrap,batch1000] [--runs 3] [--seconds 3] [--extra-path DIR]

Each tree runs as `hsmbridge serve --workers 1` with PYTHONPATH pointing at it (its own throw-away
token and store), so the server CPU per request read from /proc is one process's, with the
audit trail on (stdout to a file) exactly as shipped. `--extra-path NAME=DIR` prepends DIR to one
tree's PYTHONPATH (e.g. libraries being evaluated before they are installed), `--env
NAME=VAR=VALUE` sets a variable for one tree's daemon (a tree may be given twice under two
names, to compare settings). Prints, per row,
each tree's median req/s and median server CPU µs per operation, and the ratio to the first tree.
Why it exists: `make bench` takes minutes and compares against other servers; a move on the
request path needs its own before/after, and only same-run comparisons mean anything on this box.
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import sys
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from benchmarks.common import Daemon, LoadResult, h2load, new_workspace, rest, settle, wrk
from benchmarks.run import AAD, create_key, crypto_url, kp_headers, wrk_post_script

ROWS = ("rest-wrap", "rest-unwrap", "grpc-wrap", "grpc-unwrap", "batch1000")


def bodies(d: Daemon, key_id: str) -> dict[str, object]:
    from benchmarks.run import grpc_bodies

    grpc = grpc_bodies(d, key_id)
    plaintext = base64.b64encode(os.urandom(32)).decode()
    ciphertext = rest(
        d.rest, "POST", f"/api/v2/keys/{key_id}/actions/wrap", {"plaintext": plaintext, "aad": [AAD]}
    )["ciphertext"]
    return {
        **grpc,
        "rest-wrap": {"plaintext": plaintext, "aad": [AAD]},
        "rest-unwrap": {"ciphertext": ciphertext, "aad": [AAD]},
    }


def row(
    name: str, d: Daemon, key_id: str, body: dict[str, object], seconds: float
) -> Callable[[], LoadResult]:
    pids = d.pids()
    root = d.ws.root
    if name.startswith("rest-"):
        action = name.removeprefix("rest-")
        return lambda: wrk(
            f"{d.rest}/api/v2/keys/{key_id}/actions/{action}",
            wrk_post_script(body[name], kp_headers()),  # type: ignore[arg-type]
            connections=32,
            seconds=seconds,
            workdir=root,
            server_pids=pids,
        )
    method, frame, connections = {
        "grpc-wrap": ("Wrap", body["Wrap"], 16),
        "grpc-unwrap": ("Unwrap", body["Unwrap"], 16),
        "batch1000": ("WrapBatch", body["WrapBatch1000"], 2),
    }[name]
    return lambda: h2load(
        crypto_url(d, method),
        frame,  # type: ignore[arg-type]
        connections=connections,
        seconds=seconds,
        workdir=root,
        server_pids=pids,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH")
    parser.add_argument("--extra-path", action="append", default=[], help="NAME=DIR")
    parser.add_argument("--env", action="append", default=[], help="NAME=VAR=VALUE for one tree's daemon")
    parser.add_argument("--rows", default="rest-wrap,grpc-wrap")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    extra = dict(e.split("=", 1) for e in args.extra_path)
    env: dict[str, dict[str, str]] = {}
    for item in args.env:
        label, var, value = item.split("=", 2)
        env.setdefault(label, {})[var] = value
    rows = [r for r in args.rows.split(",") if r]
    for name in rows:
        if name not in ROWS:
            raise SystemExit(f"unknown row {name}: one of {', '.join(ROWS)}")

    results: dict[tuple[str, str], list[LoadResult]] = {}
    with ExitStack() as stack:
        daemons: dict[str, tuple[Daemon, str, dict[str, object]]] = {}
        for label, path in trees.items():
            ws = new_workspace()
            pythonpath = os.pathsep.join(
                p for p in (extra.get(label), str(Path(path).resolve()), os.environ.get("PYTHONPATH")) if p
            )
            d = stack.enter_context(Daemon(ws, 1, PYTHONPATH=pythonpath, **env.get(label, {})))
            key_id = create_key(d)
            daemons[label] = (d, key_id, bodies(d, key_id))
        for run in range(args.runs):
            for name in rows:
                for label, (d, key_id, body) in daemons.items():
                    multiplier = 1000 if name == "batch1000" else 1
                    result = row(name, d, key_id, body, args.seconds)()
                    result.rps *= multiplier
                    result.requests *= multiplier
                    results.setdefault((name, label), []).append(result)
                    print(
                        f"run {run + 1} {name:12} {label:10} {result.rps:10,.0f}/s "
                        f"{result.server_cpu_per_op * 1e6:8,.1f} µs/op failed={result.failed}",
                        file=sys.stderr,
                        flush=True,
                    )
                    settle(0.3)
    first = next(iter(trees))
    print(f"\n{args.runs} runs × {args.seconds:g} s, 1 worker each, interleaved; medians")
    print("| row | tree | ops/s | server CPU µs/op | CPU vs " + first + " | failed |")
    print("|---|---|---:|---:|---:|---:|")
    for name in rows:
        base = statistics.median(r.server_cpu_per_op for r in results[(name, first)])
        for label in trees:
            series = results[(name, label)]
            rps = statistics.median(r.rps for r in series)
            cpu = statistics.median(r.server_cpu_per_op for r in series)
            failed = sum(r.failed for r in series)
            print(f"| {name} | {label} | {rps:,.0f} | {cpu * 1e6:,.1f} | {cpu / base:.2f} | {failed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
