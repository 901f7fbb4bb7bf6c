"""Audit: one JSON line per call, named with Key Protect's event names.

What a line holds is fixed by `AuditEvent` — event, outcome, principal, instance, key id and
version, reason code, correlation id, client address, latency, timestamp (plus transport, how the
caller authenticated, and a fixed-word authentication cause). There is deliberately no free-form
field: `AuditEvent.from_fields` refuses any name outside the schema and any bytes value, so
``plaintext=…``, ``payload=…``, ``aad=…`` or ``authorization=…`` cannot be logged by accident, and
the reason is a code (``KEY_NOT_FOUND``), never an exception message.

Sinks: stdout (containers ship it), a file (appended, line-buffered, created 0600), or memory
(tests). `AuditLog.emit` decides what a failed write means: with ``fail_closed`` it raises
`HsmUnavailable` so the call is refused (503 / UNAVAILABLE) — an unaudited key operation is worse
than an unavailable one for deployments that must prove every use; without it the failure is
logged once per outage and the call proceeds.

To refuse *before* doing the work when the log is known to be broken, call `ensure_available()`
first; `emit()` after the work then covers a failure that starts mid-call (the response is
replaced by the error, so e.g. an unwrapped DEK is not returned unaudited).

Off the request path: `AuditLog.submit` hands an event to one writer thread that writes whatever
has queued up since its last write in one go (group commit: one write and flush for many
events, and the event loop never blocks on a slow disk or a full pipe). The caller awaits the
future it gets back, which resolves once its batch has been handed to the sink, so fail-closed
keeps its meaning: a success is not answered before its event is written, and a failed batch
fails every success waiting on it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import enum
import io
import json
import logging
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hsmbridge.errors import HsmBridgeError, HsmUnavailable, InternalError, Reason

log = logging.getLogger(__name__)

AUDIT_UNAVAILABLE_MSG = "the audit log cannot be written; the request was refused"
_EVENT_RE = re.compile(r"[a-z][a-z0-9-]*(\.[a-z0-9-]+)+")
_WORD_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_TEXT = 256


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


_SECOND: tuple[int, str] = (0, "1970-01-01T00:00:00")


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, the form Key Protect uses in its own timestamps.

    The date and time of day are formatted once per second (every event needs a timestamp, and
    `datetime.isoformat` was the largest single cost of building one)."""
    global _SECOND
    now = time.time()
    second = int(now)
    cached = _SECOND
    if cached[0] != second:
        cached = _SECOND = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{cached[1]}.{int((now - second) * 1000):03d}Z"


class AuditSchemaError(InternalError):
    """A caller tried to log something the schema does not allow: a bug, refused loudly."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    #: Key Protect's event name (``kms.secrets.wrap``, ``kms.import-token.create``…)
    event: str
    outcome: Outcome
    principal: str | None = None
    instance: str | None = None
    key_id: str | None = None
    key_version: str | None = None
    #: a reason code (`hsmbridge.errors.Reason`), never a message
    reason: str | None = None
    #: why authentication failed, as a fixed word (``expired``, ``bad_signature``…)
    cause: str | None = None
    correlation_id: str | None = None
    client: str | None = None
    latency_ms: float | None = None
    transport: Literal["rest", "grpc"] | None = None
    #: ``token``, ``jwt`` or ``mtls``
    auth_method: str | None = None
    timestamp: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        data = {name: getattr(self, name) for name in _FIELD_ORDER}
        _check(data)
        for name in _NORMALISED:
            if data[name] is not getattr(self, name):
                object.__setattr__(self, name, data[name])

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> AuditEvent:
        """The scrubber: build an event from loose fields, refusing any name outside the schema
        and any binary value (binary in an audit call is key material, a nonce or a ciphertext)."""
        if not FIELD_NAMES.issuperset(values):
            unknown = set(values) - FIELD_NAMES
            raise AuditSchemaError(f"audit events have no field(s) {', '.join(sorted(unknown))}")
        for name, value in values.items():
            if isinstance(value, bytes | bytearray | memoryview):
                raise AuditSchemaError(f"audit field {name} must not be binary")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _FIELD_ORDER}
        data["outcome"] = str(self.outcome)
        return data

    def to_json(self) -> str:
        """One line: ASCII-only JSON escapes every control character, so a value can never
        split or forge a line."""
        return _render(self.to_dict())


def audit_line(data: dict[str, Any]) -> str:
    """The JSON line of an event given as a dict of every field, in field order, checked exactly
    as `AuditEvent` checks it: the request path's way to an event without building the frozen
    dataclass (which costs more than the checks and the rendering together)."""
    _check(data)
    data["outcome"] = data["outcome"].value
    return _render(data)


def _render(data: dict[str, Any]) -> str:
    """orjson renders it (the same compact JSON as the stdlib's, several times faster); the rare
    line with non-ASCII text is rendered again by the stdlib, which escapes it."""
    line: str = orjson.dumps(data).decode()
    if line.isascii():
        return line
    return json.dumps(data, ensure_ascii=True, separators=(",", ":"))


def _check(data: dict[str, Any]) -> None:
    """`AuditEvent`'s schema on a dict of its fields: raise `AuditSchemaError`, or normalise in
    place (outcome as `Outcome`, client-controlled text bounded and defanged, latency rounded)."""
    event = data["event"]
    if not (isinstance(event, str) and event in _VALID_EVENTS):
        if not isinstance(event, str) or not _EVENT_RE.fullmatch(event):
            raise AuditSchemaError("audit event names look like kms.secrets.wrap")
        if len(_VALID_EVENTS) < 4096:  # names come from the action table: a handful
            _VALID_EVENTS.add(event)
    if type(data["outcome"]) is not Outcome:
        data["outcome"] = Outcome(data["outcome"])
    for name in _TEXT_FIELDS:
        value = data[name]
        if value is None:
            continue
        if not isinstance(value, str):
            raise AuditSchemaError(f"audit field {name} must be text")
        # Callers pass client-controlled text (correlation ids, aliases, addresses): bound and
        # defang it rather than fail the call over a log line.
        if len(value) > _MAX_TEXT or not value.isprintable():
            data[name] = "".join(c if c.isprintable() else "?" for c in value[:_MAX_TEXT])
    for name in ("reason", "cause", "auth_method"):
        value = data[name]
        if value is not None and not (isinstance(value, str) and value in _VALID_WORDS):
            if not isinstance(value, str) or not _WORD_RE.fullmatch(value):
                raise AuditSchemaError(f"audit field {name} must be a code, not prose")
            if len(_VALID_WORDS) < 4096:  # reason codes and auth methods: a fixed few
                _VALID_WORDS.add(value)
    if data["transport"] not in (None, "rest", "grpc"):
        raise AuditSchemaError("audit transport is rest or grpc")
    latency = data["latency_ms"]
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(latency, int | float):
            raise AuditSchemaError("audit latency_ms must be a number")
        data["latency_ms"] = round(float(latency), 3)


FIELD_NAMES = frozenset(f.name for f in fields(AuditEvent))
_FIELD_ORDER = tuple(f.name for f in fields(AuditEvent))
#: Event names and codes already checked against their patterns (the checks are per event).
_VALID_EVENTS: set[str] = set()
_VALID_WORDS: set[str] = set()
_TEXT_FIELDS = (
    "principal",
    "instance",
    "key_id",
    "key_version",
    "correlation_id",
    "client",
    "timestamp",
)
_NORMALISED = ("outcome", "latency_ms", *_TEXT_FIELDS)


#: the reason recorded for a call cancelled by its client (gRPC CANCELLED, a closed connection)
CANCELLED = "CANCELLED"


def reason_of(error: BaseException | None) -> tuple[str | None, str | None]:
    """(reason code, authentication cause) for an outcome: the domain reason of an
    `HsmBridgeError`, CANCELLED for a call its client gave up on (the task was cancelled inside
    the gate: nothing went wrong on the server, and an INTERNAL would send someone looking for a
    fault), INTERNAL for anything else. Never the message."""
    if error is None:
        return None, None
    if isinstance(error, asyncio.CancelledError):
        return CANCELLED, None
    if isinstance(error, HsmBridgeError):
        cause = getattr(error, "cause", None)
        return str(error.reason), cause if isinstance(cause, str) and _WORD_RE.fullmatch(cause) else None
    return str(Reason.INTERNAL), None


class AuditSink(Protocol):
    def write(self, line: str) -> None:
        """Write one line (without its newline); raise OSError when it cannot."""

    def close(self) -> None: ...


class StdoutSink:
    """Standard output, flushed per line. Resolved at write time, so redirection (and pytest's
    capture) applies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        with self._lock:
            out = sys.stdout
            out.write(line + "\n")
            out.flush()

    def write_lines(self, lines: list[str]) -> None:
        """A batch in one write and one flush (the group commit of `AuditLog.submit`)."""
        with self._lock:
            out = sys.stdout
            out.write("\n".join(lines) + "\n")
            out.flush()

    def close(self) -> None:
        return None


class FileSink:
    """An append-only file, line-buffered, created with `mode` (0600 by default).

    The file is opened lazily and reopened after a failed write, so an audit volume that comes
    back (or a rotated file, via `reopen`) is picked up without a restart. Symlinks are refused
    (``O_NOFOLLOW``): whoever can write the directory must not be able to point the audit trail
    elsewhere. The mode is enforced on regular files we open, whatever the umask."""

    def __init__(self, path: str | Path, mode: int = 0o600) -> None:
        self.path = Path(path)
        self.mode = mode
        self._file: io.TextIOWrapper | None = None
        self._lock = threading.Lock()

    def _open(self) -> io.TextIOWrapper:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, self.mode)
        try:
            info = os.fstat(fd)
            if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) != self.mode:
                os.fchmod(fd, self.mode)
            return io.open(fd, "a", buffering=1, encoding="utf-8", newline="\n")  # noqa: UP020
        except BaseException:
            os.close(fd)
            raise

    def write(self, line: str) -> None:
        with self._lock:
            try:
                if self._file is None:
                    self._file = self._open()
                self._file.write(line + "\n")
            except OSError:
                self._drop()
                raise

    def write_lines(self, lines: list[str]) -> None:
        """A batch in one write (the group commit of `AuditLog.submit`)."""
        self.write("\n".join(lines))

    def reopen(self) -> None:
        """Close; the next write opens the path again (after log rotation)."""
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def close(self) -> None:
        self.reopen()


class MemorySink:
    """Keeps lines in a list: for tests and for embedding."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, line: str) -> None:
        self.lines.append(line)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    def close(self) -> None:
        return None


class NullSink:
    def write(self, line: str) -> None:
        return None

    def close(self) -> None:
        return None


class AuditLog:
    """Emits events to a sink with the configured failure semantics. Thread-safe."""

    def __init__(
        self,
        sink: AuditSink,
        *,
        fail_closed: bool = False,
        clock: Callable[[], str] = utc_now,
        group_commit: bool = True,
    ) -> None:
        self.sink = sink
        self.fail_closed = fail_closed
        #: async callers hand events to the writer thread (`submit`) rather than write inline
        self.group_commit = group_commit
        self._clock = clock
        self._failing = False
        self._writer: _GroupCommit | None = None
        self._writer_lock = threading.Lock()
        self._pending: dict[asyncio.AbstractEventLoop, list[tuple[str, asyncio.Future[None] | None]]] = {}

    @property
    def clock(self) -> Callable[[], str]:
        return self._clock

    @property
    def healthy(self) -> bool:
        return not self._failing

    def record(self, **values: Any) -> AuditEvent:
        """Build (through the scrubber) and emit an event; returns it."""
        values.setdefault("timestamp", self._clock())
        event = AuditEvent.from_fields(values)
        self.emit(event)
        return event

    def emit(self, event: AuditEvent) -> None:
        self.emit_line(event.to_json())

    def emit_line(self, line: str) -> None:
        """`emit` of a rendered event (`audit_line`)."""
        try:
            self.sink.write(line)
        except OSError as exc:
            self._note_failure(exc)
            if self.fail_closed:
                raise HsmUnavailable(AUDIT_UNAVAILABLE_MSG, metadata={"component": "audit"}) from None
            return
        self._note_success()

    def _note_failure(self, exc: OSError) -> None:
        if not self._failing:
            log.error("audit log write failed (%s); fail_closed=%s", type(exc).__name__, self.fail_closed)
        self._failing = True

    def _note_success(self) -> None:
        if self._failing:
            log.warning("audit log writable again")
            self._failing = False

    @property
    def discards(self) -> bool:
        """Nothing is written (no sink): callers need not submit or wait."""
        return isinstance(self.sink, NullSink)

    def submit(self, event: AuditEvent, *, wait: bool = True) -> asyncio.Future[None] | None:
        """Queue `event` for the writer thread (call on an event loop). With `wait`, the returned
        future resolves once the event's batch is written, or fails with `HsmUnavailable` when
        the write failed and the log is fail-closed; without, nothing is returned (an event for
        a call that already failed: its own error is the answer)."""
        return self.submit_line(event.to_json(), wait=wait)

    def submit_line(self, line: str, *, wait: bool = True) -> asyncio.Future[None] | None:
        """`submit` of a rendered event (`audit_line`)."""
        writer = self._writer
        if writer is None:
            with self._writer_lock:
                if self._writer is None:
                    self._writer = _GroupCommit(self)
                writer = self._writer
        loop = asyncio.get_running_loop()
        future = loop.create_future() if wait else None
        # Events of one loop iteration go to the writer together, at the iteration's end: one
        # lock and one wake-up of the writer per iteration, not per event (waking the thread
        # per event cost more than the write it saved).
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._hand_off, loop, writer)
        pending.append((line, future))
        return future

    def _hand_off(self, loop: asyncio.AbstractEventLoop, writer: _GroupCommit) -> None:
        writer.put(self._pending.pop(loop))

    def _write_batch(self, lines: list[str]) -> bool:
        """Write a batch (writer thread); True when it was written."""
        sink = self.sink
        try:
            write_lines = getattr(sink, "write_lines", None)
            if write_lines is not None:
                write_lines(lines)
            else:
                for line in lines:
                    sink.write(line)
        except OSError as exc:
            self._note_failure(exc)
            return False
        self._note_success()
        return True

    def ensure_available(self) -> None:
        """With fail_closed, refuse up front while the sink is known to be failing. Nothing to do
        otherwise: the next `emit` retries the sink anyway."""
        if self.fail_closed and self._failing:
            raise HsmUnavailable(AUDIT_UNAVAILABLE_MSG, metadata={"component": "audit"})

    def close(self) -> None:
        """Write what is queued, stop the writer, close the sink."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.stop()
        self.sink.close()


def _settle(futures: list[asyncio.Future[None]], written: bool, fail_closed: bool) -> None:
    """On the loop: resolve a batch's waiters (the exception is made here, on the loop)."""
    for future in futures:
        if future.done():
            continue
        if written or not fail_closed:
            future.set_result(None)
        else:
            future.set_exception(HsmUnavailable(AUDIT_UNAVAILABLE_MSG, metadata={"component": "audit"}))


def _name_native_thread(name: bytes) -> None:
    """Give the OS thread the name Python's has (`top -H`, /proc/<pid>/task/*/comm, and
    benchmarks/profile.py tell the writer's CPU from the event loop's); Linux only, best effort."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(15, name[:15], 0, 0, 0)  # PR_SET_NAME


class _GroupCommit:
    """The writer thread of one `AuditLog`: takes everything queued since its last write, writes
    it as one batch, then wakes each waiting loop once for the whole batch."""

    def __init__(self, audit: AuditLog) -> None:
        self._audit = audit
        self._queue: list[tuple[str, asyncio.Future[None] | None]] = []
        self._ready = threading.Condition(threading.Lock())
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="hsmbridge-audit", daemon=True)
        self._thread.start()
        atexit.register(self.stop)  # what is queued at exit is still written

    def put(self, events: list[tuple[str, asyncio.Future[None] | None]]) -> None:
        with self._ready:
            was_empty = not self._queue
            self._queue.extend(events)
            if was_empty:  # the writer only ever waits on an empty queue
                self._ready.notify()

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        _name_native_thread(b"hsmbridge-audit")
        while True:
            with self._ready:
                while not self._queue and not self._stopping:
                    self._ready.wait()
                batch, self._queue = self._queue, []
                if not batch:
                    return  # stopping, and everything is written
            written = self._audit._write_batch([line for line, _ in batch])
            waiting: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
            for _, future in batch:
                if future is not None:
                    waiting.setdefault(future.get_loop(), []).append(future)
            for loop, futures in waiting.items():
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                    loop.call_soon_threadsafe(_settle, futures, written, self._audit.fail_closed)


class AuditConfig(BaseModel):
    """``[security.audit]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sink: Literal["stdout", "file", "none"] = "stdout"
    path: str | None = None
    #: TOML accepts octal: ``file_mode = 0o640`` for a log shipper's group
    file_mode: int = Field(0o600, ge=0, le=0o777)
    fail_closed: bool = False
    #: Write events from a writer thread in batches (the event loop never blocks on the sink) or
    #: inline on the loop. Unset: the thread when stdout is a pipe or socket, whose reader (a
    #: container runtime's log driver) can stall it; inline for a file (or stdout redirected to
    #: one), which only waits for the page cache; the thread costs a gRPC unary call 11-25 % more
    #: CPU (docs/BENCHMARKS.md, benchmarks.profile).
    group_commit: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> AuditConfig:
        if self.sink == "file" and not self.path:
            raise ValueError("security.audit.sink = 'file' needs security.audit.path")
        if self.file_mode & 0o007:
            raise ValueError("security.audit.file_mode must not grant access to other users")
        if self.sink == "none" and self.fail_closed:
            raise ValueError("security.audit.fail_closed needs a sink")
        return self


def build_audit_log(config: AuditConfig) -> AuditLog:
    sink: AuditSink
    if config.sink == "file":
        assert config.path is not None
        sink = FileSink(config.path, config.file_mode)
    elif config.sink == "stdout":
        sink = StdoutSink()
    else:
        sink = NullSink()
    group_commit = config.group_commit if config.group_commit is not None else _may_stall(config.sink)
    return AuditLog(sink, fail_closed=config.fail_closed, group_commit=group_commit)


def _may_stall(sink: str) -> bool:
    """Whether writing to `sink` can wait on a reader: standard output when it is a pipe or a
    socket (a container runtime's log driver), not when it is a file or a terminal; a file sink
    waits only for the page cache."""
    if sink != "stdout":
        return False
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (AttributeError, OSError, ValueError):  # replaced or closed stdout: assume the worst
        return True
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
