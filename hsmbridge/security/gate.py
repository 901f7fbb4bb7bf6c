"""The one sequence every REST request and RPC goes through, so both transports agree:

    authenticate → scope to the instance → authorise → rate-limit → (audit available?) → work → audit

`SecurityGate.call` is a context manager around the handler's work. It yields a `CallRecord`
whose `principal` goes into `CallContext` and on which the handler notes the key id and version
it touched; on exit it emits exactly one audit event — success, or failure with the reason code
of whatever was raised (including the gate's own denials). With a fail-closed audit log, a
failed write after successful work raises `HsmUnavailable`, which replaces the response.

Why the instance is a callable: REST answers a missing ``bluemix-instance`` with 400 but only
after authentication ("401 beats 400"), so the header is read between the two steps.

`current_call()` returns the record of the call in progress (a context variable: per asyncio
task, and copied into `asyncio.to_thread` workers), so code that builds the `CallContext` — REST's
``call_context(request)``, gRPC's ``ServicerBase.ctx(context)`` — need not be handed the record.

`SecurityGate.acall` is the same sequence as an async context manager, for handlers on the event
loop: the audit event goes to the audit log's writer thread (group commit, see security/audit.py)
and a success waits for its batch to be written before the handler's answer leaves — so with a
fail-closed log nothing is answered unaudited — while the loop never blocks on the write.

Streams and batches: a batch passes ``cost=len(items)`` (checked against the batch cap first, see
`grpc.errors.batch_cost`); an admitted call that fails gets all but one of its tokens back
(`refund`), so a refused request costs at most one token. A stream is admitted once, for its
opening action; each message then goes through `admit_more` (its own action and cost) and may be
audited on its own with `audit_more`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Literal

from hsmbridge.core.principal import Principal
from hsmbridge.security.audit import AuditLog, NullSink, Outcome, audit_line, reason_of
from hsmbridge.security.authz import Action, Authorizer
from hsmbridge.security.principals import Identity, to_principal
from hsmbridge.security.ratelimit import RateLimiter

Transport = Literal["rest", "grpc"]

_CURRENT: ContextVar[CallRecord | None] = ContextVar("hsmbridge_security_call", default=None)

#: `Principal` of an `Identity`: the same few callers call over and over, and encoding their
#: roles and instances afresh was an allocation-heavy step of every call. Identities are frozen.
_principal_of = functools.lru_cache(maxsize=4096)(to_principal)


def current_call() -> CallRecord | None:
    """The admitted call this code runs in, if any."""
    return _CURRENT.get()


@dataclass(slots=True)
class CallRecord:
    """What the gate knows about a call in flight."""

    action: Action
    transport: Transport
    client: str | None
    correlation_id: str | None
    started: float
    identity: Identity | None = None
    instance: str | None = None
    key_id: str | None = None
    key_version: str | None = None
    #: tokens the limiter charged at admission (0 until then), given back but one on failure
    charged: float = 0.0
    _principal: Principal | None = field(default=None, repr=False)

    @property
    def principal(self) -> Principal:
        """The caller, for `CallContext` (available inside the ``with`` block)."""
        if self._principal is None:
            assert self.identity is not None, "principal is only available once admitted"
            self._principal = _principal_of(self.identity)
        return self._principal

    def key(self, key_id: str | None, version: str | None = None) -> None:
        """Note the key (and version) the call used, for the audit event."""
        self.key_id = key_id
        if version is not None:
            self.key_version = version


def _sub_record(
    record: CallRecord, action: Action, key_id: str | None, key_version: str | None
) -> CallRecord:
    """The record of one sub-operation of an admitted call (a stream message)."""
    return CallRecord(
        action,
        record.transport,
        record.client,
        record.correlation_id,
        record.started,
        identity=record.identity,
        instance=record.instance,
        key_id=key_id,
        key_version=key_version,
    )


class SecurityGate:
    def __init__(
        self,
        authorizer: Authorizer,
        audit: AuditLog | None = None,
        limiter: RateLimiter | None = None,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.authorizer = authorizer
        self.audit = audit or AuditLog(NullSink())
        self.limiter = limiter
        self._clock = clock

    @contextmanager
    def call(
        self,
        action: Action,
        identify: Callable[[], Identity],
        instance: str | Callable[[], str],
        *,
        transport: Transport,
        client: str | None = None,
        correlation_id: str | None = None,
        cost: float = 1.0,
    ) -> Iterator[CallRecord]:
        record = CallRecord(action, transport, client, correlation_id, self._clock())
        try:
            self._admit(record, identify, instance, cost)
            token = _CURRENT.set(record)
            try:
                yield record
            finally:
                # An async generator closed by the event loop's finaliser runs this in another
                # context, where the token cannot be reset (and the variable is not ours anyway).
                with contextlib.suppress(ValueError):
                    _CURRENT.reset(token)
        except BaseException as exc:
            self.refund(record, record.action.action_class, record.charged)
            self._emit(record, exc)
            raise
        else:
            self._emit(record, None)

    def acall(
        self,
        action: Action,
        identify: Callable[[], Identity],
        instance: str | Callable[[], str],
        *,
        transport: Transport,
        client: str | None = None,
        correlation_id: str | None = None,
        cost: float = 1.0,
    ) -> _AsyncCall:
        """`call` for async handlers: ``async with gate.acall(...) as record:``."""
        return _AsyncCall(
            self,
            CallRecord(action, transport, client, correlation_id, self._clock()),
            identify,
            instance,
            cost,
        )

    def admit_more(self, record: CallRecord, action: Action, cost: float = 1.0) -> Action:
        """Authorise and rate-limit one more operation of an admitted caller (a stream message)."""
        assert record.identity is not None and record.instance is not None, "admit the call first"
        allowed = self.authorizer.authorize(record.identity, action, record.instance)
        if self.limiter is not None:
            self.limiter.acquire(record.instance, allowed.action_class, cost)
        self.audit.ensure_available()
        return allowed

    def refund(self, record: CallRecord, action_class: str, charged: float) -> None:
        """A refused request costs at most one token: give back the rest of what it was charged."""
        if self.limiter is not None and record.instance is not None and charged > 1:
            self.limiter.refund(record.instance, action_class, charged - 1)

    def audit_more(
        self,
        record: CallRecord,
        action: Action,
        error: BaseException | None = None,
        *,
        key_id: str | None = None,
        key_version: str | None = None,
    ) -> None:
        """One audit event for a sub-operation (a stream message), timed from the call's start."""
        self._emit(_sub_record(record, action, key_id, key_version), error)

    async def aaudit_more(
        self,
        record: CallRecord,
        action: Action,
        error: BaseException | None = None,
        *,
        key_id: str | None = None,
        key_version: str | None = None,
    ) -> None:
        """`audit_more` on the event loop: a success waits for its event to be written."""
        await self._aemit(_sub_record(record, action, key_id, key_version), error)

    def _admit(
        self,
        record: CallRecord,
        identify: Callable[[], Identity],
        instance: str | Callable[[], str],
        cost: float,
    ) -> None:
        record.identity = identify()
        record.instance = instance if isinstance(instance, str) else instance()
        record.action = self.authorizer.authorize(record.identity, record.action, record.instance)
        if self.limiter is not None:
            self.limiter.acquire(record.instance, record.action.action_class, cost)
            record.charged = cost
        self.audit.ensure_available()

    def _line(self, record: CallRecord, error: BaseException | None) -> str:
        """The call's audit event, rendered (checked by the audit schema as any event is)."""
        reason, cause = reason_of(error)
        identity = record.identity
        return audit_line(
            {
                "event": record.action.event,
                "outcome": Outcome.FAILURE if error is not None else Outcome.SUCCESS,
                "principal": identity.principal_id if identity else None,
                "instance": record.instance,
                "key_id": record.key_id,
                "key_version": record.key_version,
                "reason": reason,
                "cause": cause,
                "correlation_id": record.correlation_id,
                "client": record.client,
                "latency_ms": (self._clock() - record.started) * 1000.0,
                "transport": record.transport,
                "auth_method": (identity.method or None) if identity else None,
                "timestamp": self.audit.clock(),
            }
        )

    def _emit(self, record: CallRecord, error: BaseException | None) -> None:
        if error is None:
            self.audit.emit_line(self._line(record, None))  # fail-closed: raises HsmUnavailable
            return
        # The call already failed: its own error is the answer, even if the audit write fails too.
        with contextlib.suppress(Exception):
            self.audit.emit_line(self._line(record, error))

    async def _aemit(self, record: CallRecord, error: BaseException | None) -> None:
        audit = self.audit
        if not audit.group_commit:
            self._emit(record, error)
            return
        if error is None:
            line = self._line(record, None)
            if not audit.discards:
                waiter = audit.submit_line(line)
                assert waiter is not None
                await waiter  # fail-closed: raises HsmUnavailable, replacing the response
            return
        # The call already failed: its own error is the answer, even if the audit write fails
        # too; it still leaves after its event (unless the task is being torn down).
        with contextlib.suppress(Exception):
            line = self._line(record, error)
            if not audit.discards:
                waiter = audit.submit_line(line, wait=isinstance(error, Exception))
                if waiter is not None:
                    await waiter


class _AsyncCall:
    """The async context manager `SecurityGate.acall` returns (a class, not a generator: it runs
    on every call)."""

    __slots__ = ("_cost", "_gate", "_identify", "_instance", "_record", "_token")

    def __init__(
        self,
        gate: SecurityGate,
        record: CallRecord,
        identify: Callable[[], Identity],
        instance: str | Callable[[], str],
        cost: float,
    ) -> None:
        self._gate = gate
        self._record = record
        self._identify = identify
        self._instance = instance
        self._cost = cost
        self._token: Token[CallRecord | None] | None = None

    async def __aenter__(self) -> CallRecord:
        record = self._record
        try:
            self._gate._admit(record, self._identify, self._instance, self._cost)
        except BaseException as exc:
            self._gate.refund(record, record.action.action_class, record.charged)
            await self._gate._aemit(record, exc)
            raise
        self._token = _CURRENT.set(record)
        return record

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._token is not None:
            # As in `call`: a generator finalised in another context cannot reset the variable.
            with contextlib.suppress(ValueError):
                _CURRENT.reset(self._token)
        record = self._record
        if exc is not None:  # as in `call`: a refused request costs at most one token
            self._gate.refund(record, record.action.action_class, record.charged)
        await self._gate._aemit(record, exc)
