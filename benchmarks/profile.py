"""Where a hot row's server CPU goes, by owner: hsmbridge's code, the HSM, or a library.

    .venv/bin/python -m benchmarks.profile [--rows rest-wrap,grpc-wrap,batch1000] [--seconds 6]

One single-worker daemon (as `benchmarks.ab` starts it: its own token, audit on to a file) under
each row's load. Two readings per row, taken over the same window:

- **threads**: CPU seconds per thread of the worker, from /proc/<pid>/task/*/stat. gRPC's C-core
  poller threads and the audit writer run beside the Python thread; py-spy does not see the first.
- **owners**: `py-spy record` samples of the Python threads (on CPU only), each charged to the
  innermost frame's owner. Without `--native`, time inside a C call is charged to the Python
  frame that made it: a PKCS#11 call to hsmbridge/hsm/ (where python-pkcs11 is called), a
  protobuf parse to its caller. So "hsmbridge hsm/" is the HSM call plus its thin layer, and
  "hsmbridge, other" is the gate, audit, envelope, handlers and middleware hsmbridge owns.

Why it exists: issue 11 asks, for a target `make bench` misses, for the profile that shows where
the rest goes; this prints it for the same rows, in the same shape every time.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from benchmarks.ab import ROWS, bodies, row
from benchmarks.common import Daemon, LoadResult, grpc_frame, h2load, new_workspace, settle
from benchmarks.run import AAD, create_key
from hsmbridge.v1 import crypto_pb2

_FRAME = re.compile(r"^(?P<func>.*) \((?P<path>[^:()]*)(?::\d+)?\)$")
#: owner of a frame, by its file path (first match wins)
_OWNERS = (
    ("/hsmbridge/hsm/", "hsmbridge hsm/ (the PKCS#11 calls)"),
    ("/hsmbridge/v1/", "generated protobuf code"),
    ("/hsmbridge/", "hsmbridge, other (gate, audit, envelope, handlers, middleware)"),
    ("/grpc/", "grpc.aio (library)"),
    ("/google/protobuf/", "protobuf (library)"),
    ("/uvicorn/", "uvicorn (library)"),
    ("/starlette/", "Starlette/FastAPI (library)"),
    ("/fastapi/", "Starlette/FastAPI (library)"),
    ("/asyncio/", "asyncio / uvloop (library)"),
    ("/uvloop/", "asyncio / uvloop (library)"),
    ("/pkcs11/", "hsmbridge hsm/ (the PKCS#11 calls)"),
)


def owner(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    path = "/" + (match.group("path") if match else frame)  # py-spy prints paths from sys.path
    for needle, name in _OWNERS:
        if needle in path:
            return name
    return "other Python (stdlib, other libraries)"


def owners_of(raw: Path) -> collections.Counter[str]:
    """py-spy's raw (collapsed) output: `frame;frame;...;leaf count` per distinct stack, outermost
    first; the thread is the first element with --threads."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if "(" in f and not f.startswith(("process ", "thread "))]
        if frames:
            counts[owner(frames[-1])] += int(count)
    return counts


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) per thread name of `pid` so far."""
    tick = 100.0
    out: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[re.sub(r"\d+$", "", name) or name] += (int(fields[11]) + int(fields[12])) / tick
    return out


def profile(pid: int, name: str, load: Callable[[], LoadResult], seconds: float, workdir: Path) -> str:
    """Profile `pid` for `seconds` while `load` (started first, and running longer) drives it."""
    raw = workdir / f"profile-{name}.txt"
    done: list[LoadResult] = []
    loader = threading.Thread(target=lambda: done.append(load()))
    loader.start()
    time.sleep(1.0)  # past the connection set-up
    before = thread_cpu(pid)
    started = time.monotonic()
    subprocess.run(
        [
            str(Path(sys.executable).with_name("py-spy")),
            *("record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"),
            *("--format", "raw", "--nonblocking", "--output", str(raw)),
        ],
        capture_output=True,
        check=True,
    )
    after, elapsed = thread_cpu(pid), time.monotonic() - started
    loader.join()
    rps = done[0].rps if done else 0.0
    threads = {n: after[n] - before.get(n, 0.0) for n in after}
    total = sum(threads.values())
    per_op = total / (rps * elapsed) * 1e6 if rps else 0.0
    python = sum(v for n, v in threads.items() if n.startswith(("python", "hsmbridge-")))
    counts = owners_of(raw)
    samples = sum(counts.values()) or 1
    # the Python threads' CPU split by the samples' owners; C-core threads stay as measured
    python_per_op = python / (rps * elapsed) * 1e6 if rps else 0.0
    return "\n".join(
        [
            f"\n#### {name}: {rps:,.0f} ops/s, worker CPU {total / elapsed:.2f} cores, "
            f"{per_op:,.0f} µs per op",
            "",
            "| thread | share of the worker's CPU | µs per op |",
            "|---|---:|---:|",
            *(
                f"| {n} | {v / total:.0%} | {v / total * per_op:,.0f} |"
                for n, v in sorted(threads.items(), key=lambda kv: -kv[1])
                if v > 0.005 * total
            ),
            "",
            f"| owner, in the Python threads (py-spy, {samples:,} samples) | share | µs per op |",
            "|---|---:|---:|",
            *(
                f"| {n} | {c / samples:.0%} | {c / samples * python_per_op:,.0f} |"
                for n, c in counts.most_common()
            ),
        ]
    )


@contextmanager
def bare_echo() -> Iterator[tuple[int, str]]:
    """benchmarks.echo: the bare grpc.aio server the unary targets compare with."""
    echo = subprocess.Popen([sys.executable, "-m", "benchmarks.echo"], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None
        line = echo.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"benchmarks.echo did not start (exit status {echo.poll()})")
        yield echo.pid, line.rsplit(" ", 1)[1].strip()
    finally:
        echo.terminate()
        echo.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", default="rest-wrap,grpc-wrap,batch1000")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--markdown", help="also append the tables to this file")
    parser.add_argument("--env", action="append", default=[], help="VAR=VALUE for the daemon")
    parser.add_argument("--no-echo", dest="echo", action="store_false", help="skip the bare gRPC echo")
    args = parser.parse_args()
    if shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None:
        raise SystemExit("py-spy is not installed in this venv (`make bench` installs it)")
    rows = [r for r in args.rows.split(",") if r]
    for name in rows:
        if name not in ROWS:
            raise SystemExit(f"unknown row {name}: one of {', '.join(ROWS)}")
    out = ["\n### Where the CPU goes (benchmarks.profile, 1 worker, audit on)"]
    env = dict(item.split("=", 1) for item in args.env)
    with Daemon(new_workspace(), 1, **env) as d:
        key_id = create_key(d)
        body = bodies(d, key_id)
        for name in rows:
            load = row(name, d, key_id, body, args.seconds + 2)
            out.append(profile(d.worker_pids()[0], name, load, args.seconds, d.ws.root))
            settle(0.5)
        if args.echo:
            frame = grpc_frame(
                crypto_pb2.WrapRequest(key_id=key_id, plaintext=os.urandom(32), aad=[AAD]).SerializeToString()
            )
            with bare_echo() as (pid, address):
                load = partial(
                    h2load,
                    f"http://{address}/hsmbridge.bench.Echo/Echo",
                    frame,
                    connections=16,
                    seconds=args.seconds + 2,
                    workdir=d.ws.root,
                    server_pids=[pid],
                )
                out.append(profile(pid, "bare gRPC echo, concurrency 16", load, args.seconds, d.ws.root))
    text = "\n".join(out) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "a") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
