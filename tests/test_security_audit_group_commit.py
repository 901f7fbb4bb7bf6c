"""The audit writer thread (group commit): events of concurrent calls are written in one batch,
each success waits for its own batch, and fail-closed still refuses a success whose event could
not be written — through `SecurityGate.acall`, the path every REST request and RPC takes."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from hsmbridge.errors import HsmUnavailable, NotFound, Reason
from hsmbridge.security.audit import AuditLog, MemorySink, StdoutSink
from hsmbridge.security.authz import ACTIONS, Authorizer
from hsmbridge.security.dev import full_rights
from hsmbridge.security.gate import SecurityGate

WRAP = ACTIONS["kms.secrets.wrap"]


class BatchingSink(MemorySink):
    """Records the batches it was handed; `gate` holds the writer until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.broken = False

    def write_lines(self, lines: list[str]) -> None:
        self.gate.wait(10)
        if self.broken:
            raise OSError(28, "No space left on device")
        self.batches.append(list(lines))
        self.lines.extend(lines)


async def _call(gate: SecurityGate, instance: str, fail: bool = False) -> None:
    async with gate.acall(WRAP, lambda: full_rights("p"), instance, transport="grpc") as record:
        record.key("k")
        if fail:
            raise NotFound("no such key", reason=Reason.KEY_NOT_FOUND)


def test_a_success_returns_only_once_its_event_is_written() -> None:
    sink = BatchingSink()
    audit = AuditLog(sink, fail_closed=True)
    gate = SecurityGate(Authorizer(), audit)

    async def main() -> None:
        sink.gate.clear()
        call = asyncio.ensure_future(_call(gate, "t1"))
        await asyncio.sleep(0.05)
        assert not call.done() and sink.lines == []  # the answer waits for the write
        sink.gate.set()
        await asyncio.wait_for(call, 10)
        assert len(sink.events()) == 1 and sink.events()[0]["outcome"] == "success"

    asyncio.run(main())
    audit.close()


def test_concurrent_calls_share_one_write() -> None:
    sink = BatchingSink()
    audit = AuditLog(sink)
    gate = SecurityGate(Authorizer(), audit)

    async def main() -> None:
        await _call(gate, "warm-up")  # the writer thread exists and waits
        sink.gate.clear()
        first = asyncio.ensure_future(_call(gate, "first"))
        await asyncio.sleep(0.05)  # the writer took `first` and is held inside its write
        rest = [asyncio.ensure_future(_call(gate, f"t{i}", fail=i % 2 == 1)) for i in range(20)]
        await asyncio.sleep(0.05)
        sink.gate.set()
        await asyncio.wait_for(first, 10)
        results = await asyncio.wait_for(asyncio.gather(*rest, return_exceptions=True), 10)
        assert sum(isinstance(r, NotFound) for r in results) == 10

    asyncio.run(main())
    audit.close()
    assert [len(b) for b in sink.batches] == [1, 1, 20]  # the twenty queued while one was written
    events = sink.events()
    assert len(events) == 22 and {e["instance"] for e in events[2:]} == {f"t{i}" for i in range(20)}


def test_fail_closed_refuses_the_successes_of_a_failed_batch() -> None:
    sink = BatchingSink()
    audit = AuditLog(sink, fail_closed=True)
    gate = SecurityGate(Authorizer(), audit)
    sink.broken = True

    async def main() -> None:
        with pytest.raises(HsmUnavailable):
            await _call(gate, "t1")
        with pytest.raises(HsmUnavailable):  # known broken: refused before the work
            await _call(gate, "t1", fail=True)
        sink.broken = False
        audit._failing = False  # as a successful write after recovery would (see the sync tests)
        await _call(gate, "t1")

    asyncio.run(main())
    audit.close()
    assert len(sink.events()) == 1


def test_fail_open_answers_anyway_and_a_failed_call_keeps_its_error() -> None:
    sink = BatchingSink()
    audit = AuditLog(sink, fail_closed=False)
    gate = SecurityGate(Authorizer(), audit)
    sink.broken = True

    async def main() -> None:
        await _call(gate, "t1")
        with pytest.raises(NotFound):
            await _call(gate, "t1", fail=True)

    asyncio.run(main())
    audit.close()
    assert not audit.healthy


def test_stdout_gets_one_line_per_event_in_a_batch(capsys: pytest.CaptureFixture[str]) -> None:
    audit = AuditLog(StdoutSink())
    gate = SecurityGate(Authorizer(), audit)

    async def main() -> None:
        await asyncio.gather(*(_call(gate, f"t{i}") for i in range(5)))

    asyncio.run(main())
    audit.close()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all(line.startswith('{"event":"kms.secrets.wrap"') for line in lines)


def test_without_group_commit_the_event_is_written_inline() -> None:
    sink = BatchingSink()
    audit = AuditLog(sink, fail_closed=True, group_commit=False)
    gate = SecurityGate(Authorizer(), audit)
    asyncio.run(_call(gate, "t1"))
    assert audit._writer is None and len(sink.lines) == 1 and sink.batches == []
    sink.broken = True

    class Broken(MemorySink):
        def write(self, line: str) -> None:
            raise OSError(28, "No space left on device")

    broken_gate = SecurityGate(Authorizer(), AuditLog(Broken(), fail_closed=True, group_commit=False))
    with pytest.raises(HsmUnavailable):
        asyncio.run(_call(broken_gate, "t1"))


@pytest.mark.parametrize(
    ("sink", "stdout", "configured", "threaded"),
    [
        ("stdout", "pipe", None, True),
        ("stdout", "file", None, False),
        ("file", "pipe", None, False),
        ("stdout", "pipe", False, False),
        ("file", "file", True, True),
    ],
)
def test_the_writer_thread_is_for_a_stdout_that_can_stall_unless_configured(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sink: str,
    stdout: str,
    configured: bool | None,
    threaded: bool,
) -> None:
    """A pipe's reader (a container runtime's log driver) can stall it, so standard output gets
    the writer thread by default when it is a pipe; a file — the file sink, or stdout redirected
    to one — waits only for the page cache and is written inline, which costs less CPU per call."""
    import os

    from hsmbridge.security.audit import AuditConfig, build_audit_log

    if stdout == "pipe":
        read_end, write_end = os.pipe()
        out = os.fdopen(write_end, "w")
        os.close(read_end)
    else:
        out = (tmp_path / "stdout").open("w")
    monkeypatch.setattr("sys.stdout", out)
    path = str(tmp_path / "audit.jsonl") if sink == "file" else None
    audit = build_audit_log(AuditConfig(sink=sink, path=path, group_commit=configured))  # type: ignore[arg-type]
    try:
        assert audit.group_commit is threaded
    finally:
        audit.close()
        monkeypatch.undo()
        out.close()


@pytest.mark.parametrize("group_commit", [True, False])
def test_a_call_its_client_cancelled_is_audited_as_cancelled_not_internal(group_commit: bool) -> None:
    """Load generators and impatient clients cancel calls in flight; the cancellation lands in
    the handler. The event says CANCELLED: an INTERNAL would send someone looking for a fault."""
    import json

    sink = MemorySink()
    audit = AuditLog(sink, group_commit=group_commit)
    gate = SecurityGate(Authorizer(), audit)
    started = asyncio.Event()

    async def slow() -> None:
        async with gate.acall(WRAP, lambda: full_rights("p"), "t1", transport="grpc") as record:
            record.key("k")
            started.set()
            await asyncio.sleep(10)

    async def main() -> None:
        call = asyncio.ensure_future(slow())
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    audit.close()
    (event,) = [json.loads(line) for line in sink.lines]
    assert event["outcome"] == "failure" and event["reason"] == "CANCELLED"
