"""Automatic rotation (core/rotation_scheduler.py): a rotation policy rotates its key, once.

Key Protect's rules (spec §4.5): ``interval_month`` n means every n × 30 days, counted from
creation or the last rotation; imported, standard, disabled and deleted keys are not rotated
automatically. The clock is a `FixedClock` moved by hand; the store is SQLite and, for the
claim between processes, PostgreSQL (tests/store_fixtures.py), each scheduler with services of
its own over the shared database, as two daemons would have.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fakes import FakeBackend
from pydantic import ValidationError
from services import build_services, call_context, clock_of, new_tenant

from hsmbridge.config import Config
from hsmbridge.core.clock import FixedClock
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import Key, RotationPolicy
from hsmbridge.core.policies import InstancePolicySetting, KeyPolicyChanges, RotationChange
from hsmbridge.core.principal import SYSTEM_PRINCIPAL, CallContext
from hsmbridge.core.rotation_scheduler import (
    MONTH,
    RotationEvent,
    RotationScheduler,
    due_at,
    skip_reason,
)
from hsmbridge.core.services import Services
from hsmbridge.core.store import open_store
from hsmbridge.errors import HsmUnavailable
from hsmbridge.security.audit import AuditLog, MemorySink
from hsmbridge.security.system_audit import RotationAuditLog

pytest_plugins = ("services_fixtures", "store_fixtures")

SECOND = timedelta(seconds=1)


class RecordingAudit:
    """A `RotationAudit` that keeps events; `before` runs just before each rotation starts."""

    def __init__(self, before: Callable[[], None] | None = None) -> None:
        self.events: list[RotationEvent] = []
        self.before = before

    def ensure_available(self) -> None:
        if self.before is not None:
            self.before()

    def rotated(self, event: RotationEvent) -> None:
        self.events.append(event)


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def scheduler(services: Services, audit: RecordingAudit) -> RotationScheduler:
    return RotationScheduler(services.store, services.keys, services.clock, audit=audit)


def _root_key(
    services: Services, ctx: CallContext, months: int = 1, name: str = "rotating", **spec: object
) -> Key:
    return services.keys.create(
        ctx,
        KeySpec(name=name, rotation=RotationPolicy(True, months), **spec),  # type: ignore[arg-type]
    )


def _versions(services: Services, ctx: CallContext, key: Key) -> int:
    return len(services.keys.versions(ctx, key.id))


# --- when ---------------------------------------------------------------------------------------


def test_a_due_key_rotates_once_audited_as_the_system_principal(
    services: Services, ctx: CallContext, scheduler: RotationScheduler, audit: RecordingAudit
) -> None:
    key = _root_key(services, ctx)
    clock_of(services).advance(days=30, seconds=1)
    result = scheduler.run_once()
    assert (result.due, result.rotated, result.failed, result.lost) == (1, 1, 0, 0)
    rotated = services.keys.get(ctx, key.id)
    assert _versions(services, ctx, key) == 2
    assert rotated.last_rotated_at == clock_of(services).now()
    assert audit.events == [RotationEvent(ctx.tenant, key.id, rotated.current_version_id, True)]
    assert SYSTEM_PRINCIPAL.id == "hsmbridge:system"
    # The next scans find nothing due: the clock restarted at the rotation.
    assert scheduler.run_once().due == 0
    clock_of(services).advance(days=29)
    assert scheduler.run_once().due == 0
    assert _versions(services, ctx, key) == 2
    assert scheduler.stats.rotated == 1


def test_a_key_is_not_rotated_before_its_interval_of_30_day_months(
    services: Services, ctx: CallContext, scheduler: RotationScheduler
) -> None:
    key = _root_key(services, ctx, months=3)
    clock_of(services).advance(days=90)
    clock_of(services).advance(seconds=-1)
    assert scheduler.run_once().rotated == 0
    assert _versions(services, ctx, key) == 1
    clock_of(services).advance(seconds=1)
    assert scheduler.run_once().rotated == 1
    assert _versions(services, ctx, key) == 2


def test_a_manual_rotation_restarts_the_clock(
    services: Services, ctx: CallContext, scheduler: RotationScheduler
) -> None:
    key = _root_key(services, ctx)
    clock_of(services).advance(days=20)
    services.keys.rotate(ctx, key.id)
    clock_of(services).advance(days=10, seconds=1)  # 30 days after creation, 10 after the rotation
    assert scheduler.run_once().rotated == 0
    clock_of(services).advance(days=20)
    assert scheduler.run_once().rotated == 1
    assert _versions(services, ctx, key) == 3


def test_a_policy_set_by_put_and_one_from_the_instance_policy_both_rotate(
    services: Services, ctx: CallContext, scheduler: RotationScheduler
) -> None:
    put = services.keys.create(ctx, KeySpec(name="put-policy"))
    services.key_policies.set(ctx, put.id, KeyPolicyChanges(rotation=RotationChange(interval_month=2)))
    services.instance_policies.put(ctx, [InstancePolicySetting("rotation", True, {"interval_month": 2})])
    inherited = services.keys.create(ctx, KeySpec(name="instance-policy"))
    assert inherited.rotation == RotationPolicy(True, 2)
    clock_of(services).advance(days=59)
    assert scheduler.run_once().rotated == 0
    clock_of(services).advance(days=1, seconds=1)
    assert scheduler.run_once().rotated == 2
    assert _versions(services, ctx, put) == _versions(services, ctx, inherited) == 2


def test_due_keys_of_every_tenant_rotate_across_pages(services: Services) -> None:
    scheduler = RotationScheduler(services.store, services.keys, services.clock)
    tenants = [call_context(new_tenant()) for _ in range(3)]
    keys = [(ctx, _root_key(services, ctx)) for ctx in tenants for _ in range(4)]
    clock_of(services).advance(days=31)
    import hsmbridge.core.rotation_scheduler as module

    page, module._PAGE = module._PAGE, 5  # type: ignore[attr-defined]
    try:
        assert scheduler.run_once().rotated == len(keys)
    finally:
        module._PAGE = page  # type: ignore[attr-defined]
    assert all(_versions(services, ctx, key) == 2 for ctx, key in keys)


# --- what is skipped ------------------------------------------------------------------------------


def _force_policy(services: Services, key: Key) -> None:
    """Give a key a rotation policy the API would not let it have (imported, standard)."""
    stored = services.store.get_key(key.tenant, key.id)
    assert stored is not None
    stored.rotation = RotationPolicy(True, 1)
    with services.store.transaction() as tx:
        tx.update_key(stored)


def test_keys_that_cannot_rotate_automatically_are_skipped(
    services: Services, ctx: CallContext, scheduler: RotationScheduler, audit: RecordingAudit
) -> None:
    imported = services.keys.create(ctx, KeySpec(name="imported", payload=bytes(range(32))))
    standard = services.keys.create(ctx, KeySpec(name="standard", extractable=True))
    for key in (imported, standard):
        _force_policy(services, key)
    disabled = _root_key(services, ctx, name="disabled")
    services.keys.disable(ctx, disabled.id)
    deleted = _root_key(services, ctx, name="deleted")
    services.keys.delete(ctx, deleted.id)
    expiring = _root_key(
        services, ctx, name="expired", expires_at=clock_of(services).now() + timedelta(days=10)
    )
    off = services.keys.create(ctx, KeySpec(name="policy-off", rotation=RotationPolicy(False, 1)))
    no_policy = services.keys.create(ctx, KeySpec(name="no-policy"))
    skipped = (imported, standard, disabled, deleted, expiring, off, no_policy)
    clock_of(services).advance(days=45)

    assert scheduler.run_once().due == 0
    assert audit.events == []
    for key in skipped:
        assert len(services.store.list_versions(ctx.tenant, key.id)) == 1, key.name
    assert {key.name: skip_reason(services.keys.get(ctx, key.id)) for key in skipped} == {
        "imported": "imported",
        "standard": "standard_key",
        "disabled": "disabled",
        "deleted": "deleted",
        "expired": "deactivated",
        "policy-off": "no_policy",
        "no-policy": "no_policy",
    }
    assert due_at(services.keys.get(ctx, deleted.id)) is None


def test_a_disabled_key_rotates_once_enabled_again(
    services: Services, ctx: CallContext, scheduler: RotationScheduler
) -> None:
    key = _root_key(services, ctx)
    services.keys.disable(ctx, key.id)
    clock_of(services).advance(days=31)
    assert scheduler.run_once().due == 0
    services.keys.enable(ctx, key.id)
    assert scheduler.run_once().rotated == 1
    assert due_at(services.keys.get(ctx, key.id)) == clock_of(services).now() + MONTH


# --- failures ---------------------------------------------------------------------------------------


def test_a_failed_rotation_is_counted_audited_and_retried_at_the_next_scan(
    services: Services, ctx: CallContext, scheduler: RotationScheduler, audit: RecordingAudit
) -> None:
    key = _root_key(services, ctx)
    clock_of(services).advance(days=31)
    audit.before = lambda: (_ for _ in ()).throw(HsmUnavailable("audit down"))
    result = scheduler.run_once()
    assert (result.due, result.failed, result.rotated) == (1, 1, 0)
    assert audit.events == [RotationEvent(ctx.tenant, key.id, None, False, "HSM_UNAVAILABLE")]
    assert _versions(services, ctx, key) == 1
    audit.before = None
    assert scheduler.run_once().rotated == 1
    assert (scheduler.stats.failed, scheduler.stats.rotated) == (1, 1)


# --- exactly once between processes ---------------------------------------------------------------


def _replica_services(store_opener: Callable[[], object], start: FixedClock) -> Services:
    """Services of their own over the shared database, as a second daemon has."""
    return build_services(FakeBackend(), store=store_opener(), clock=start)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite-file", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], object]]:
    """Opens stores on one database; every store opened is closed afterwards."""
    if request.param == "postgres":
        location = request.getfixturevalue("postgres_url")
    else:
        location = str(tmp_path / "shared.db")
    opened: list[object] = []

    def opener() -> object:
        store = open_store(location)
        store.migrate()
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()  # type: ignore[attr-defined]


def test_a_claim_lost_to_another_process_does_not_rotate_twice(
    shared_store: Callable[[], object],
) -> None:
    clock = FixedClock()
    a, b = _replica_services(shared_store, clock), _replica_services(shared_store, clock)
    ctx = call_context(new_tenant())
    key = _root_key(a, ctx)
    clock.advance(days=31)
    scheduler_b = RotationScheduler(b.store, b.keys, clock)
    # A reads the key due, then B rotates it before A's compare-and-swap.
    scheduler_a = RotationScheduler(a.store, a.keys, clock, audit=RecordingAudit(before=scheduler_b.run_once))
    result = scheduler_a.run_once()
    assert (result.due, result.rotated, result.lost) == (1, 0, 1)
    assert scheduler_b.stats.rotated == 1
    assert len(a.store.list_versions(ctx.tenant, key.id)) == 2


def test_two_schedulers_racing_over_one_database_rotate_each_key_once(
    shared_store: Callable[[], object],
) -> None:
    clock = FixedClock()
    replicas = [_replica_services(shared_store, clock) for _ in range(2)]
    ctx = call_context(new_tenant())
    keys = [_root_key(replicas[0], ctx) for _ in range(12)]
    clock.advance(days=31)
    schedulers = [RotationScheduler(s.store, s.keys, clock) for s in replicas]
    start = threading.Barrier(len(schedulers))

    def scan(scheduler: RotationScheduler) -> None:
        start.wait()
        scheduler.run_once()

    threads = [threading.Thread(target=scan, args=(s,)) for s in schedulers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sum(s.stats.rotated for s in schedulers) == len(keys)
    assert sum(s.stats.failed for s in schedulers) == 0
    for key in keys:
        versions = replicas[1].store.list_versions(ctx.tenant, key.id)
        assert [v.number for v in versions] == [2, 1]


def test_the_store_lists_only_keys_that_can_be_due(shared_store: Callable[[], object]) -> None:
    """`list_rotation_candidates`, on both engines: Active generated root keys with an enabled
    policy, last rotated (or created) before the bound, across tenants, in (tenant, id) pages."""
    clock = FixedClock()
    services = _replica_services(shared_store, clock)
    first, second = sorted([call_context(new_tenant()), call_context(new_tenant())], key=lambda c: c.tenant)
    due = [_root_key(services, first), _root_key(services, second)]
    services.keys.create(first, KeySpec(name="plain"))
    services.keys.create(first, KeySpec(name="off", rotation=RotationPolicy(False, 1)))
    standard = services.keys.create(first, KeySpec(name="standard", extractable=True))
    _force_policy(services, standard)
    disabled = _root_key(services, first, name="disabled")
    services.keys.disable(first, disabled.id)
    now = clock.now()
    assert services.store.list_rotation_candidates(now) == []
    later = now + SECOND
    expected = [(first.tenant, due[0].id), (second.tenant, due[1].id)]
    assert services.store.list_rotation_candidates(later) == expected
    assert services.store.list_rotation_candidates(later, limit=1) == expected[:1]
    assert services.store.list_rotation_candidates(later, after=expected[0]) == expected[1:]


def test_stop_ends_a_scan_after_its_current_key(services: Services, ctx: CallContext) -> None:
    """What the daemon relies on at shutdown: `stop` waits for the scan, which ends early."""
    keys = [_root_key(services, ctx) for _ in range(3)]
    clock_of(services).advance(days=31)
    stopper: list[threading.Thread] = []

    def stop_during_the_first_rotation() -> None:
        if not stopper:
            stopper.append(threading.Thread(target=scheduler.stop))
            stopper[0].start()
            assert scheduler._stopping.wait(timeout=30)

    scheduler = RotationScheduler(
        services.store, services.keys, services.clock, audit=RecordingAudit(stop_during_the_first_rotation)
    )
    result = scheduler.run_once()
    stopper[0].join(timeout=30)
    assert not stopper[0].is_alive()
    assert result.rotated == 1
    assert sum(_versions(services, ctx, key) for key in keys) == 4


# --- the daemon's wiring: audit log and configuration ------------------------------------------------


class BrokenSink:
    def write(self, line: str) -> None:
        raise OSError("disk full")

    def close(self) -> None:
        return None


def test_rotations_are_audit_lines_of_the_process_audit_log(services: Services, ctx: CallContext) -> None:
    sink = MemorySink()
    scheduler = RotationScheduler(
        services.store, services.keys, services.clock, audit=RotationAuditLog(AuditLog(sink))
    )
    key = _root_key(services, ctx)
    clock_of(services).advance(days=31)
    scheduler.run_once()
    [event] = sink.events()
    assert {k: v for k, v in event.items() if v is not None and k != "timestamp"} == {
        "event": "kms.secrets.rotate",
        "outcome": "success",
        "principal": "hsmbridge:system",
        "instance": ctx.tenant,
        "key_id": key.id,
        "key_version": services.keys.get(ctx, key.id).current_version_id,
    }


def test_a_fail_closed_audit_log_that_is_down_stops_rotations(services: Services, ctx: CallContext) -> None:
    audit = AuditLog(BrokenSink(), fail_closed=True)
    with pytest.raises(HsmUnavailable):
        audit.record(event="kms.secrets.read", outcome="success")  # the log is now known down
    scheduler = RotationScheduler(
        services.store, services.keys, services.clock, audit=RotationAuditLog(audit)
    )
    key = _root_key(services, ctx)
    clock_of(services).advance(days=31)
    assert scheduler.run_once().failed == 1
    assert _versions(services, ctx, key) == 1


def test_the_scan_interval_stays_inside_the_24_hour_window() -> None:
    assert Config().server.rotation_interval == 900
    with pytest.raises(ValidationError):
        Config.model_validate({"server": {"rotation_interval": 86400}})
