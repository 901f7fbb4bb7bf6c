"""Audit events: the JSON shape, the scrubber, the sinks, and fail-closed semantics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
from pathlib import Path

import pytest
from pydantic import ValidationError

from hsmbridge.errors import HsmUnavailable, NotFound, Reason, Unauthenticated
from hsmbridge.security.audit import (
    AUDIT_UNAVAILABLE_MSG,
    FIELD_NAMES,
    AuditConfig,
    AuditEvent,
    AuditLog,
    AuditSchemaError,
    FileSink,
    MemorySink,
    NullSink,
    Outcome,
    StdoutSink,
    build_audit_log,
    reason_of,
)
from hsmbridge.security.authz import ACTIONS
from hsmbridge.security.jwt import CredentialsRejected

FIXED_TIME = "2025-01-02T03:04:05.678Z"

COMPLETE = {
    "event": "kms.secrets.wrap",
    "outcome": "success",
    "principal": "IBMid-0000000000",
    "instance": "tenant-a",
    "key_id": "0a1b2c3d-0000-4000-8000-000000000000",
    "key_version": "0a1b2c3d-0000-4000-8000-000000000001",
    "reason": None,
    "cause": None,
    "correlation_id": "5b7a9c1e-1111-4222-8333-444455556666",
    "client": "ipv4:10.0.0.7:53122",
    "latency_ms": 1.2345,
    "transport": "grpc",
    "auth_method": "jwt",
    "timestamp": FIXED_TIME,
}


def test_a_complete_event_serialises_to_one_json_line_with_every_field() -> None:
    line = AuditEvent.from_fields(COMPLETE).to_json()
    assert "\n" not in line
    data = json.loads(line)
    assert set(data) == FIELD_NAMES
    assert data == {**COMPLETE, "latency_ms": 1.234}


def test_a_failure_event_carries_a_reason_code() -> None:
    event = AuditEvent(
        "kms.secrets.unwrap", Outcome.FAILURE, principal="p", instance="t", reason=str(Reason.KEY_NOT_FOUND)
    )
    data = json.loads(event.to_json())
    assert data["outcome"] == "failure" and data["reason"] == "KEY_NOT_FOUND"
    assert data["timestamp"].endswith("Z")
    assert data["key_id"] is None  # absent fields are present as null: the schema never varies


@pytest.mark.parametrize(
    "field",
    [
        "plaintext",
        "payload",
        "aad",
        "additional_data",
        "ciphertext",
        "token",
        "authorization",
        "pin",
        "key_material",
        "nonce",
        "iv",
        "message",
        "detail",
        "headers",
        "body",
    ],
)
def test_the_scrubber_refuses_any_field_outside_the_schema(field: str) -> None:
    with pytest.raises(AuditSchemaError) as info:
        AuditEvent.from_fields({**COMPLETE, field: "c2VjcmV0"})
    assert "c2VjcmV0" not in str(info.value)


@pytest.mark.parametrize("value", [b"\x00key", bytearray(b"key"), memoryview(b"key")])
def test_the_scrubber_refuses_binary_values_even_in_known_fields(value: object) -> None:
    with pytest.raises(AuditSchemaError):
        AuditEvent.from_fields({**COMPLETE, "key_id": value})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reason", "Key does not exist: the key abc was not found"),
        ("cause", "token expired at 12:00"),
        ("auth_method", "bearer eyJhbGciOi..."),
        ("event", "Wrap a key"),
        ("event", "kms"),
        ("instance", 42),
        ("latency_ms", "fast"),
        ("latency_ms", True),
        ("transport", "http"),
        ("outcome", "maybe"),
    ],
)
def test_values_must_fit_the_schema(field: str, value: object) -> None:
    with pytest.raises((AuditSchemaError, ValueError)):
        AuditEvent.from_fields({**COMPLETE, field: value})


def test_client_controlled_text_is_bounded_and_defanged_not_refused() -> None:
    event = AuditEvent.from_fields(
        {**COMPLETE, "correlation_id": "x" * 300, "client": "line\nbreak\x1b[31m", "key_id": "alias\u2028"}
    )
    assert event.correlation_id == "x" * 256
    assert event.client == "line?break?[31m"
    assert event.key_id == "alias?"
    assert "\n" not in event.to_json()


def test_every_action_event_name_is_accepted() -> None:
    for action in ACTIONS.values():
        AuditEvent(action.event, Outcome.SUCCESS)


def test_reason_of_gives_codes_never_messages() -> None:
    assert reason_of(None) == (None, None)
    assert reason_of(NotFound("key 'secret-alias' not found", reason=Reason.KEY_NOT_FOUND)) == (
        "KEY_NOT_FOUND",
        None,
    )
    assert reason_of(Unauthenticated("no")) == ("UNAUTHENTICATED", None)
    assert reason_of(CredentialsRejected("expired")) == ("UNAUTHENTICATED", "expired")
    assert reason_of(RuntimeError("buffer 0xdeadbeef")) == ("INTERNAL", None)
    assert reason_of(asyncio.CancelledError()) == ("CANCELLED", None)  # the client gave up


# Sinks.


def test_file_sink_creates_0600_appends_and_is_readable_line_by_line(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "audit.jsonl"
        audit = AuditLog(FileSink(path), clock=lambda: FIXED_TIME)
        audit.record(event="kms.secrets.create", outcome="success", principal="p", instance="t")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # line-buffered: visible before close
        assert len(path.read_text().splitlines()) == 1
        audit.record(event="kms.secrets.delete", outcome="failure", reason="INVALID_STATE")
        audit.close()
        again = AuditLog(FileSink(path))
        again.record(event="kms.secrets.list", outcome="success")
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert [x["event"] for x in lines] == ["kms.secrets.create", "kms.secrets.delete", "kms.secrets.list"]
        assert lines[0]["timestamp"] == FIXED_TIME
    finally:
        os.umask(old)


def test_file_sink_tightens_an_existing_file_and_honours_a_group_mode(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    path.chmod(0o644)
    AuditLog(FileSink(path)).record(event="kms.secrets.list", outcome="success")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    grouped = tmp_path / "grouped.jsonl"
    AuditLog(FileSink(grouped, 0o640)).record(event="kms.secrets.list", outcome="success")
    assert stat.S_IMODE(grouped.stat().st_mode) == 0o640


def test_file_sink_refuses_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    audit = AuditLog(FileSink(link), fail_closed=True)
    with pytest.raises(HsmUnavailable):
        audit.record(event="kms.secrets.list", outcome="success")
    assert target.read_text() == ""


def test_file_sink_reopens_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    sink = FileSink(path)
    audit = AuditLog(sink)
    audit.record(event="kms.secrets.list", outcome="success")
    path.rename(tmp_path / "audit.jsonl.1")
    sink.reopen()
    audit.record(event="kms.secrets.head", outcome="success")
    assert json.loads(path.read_text())["event"] == "kms.secrets.head"


def test_stdout_sink(capsys: pytest.CaptureFixture[str]) -> None:
    AuditLog(StdoutSink()).record(event="kms.import-token.create", outcome="success", instance="t")
    out = capsys.readouterr().out
    assert json.loads(out)["event"] == "kms.import-token.create"


# Failure semantics.


@pytest.fixture(params=["/dev/full", "directory"])
def unwritable(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """/dev/full opens but every write fails (ENOSPC); a directory cannot be opened for writing.
    Neither depends on permissions, so the tests hold when run as root."""
    if request.param == "/dev/full":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full")
        return Path("/dev/full")
    return tmp_path


def test_fail_closed_refuses_the_call_when_the_file_cannot_be_written(unwritable: Path) -> None:
    audit = AuditLog(FileSink(unwritable), fail_closed=True)
    assert audit.healthy
    audit.ensure_available()
    with pytest.raises(HsmUnavailable) as info:
        audit.record(event="kms.secrets.unwrap", outcome="success", principal="p", instance="t")
    assert info.value.message == AUDIT_UNAVAILABLE_MSG
    assert info.value.reason is Reason.HSM_UNAVAILABLE
    assert info.value.metadata == {"component": "audit"}
    assert not audit.healthy
    with pytest.raises(HsmUnavailable):
        audit.ensure_available()  # later calls are refused before doing any work


def test_fail_open_logs_once_and_continues(unwritable: Path, caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog(FileSink(unwritable), fail_closed=False)
    with caplog.at_level(logging.WARNING, logger="hsmbridge.security.audit"):
        for _ in range(3):
            audit.record(event="kms.secrets.wrap", outcome="success")
        audit.ensure_available()
    assert len([r for r in caplog.records if "audit log write failed" in r.getMessage()]) == 1
    assert not audit.healthy


def test_a_recovered_sink_is_healthy_again(tmp_path: Path) -> None:
    class Flaky(MemorySink):
        broken = True

        def write(self, line: str) -> None:
            if self.broken:
                raise OSError(28, "No space left on device")
            super().write(line)

    sink = Flaky()
    audit = AuditLog(sink, fail_closed=True)
    with pytest.raises(HsmUnavailable):
        audit.record(event="kms.secrets.wrap", outcome="success")
    sink.broken = False
    audit.record(event="kms.secrets.wrap", outcome="success")
    assert audit.healthy
    audit.ensure_available()
    assert len(sink.lines) == 1


# Configuration.


def test_config() -> None:
    assert isinstance(build_audit_log(AuditConfig()).sink, StdoutSink)
    assert isinstance(build_audit_log(AuditConfig(sink="none")).sink, NullSink)
    file_log = build_audit_log(AuditConfig(sink="file", path="/tmp/x.jsonl", fail_closed=True))
    assert isinstance(file_log.sink, FileSink) and file_log.fail_closed
    assert file_log.sink.mode == 0o600
    for bad in (
        {"sink": "file"},
        {"sink": "file", "path": "/tmp/x", "file_mode": 0o644},
        {"sink": "none", "fail_closed": True},
        {"sink": "syslog"},
    ):
        with pytest.raises(ValidationError):
            AuditConfig.model_validate(bad)
