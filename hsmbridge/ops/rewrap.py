"""`hsmbridge rewrap KEY --input FILE|- --output FILE`: rewrap a table's worth of ciphertexts under
the key's current version after a rotation, resumably.

Input: one ciphertext per line, base64, or a JSON object ``{"ciphertext": "...", "aad": [...]}``
when items carry AAD (``--aad`` applies one AAD to every plain line); blank lines are skipped.
Items stream through one `CryptoStream` call in batches (`hsmbridge.client.Client.bulk_rewrap`),
so the cost is a round trip per batch, not per item.

Output: one JSON line per input item, in input order, written as results arrive:
``{"index": 0, "ok": true, "ciphertext": "...", "key_version_id": "...", "rewrapped_key_version_id": "..."}``
or ``{"index": 3, "ok": false, "code": "INVALID_ARGUMENT", "reason": "...", "message": "..."}``.
A bad item never stops the others; the exit status is 1 if any failed.

Resuming: line N of the output always belongs to item N of the input, so after an interruption
(Ctrl-C, a lost connection, a killed process) `--resume` keeps the complete lines already
written, drops a torn last line, skips that many input items and appends the rest. Rewrapping an
item twice would be harmless anyway (both results unwrap to the same data key).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import grpc
from google.rpc import code_pb2
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from hsmbridge.client import BulkResult, Client
from hsmbridge.ops.connection import UsageError, command, decode_base64
from hsmbridge.ops.output import b64

EXIT_INTERRUPTED = 130


class RateColumn(ProgressColumn):
    """Items per second over rich's recent-speed window."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="progress.data.speed")


def parse_line(line: str, default_aad: list[str]) -> tuple[bytes, list[str]]:
    text = line.strip()
    if text.startswith("{"):
        try:
            item = json.loads(text)
            aad = item.get("aad") or []
            if not isinstance(item.get("ciphertext"), str) or not all(isinstance(a, str) for a in aad):
                raise ValueError
        except (ValueError, AttributeError, TypeError):
            raise UsageError('a JSON line must be {"ciphertext": "<base64>", "aad": ["..."]}') from None
        return decode_base64(item["ciphertext"], "ciphertext"), list(aad)
    return decode_base64(text, "ciphertext"), default_aad


def items(
    source: IO[str], skip: int, default_aad: list[str], bad: dict[int, str]
) -> Iterator[tuple[bytes, list[str]]]:
    """The input's items from number `skip` on. A line that cannot be parsed is sent as an empty
    ciphertext (so numbering stays aligned) and its local error is kept in `bad` to report."""
    index = 0
    for number, line in enumerate(source, 1):
        if not line.strip():
            continue
        if index >= skip:
            try:
                yield parse_line(line, default_aad)
            except UsageError as exc:
                bad[index] = f"input line {number}: {exc}"
                yield b"", default_aad
        index += 1


def count_items(path: str) -> int | None:
    if path == "-":
        return None
    with open(path, encoding="utf-8", errors="replace") as source:
        return sum(1 for line in source if line.strip())


def completed_lines(path: Path) -> int:
    """How many complete result lines `path` holds; a torn last line (no newline, or not JSON)
    is cut off so the appended results start on a fresh line."""
    if not path.exists():
        return 0
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    lines = data[:keep].splitlines()
    while lines:
        try:
            json.loads(lines[-1])
            break
        except ValueError:
            keep -= len(lines.pop()) + 1
    if keep != len(data):
        with path.open("r+b") as out:
            out.truncate(keep)
    return len(lines)


def record(result: BulkResult, index: int, local_error: str | None) -> dict[str, Any]:
    if local_error is not None:
        return {"index": index, "ok": False, "code": "INVALID_ARGUMENT", "reason": "", "message": local_error}
    if result.ok:
        return {
            "index": index,
            "ok": True,
            "ciphertext": b64(result.ciphertext),
            "key_version_id": result.key_version_id,
            "rewrapped_key_version_id": result.rewrapped_key_version_id,
        }
    return {
        "index": index,
        "ok": False,
        "code": code_pb2.Code.Name(result.code),
        "reason": result.reason,
        "message": result.message,
    }


def progress_bar(total: int | None, quiet: bool) -> Progress:
    return Progress(
        TextColumn("rewrap"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=False,
    )


def rewrap(args: argparse.Namespace, client: Client) -> int:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.input != "-" and not Path(args.input).is_file():
        raise UsageError(f"the input file {args.input} does not exist")
    to_stdout = args.output == "-"
    out_path = Path(args.output)
    if to_stdout and args.resume:
        raise UsageError("--resume needs --output FILE (it continues that file)")
    if not to_stdout and out_path.exists() and out_path.stat().st_size and not args.resume:
        raise UsageError(f"{args.output} already holds results: --resume continues it, or remove it")
    done = 0 if to_stdout else completed_lines(out_path) if args.resume else 0
    total = count_items(args.input)
    if total is not None and done > total:
        raise UsageError(f"{args.output} holds {done} results but {args.input} only {total} items")

    bad: dict[int, str] = {}
    counts = {"ok": 0, "failed": 0}
    started = time.monotonic()
    index = done
    with ExitStack() as stack:
        source = (
            sys.stdin
            if args.input == "-"
            else stack.enter_context(open(args.input, encoding="utf-8", errors="replace"))
        )
        out = sys.stdout if to_stdout else stack.enter_context(out_path.open("a", encoding="utf-8"))
        bar = stack.enter_context(progress_bar(total, args.no_progress or to_stdout))
        task = bar.add_task("rewrap", total=total, completed=done)
        results = client.bulk_rewrap(
            args.key, items(source, done, list(args.aad or []), bad), batch_size=args.batch_size
        )
        try:
            for result in results:
                line = record(result, index, bad.pop(index, None))
                out.write(json.dumps(line) + "\n")
                counts["ok" if line["ok"] else "failed"] += 1
                index += 1
                bar.advance(task)
                if index % args.batch_size == 0:
                    out.flush()
        except KeyboardInterrupt:
            out.flush()
            bar.stop()
            print(
                f"hsmbridge rewrap: interrupted after {index} item(s); run the same command with --resume "
                "to continue",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except grpc.RpcError:
            out.flush()
            bar.stop()
            print(f"hsmbridge rewrap: stopped after {index} item(s); --resume continues", file=sys.stderr)
            raise
    summary = {
        "rewrapped": counts["ok"],
        "failed": counts["failed"],
        "skipped": done,
        "seconds": round(time.monotonic() - started, 3),
    }
    if args.json:
        print(json.dumps(summary), file=sys.stderr if to_stdout else sys.stdout)
    else:
        where = "" if to_stdout else f" into {args.output}"
        resumed = f" (resumed after {done})" if done else ""
        print(
            f"rewrapped {counts['ok']}, failed {counts['failed']}{resumed}{where} "
            f"in {summary['seconds']:.1f} s",
            file=sys.stderr,
        )
    return 1 if counts["failed"] else 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    r = sub.add_parser(
        "rewrap",
        parents=[common],
        help="rewrap many ciphertexts under a key's current version (streamed, resumable)",
        description=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("key", help="key id or alias")
    r.add_argument(
        "--input", "-i", default="-", help="one base64 ciphertext (or JSON item) per line; - is stdin"
    )
    r.add_argument(
        "--output", "-o", required=True, help="JSON lines of results, in input order (- is stdout)"
    )
    r.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --output")
    r.add_argument("--aad", action="append", help="AAD of every plain line (repeatable, in order)")
    r.add_argument("--batch-size", type=int, default=500, help="items per CryptoStream message (default 500)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r.set_defaults(func=command(rewrap))
