"""Two real daemons on one PostgreSQL and one SoftHSM2 token rotate each due key exactly once.

Daemon "a" runs two workers (only its worker 0 scans), "b" one. The keys are created by this
test through the service layer with a clock 40 days in the past (the daemons run on the system
clock), so a one-month policy is due the moment the daemons start and both race for every key:
each scans every 0.2 s. The test waits (bounded, polling) until every due key has its second
version and both daemons have scanned again since, then checks what a user would: one new
version per key, one ``kms.secrets.rotate`` audit line per key across both daemons' logs, by the
system principal, and the rotation counters summing to the number of keys. A bound like "within
60 s" is a deadline, not a measurement.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemon import Daemon
from prometheus_client.parser import text_string_to_metric_families
from services import build_services, call_context, new_tenant

from hsmbridge.core.clock import FixedClock
from hsmbridge.core.keys import KeySpec
from hsmbridge.core.model import RotationPolicy
from hsmbridge.core.services import Services
from hsmbridge.core.store import open_store

pytest_plugins = ("store_fixtures",)
pytestmark = pytest.mark.softhsm

DUE_KEYS = 8


@pytest.fixture
def keys_created_40_days_ago(
    hsm_backend: object, postgres_url: str
) -> Iterator[tuple[Services, str, list[str], str]]:
    store = open_store(postgres_url)
    store.migrate()
    services = build_services(
        hsm_backend,  # type: ignore[arg-type]
        store=store,
        clock=FixedClock(datetime.now(UTC) - timedelta(days=40)),
    )
    ctx = call_context(new_tenant())
    due = [
        services.keys.create(ctx, KeySpec(name=f"monthly-{i}", rotation=RotationPolicy(True, 1))).id
        for i in range(DUE_KEYS)
    ]
    quarterly = services.keys.create(ctx, KeySpec(name="quarterly", rotation=RotationPolicy(True, 3))).id
    try:
        yield services, ctx.tenant, due, quarterly
    finally:
        store.close()


@pytest.fixture
def two_daemons(softhsm_token: dict[str, str], postgres_url: str, tmp_path: Path) -> Iterator[list[Daemon]]:
    daemons = []
    try:
        # One daemon with two workers (only worker 0 scans), one with one.
        for name, workers in (("a", "2"), ("b", "1")):
            workdir = tmp_path / name
            workdir.mkdir()
            daemon = Daemon(
                softhsm_token,
                workdir,
                HSMBRIDGE_STORE__PATH="",
                HSMBRIDGE_STORE__URL=postgres_url,
                HSMBRIDGE_REST__ENABLED="false",
                HSMBRIDGE_SERVER__ROTATION_INTERVAL="0.2",
                HSMBRIDGE_SERVER__WORKERS=workers,
            )
            daemons.append(daemon)
            daemon.start()
        yield daemons
    finally:
        for daemon in daemons:
            if daemon.proc is not None:
                daemon.stop()


def _metrics(daemon: Daemon) -> dict[str, float]:
    """The daemon's rotation metrics; with workers, the supervisor's merge (a `worker` label)."""
    with urllib.request.urlopen(daemon.metrics_url, timeout=10) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name.startswith("hsmbridge_auto_rotation"):
            for sample in family.samples:
                assert sample.labels.get("worker", "0") == "0", "only worker 0 scans"
                found[sample.name] = sample.value
    return found


def _eventually(check: Callable[[], bool], bound: float, what: str) -> None:
    deadline = time.monotonic() + bound
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {bound} s: {what}")
        time.sleep(0.1)


def _rotate_audit_lines(daemon: Daemon) -> list[dict[str, object]]:
    events = []
    for line in daemon.output:
        if line.startswith("{") and '"kms.secrets.rotate"' in line:
            events.append(json.loads(line))
    return events


def test_two_daemons_on_one_postgresql_rotate_each_due_key_once(
    keys_created_40_days_ago: tuple[Services, str, list[str], str], two_daemons: list[Daemon]
) -> None:
    services, tenant, due, quarterly = keys_created_40_days_ago

    def versions(key_id: str) -> int:
        return len(services.store.list_versions(tenant, key_id))

    _eventually(lambda: all(versions(k) >= 2 for k in due), 60, "every due key rotated")
    scans = [_metrics(d)["hsmbridge_auto_rotation_scans_total"] for d in two_daemons]
    _eventually(
        lambda: all(
            _metrics(d)["hsmbridge_auto_rotation_scans_total"] >= s + 2
            for d, s in zip(two_daemons, scans, strict=True)
        ),
        60,
        "two more scans by each daemon",
    )

    assert [versions(k) for k in due] == [2] * DUE_KEYS
    assert versions(quarterly) == 1
    counters = [_metrics(d) for d in two_daemons]
    assert sum(c["hsmbridge_auto_rotations_total"] for c in counters) == DUE_KEYS
    assert sum(c["hsmbridge_auto_rotations_failed_total"] for c in counters) == 0
    assert all(c["hsmbridge_auto_rotations_due"] == 0 for c in counters)

    events = [event for d in two_daemons for event in _rotate_audit_lines(d)]
    assert sorted(str(e["key_id"]) for e in events) == sorted(due)
    for event in events:
        assert event["outcome"] == "success"
        assert event["principal"] == "hsmbridge:system"
        assert event["instance"] == tenant
        key = services.store.get_key(tenant, str(event["key_id"]))
        assert key is not None and event["key_version"] == key.current_version_id
