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
"""

from __future__ import annotations

import contextlib
import enum
import io
import json
import logging
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

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


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, the form Key Protect uses in its own timestamps."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        if not isinstance(self.event, str) or not _EVENT_RE.fullmatch(self.event):
            raise AuditSchemaError("audit event names look like kms.secrets.wrap")
        object.__setattr__(self, "outcome", Outcome(self.outcome))
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise AuditSchemaError(f"audit field {name} must be text")
            # Callers pass client-controlled text (correlation ids, aliases, addresses): bound and
            # defang it rather than fail the call over a log line.
            if len(value) > _MAX_TEXT or not value.isprintable():
                cleaned = "".join(c if c.isprintable() else "?" for c in value[:_MAX_TEXT])
                object.__setattr__(self, name, cleaned)
        for name in ("reason", "cause", "auth_method"):
            value = getattr(self, name)
            if value is not None and not _WORD_RE.fullmatch(value):
                raise AuditSchemaError(f"audit field {name} must be a code, not prose")
        if self.transport not in (None, "rest", "grpc"):
            raise AuditSchemaError("audit transport is rest or grpc")
        if self.latency_ms is not None:
            if isinstance(self.latency_ms, bool) or not isinstance(self.latency_ms, int | float):
                raise AuditSchemaError("audit latency_ms must be a number")
            object.__setattr__(self, "latency_ms", round(float(self.latency_ms), 3))

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> AuditEvent:
        """The scrubber: build an event from loose fields, refusing any name outside the schema
        and any binary value (binary in an audit call is key material, a nonce or a ciphertext)."""
        unknown = set(values) - FIELD_NAMES
        if unknown:
            raise AuditSchemaError(f"audit events have no field(s) {', '.join(sorted(unknown))}")
        for name, value in values.items():
            if isinstance(value, bytes | bytearray | memoryview):
                raise AuditSchemaError(f"audit field {name} must not be binary")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = str(self.outcome)
        return data

    def to_json(self) -> str:
        """One line: ASCII-only JSON escapes every control character, so a value can never
        split or forge a line."""
        return json.dumps(self.to_dict(), ensure_ascii=True, separators=(",", ":"))


FIELD_NAMES = frozenset(f.name for f in fields(AuditEvent))
_TEXT_FIELDS = (
    "principal",
    "instance",
    "key_id",
    "key_version",
    "correlation_id",
    "client",
    "timestamp",
)


def reason_of(error: BaseException | None) -> tuple[str | None, str | None]:
    """(reason code, authentication cause) for an outcome: the domain reason of an
    `HsmBridgeError`, INTERNAL for anything else. Never the message."""
    if error is None:
        return None, None
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
        self, sink: AuditSink, *, fail_closed: bool = False, clock: Callable[[], str] = utc_now
    ) -> None:
        self.sink = sink
        self.fail_closed = fail_closed
        self._clock = clock
        self._failing = False

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
        line = event.to_json()
        try:
            self.sink.write(line)
        except OSError as exc:
            if not self._failing:
                log.error("audit log write failed (%s); fail_closed=%s", type(exc).__name__, self.fail_closed)
            self._failing = True
            if self.fail_closed:
                raise HsmUnavailable(AUDIT_UNAVAILABLE_MSG, metadata={"component": "audit"}) from None
            return
        if self._failing:
            log.warning("audit log writable again")
            self._failing = False

    def ensure_available(self) -> None:
        """With fail_closed, refuse up front while the sink is known to be failing. Nothing to do
        otherwise: the next `emit` retries the sink anyway."""
        if self.fail_closed and self._failing:
            raise HsmUnavailable(AUDIT_UNAVAILABLE_MSG, metadata={"component": "audit"})

    def close(self) -> None:
        self.sink.close()


class AuditConfig(BaseModel):
    """``[security.audit]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sink: Literal["stdout", "file", "none"] = "stdout"
    path: str | None = None
    #: TOML accepts octal: ``file_mode = 0o640`` for a log shipper's group
    file_mode: int = Field(0o600, ge=0, le=0o777)
    fail_closed: bool = False

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
    return AuditLog(sink, fail_closed=config.fail_closed)
