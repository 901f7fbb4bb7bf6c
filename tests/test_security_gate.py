"""The gate both transports share: authenticate → instance → authorise → rate-limit → work →
exactly one complete audit event, whatever happens; and the [security] config builders."""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from pydantic import ValidationError

from hsmbridge.errors import (
    HsmUnavailable,
    InvalidInput,
    NotFound,
    PermissionDenied,
    Reason,
    ResourceExhausted,
    Unauthenticated,
)
from hsmbridge.security.audit import FIELD_NAMES, AuditLog, FileSink, MemorySink
from hsmbridge.security.authn import Authenticator
from hsmbridge.security.authz import ACTIONS, Authorizer, AuthzConfig, rest_action, rpc_action
from hsmbridge.security.config import SecurityConfig, build_authenticator, build_gate
from hsmbridge.security.gate import CallRecord, SecurityGate, current_call
from hsmbridge.security.principals import Identity, identity_of
from hsmbridge.security.ratelimit import BucketConfig, RateLimiter
from hsmbridge.security.tokens import StaticTokenConfig, StaticTokens, hash_token
from hsmbridge.v1 import crypto_pb2

WRITER_TOKEN = "hsmb_gate-writer-token-0123456789"
READER_TOKEN = "hsmb_gate-reader-token-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def authenticator() -> Authenticator:
    return Authenticator(
        tokens=StaticTokens(
            [
                StaticTokenConfig(
                    token_sha256=hash_token(WRITER_TOKEN), principal="w", instances=["t1"], roles=["Writer"]
                ),
                StaticTokenConfig(
                    token_sha256=hash_token(READER_TOKEN), principal="r", instances=["t1"], roles=["Reader"]
                ),
            ]
        )
    )


@pytest.fixture
def parts() -> tuple[SecurityGate, MemorySink, Clock]:
    sink, clock = MemorySink(), Clock()
    limiter = RateLimiter({"manage": BucketConfig(rate=1, burst=2)}, clock=clock)
    return SecurityGate(Authorizer(), AuditLog(sink), limiter, clock=clock), sink, clock


def rest_call(
    gate: SecurityGate, header: str | None, method: str, path: str, instance: str = "t1"
) -> AbstractContextManager[CallRecord]:
    action = rest_action(method, path)
    assert action is not None
    authn = authenticator()
    return gate.call(
        action,
        lambda: authn.identify_rest(header),
        instance,
        transport="rest",
        client="10.0.0.9:4242",
        correlation_id="corr-1",
    )


def test_a_successful_call_yields_the_principal_and_emits_one_complete_event(
    parts: tuple[SecurityGate, MemorySink, Clock],
) -> None:
    gate, sink, clock = parts
    with rest_call(gate, f"Bearer {WRITER_TOKEN}", "POST", "/api/v2/keys/k1/actions/wrap") as call:
        assert call.principal.id == "w"
        assert identity_of(call.principal).roles == {"Writer"}
        call.key("k1", "v7")
        clock.now += 0.0125
    (event,) = sink.events()
    assert set(event) == FIELD_NAMES
    assert {k: v for k, v in event.items() if k != "timestamp"} == {
        "event": "kms.secrets.wrap",
        "outcome": "success",
        "principal": "w",
        "instance": "t1",
        "key_id": "k1",
        "key_version": "v7",
        "reason": None,
        "cause": None,
        "correlation_id": "corr-1",
        "client": "10.0.0.9:4242",
        "latency_ms": 12.5,
        "transport": "rest",
        "auth_method": "token",
    }


def test_the_handlers_own_failure_is_audited_with_its_reason_and_reraised(
    parts: tuple[SecurityGate, MemorySink, Clock],
) -> None:
    gate, sink, _ = parts
    with (
        pytest.raises(NotFound),
        rest_call(gate, f"Bearer {READER_TOKEN}", "GET", "/api/v2/keys/nope/metadata") as call,
    ):
        call.key("nope")
        raise NotFound("no such key", reason=Reason.KEY_NOT_FOUND)
    (event,) = sink.events()
    assert event["event"] == "kms.secrets-metadata.read"
    assert (event["outcome"], event["reason"], event["key_id"]) == ("failure", "KEY_NOT_FOUND", "nope")


@pytest.mark.parametrize(
    ("header", "path", "instance", "error", "reason", "cause", "principal"),
    [
        (None, "/api/v2/keys", "t1", Unauthenticated, "UNAUTHENTICATED", "missing", None),
        ("Bearer hsmb_nope", "/api/v2/keys", "t1", Unauthenticated, "UNAUTHENTICATED", "unknown_token", None),
        (f"Bearer {READER_TOKEN}", "/api/v2/keys", "t1", PermissionDenied, "PERMISSION_DENIED", None, "r"),
        (f"Bearer {WRITER_TOKEN}", "/api/v2/keys", "t2", PermissionDenied, "PERMISSION_DENIED", None, "w"),
    ],
)
def test_denials_never_reach_the_work_and_are_audited(
    parts: tuple[SecurityGate, MemorySink, Clock],
    header: str | None,
    path: str,
    instance: str,
    error: type[Exception],
    reason: str,
    cause: str | None,
    principal: str | None,
) -> None:
    gate, sink, _ = parts
    reached = False
    with pytest.raises(error), rest_call(gate, header, "POST", path, instance):
        reached = True
    assert not reached
    (event,) = sink.events()
    assert event["event"] == "kms.secrets.create"
    assert (event["outcome"], event["reason"], event["cause"], event["principal"]) == (
        "failure",
        reason,
        cause,
        principal,
    )
    assert "hsmb_" not in sink.lines[0]


def test_authentication_comes_before_the_instance_check() -> None:
    """401 beats 400: a missing instance is only looked at once the caller is known."""
    sink = MemorySink()
    gate = SecurityGate(Authorizer(), AuditLog(sink))
    looked = []

    def instance() -> str:
        looked.append(1)
        raise InvalidInput("no instance", reason=Reason.MISSING_FIELD)

    authn = authenticator()
    with (
        pytest.raises(Unauthenticated),
        gate.call(ACTIONS["kms.secrets.list"], lambda: authn.identify_rest(None), instance, transport="rest"),
    ):
        pass
    assert not looked
    with (
        pytest.raises(InvalidInput),
        gate.call(
            ACTIONS["kms.secrets.list"],
            lambda: authn.identify_rest(f"Bearer {READER_TOKEN}"),
            instance,
            transport="rest",
        ),
    ):
        pass
    assert sink.events()[-1]["reason"] == "MISSING_FIELD"


def test_rate_limit_after_authorisation(parts: tuple[SecurityGate, MemorySink, Clock]) -> None:
    gate, sink, clock = parts
    for _ in range(2):
        with rest_call(gate, f"Bearer {WRITER_TOKEN}", "POST", "/api/v2/keys"):
            pass
    with (
        pytest.raises(ResourceExhausted) as info,
        rest_call(gate, f"Bearer {WRITER_TOKEN}", "POST", "/api/v2/keys"),
    ):
        pass
    assert info.value.metadata == {"retry_after": "1"}
    assert sink.events()[-1]["reason"] == "RATE_LIMITED"
    # denied callers do not spend the instance's budget
    clock.now += 1
    for _ in range(5):
        with pytest.raises(Unauthenticated), rest_call(gate, "Bearer hsmb_x", "POST", "/api/v2/keys"):
            pass
    with rest_call(gate, f"Bearer {WRITER_TOKEN}", "POST", "/api/v2/keys"):
        pass


def test_fail_closed_audit_refuses_before_work_and_replaces_a_response(tmp_path: Path) -> None:
    audit = AuditLog(FileSink(tmp_path), fail_closed=True)  # a directory: never writable
    gate = SecurityGate(Authorizer(), audit)
    authn = authenticator()
    done = []

    def call() -> AbstractContextManager[CallRecord]:
        return gate.call(
            ACTIONS["kms.secrets.unwrap"],
            lambda: authn.identify_rest(f"Bearer {READER_TOKEN}"),
            "t1",
            transport="rest",
        )

    with pytest.raises(HsmUnavailable), call():
        done.append("unwrapped")  # the work ran; the failed audit write replaces its response
    assert done == ["unwrapped"]
    with pytest.raises(HsmUnavailable), call():
        done.append("again")  # now known broken: refused before any work
    assert done == ["unwrapped"]


def test_grpc_calls_use_the_rpc_action_and_work_in_async_code() -> None:
    sink = MemorySink()
    gate = SecurityGate(Authorizer(), AuditLog(sink))
    authn = authenticator()

    async def handler() -> str:
        metadata = {"authorization": f"Bearer {READER_TOKEN}", "x-hsmbridge-tenant": "t1"}
        with gate.call(
            rpc_action("/hsmbridge.v1.CryptoService/Unwrap"),
            lambda: authn.identify_grpc(metadata, "ipv4:127.0.0.1:5"),
            metadata["x-hsmbridge-tenant"],
            transport="grpc",
            client="ipv4:127.0.0.1:5",
        ) as call:
            await asyncio.sleep(0)
            return call.principal.id

    assert asyncio.run(handler()) == "r"
    assert sink.events()[0]["event"] == "kms.secrets.unwrap"
    assert sink.events()[0]["transport"] == "grpc"


def test_current_call_is_visible_inside_the_block_and_in_worker_threads() -> None:
    gate = SecurityGate(Authorizer(), AuditLog(MemorySink()))
    authn = authenticator()
    assert current_call() is None

    async def handler() -> tuple[str, str]:
        with gate.call(
            ACTIONS["kms.secrets.list"],
            lambda: authn.identify_rest(f"Bearer {READER_TOKEN}"),
            "t1",
            transport="rest",
        ):
            inner = current_call()
            assert inner is not None
            threaded = await asyncio.to_thread(current_call)
            assert threaded is inner
            return inner.principal.id, inner.instance or ""

    assert asyncio.run(handler()) == ("r", "t1")
    assert current_call() is None


def test_stream_messages_are_admitted_and_audited_one_by_one() -> None:
    sink, clock = MemorySink(), Clock()
    limiter = RateLimiter({"crypto": BucketConfig(rate=1, burst=10)}, clock=clock)
    strict = Authorizer(AuthzConfig(overrides={"kms.secrets.rewrap": "Writer"}))
    gate = SecurityGate(strict, AuditLog(sink), limiter, clock=clock)
    authn = authenticator()
    method = "/hsmbridge.v1.CryptoService/CryptoStream"
    with gate.call(
        rpc_action(method), lambda: authn.identify_rest(f"Bearer {READER_TOKEN}"), "t1", transport="grpc"
    ) as call:
        unwrap = crypto_pb2.CryptoStreamRequest(sequence=1, unwrap={"key_id": "k", "items": [{}, {}, {}]})
        action = gate.admit_more(call, rpc_action(method, unwrap), cost=3)
        gate.audit_more(call, action, key_id="k")
        rewrap = crypto_pb2.CryptoStreamRequest(sequence=2, rewrap={"key_id": "k"})
        with pytest.raises(PermissionDenied):
            gate.admit_more(call, rpc_action(method, rewrap))
        with pytest.raises(ResourceExhausted):
            gate.admit_more(call, rpc_action(method, unwrap), cost=7)  # 10 - 1 (open) - 3 = 6 left
    events = [(e["event"], e["outcome"], e["key_id"]) for e in sink.events()]
    assert events == [("kms.secrets.unwrap", "success", "k"), ("kms.secrets.unwrap", "success", None)]


# The [security] section.


def test_security_config_builds_everything(tmp_path: Path) -> None:
    config = SecurityConfig.model_validate(
        {
            "tokens": [
                {
                    "token_sha256": hash_token(WRITER_TOKEN),
                    "principal": "w",
                    "instances": "*",
                    "roles": ["Writer"],
                }
            ],
            "mtls": {"clients": [{"subject_cn": "svc", "principal": "svc", "instances": ["t1"]}]},
            "authz": {"overrides": {"kms.secrets.wrap": "Writer"}},
            "audit": {"sink": "file", "path": str(tmp_path / "audit.jsonl")},
            "rate_limit": {"classes": {"crypto": {"rate": 5, "burst": 5}}},
        }
    )
    assert config.has_credentials
    authn = build_authenticator(config)
    assert authn.identify_rest(f"Bearer {WRITER_TOKEN}").principal_id == "w"
    assert authn.jwt is None and authn.certificates is not None
    gate = build_gate(config)
    with gate.call(
        ACTIONS["kms.secrets.wrap"],
        lambda: authn.identify_rest(f"Bearer {WRITER_TOKEN}"),
        "t9",
        transport="rest",
    ):
        pass
    assert (tmp_path / "audit.jsonl").read_text().count("kms.secrets.wrap") == 1
    reader = Identity("r", instances=None, roles=frozenset({"Reader"}))
    with pytest.raises(PermissionDenied):
        gate.authorizer.authorize(reader, "kms.secrets.wrap", "t1")


def test_empty_security_config_has_no_credentials() -> None:
    config = SecurityConfig()
    assert not config.has_credentials
    assert build_gate(config).limiter is not None
    with pytest.raises(ValidationError):
        SecurityConfig.model_validate(
            {"tokens": [{"token": WRITER_TOKEN, "principal": "w", "instances": "*"}]}
        )
