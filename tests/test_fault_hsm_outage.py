"""An HSM outage heals by itself (issue 15): a real `hsmbridge dev` daemon under concurrent
wrap/unwrap/create load over gRPC (the generated client) and wrap over REST, while its SoftHSM2
token directory is moved out of SoftHSM2's token dir for 1 s, 10 s and 120 s, then back.

What must hold, for every outage length, with no restart:

- the daemon never crashes, and no call returns a wrong plaintext (every unwrap is compared with
  what was wrapped, and every ciphertext acknowledged during the run unwraps afterwards);
- a call that fails does so with UNAVAILABLE + ErrorInfo reason HSM_UNAVAILABLE + RetryInfo
  (gRPC) or 503 + `Retry-After` + reason code HSM_UNAVAILABLE_ERR (REST), never INTERNAL / 500;
- every client is served again within 5 s of the token's return (a functional deadline);
- readiness is NOT_SERVING during the outage and SERVING after it; liveness stays SERVING.

The token belongs to this module's daemon alone (`hsmbridge dev` makes its own in its work dir),
so moving it away disturbs no other test. The 120 s outage is marked slow but stays in `make
test` (≈2.3 min); `-m "not slow"` skips it.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import httpx
import pytest
from daemon import Daemon
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from hsmbridge.v1 import crypto_pb2, crypto_pb2_grpc, keys_pb2, keys_pb2_grpc

pytestmark = pytest.mark.softhsm

MD = (("x-hsmbridge-tenant", "outage"),)
BACK_WITHIN = 5.0  # seconds after the token returns
DEV = {"authorization": "Bearer outage-token", "bluemix-instance": "outage"}
SERVING = health_pb2.HealthCheckResponse.SERVING
T = TypeVar("T")


@pytest.fixture(scope="module")
def dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(
        None,
        tmp_path_factory.mktemp("outage"),
        args=("dev",),
        HSMBRIDGE_DEV_TOKEN="outage-token",
        HSMBRIDGE_SERVER__READINESS_INTERVAL="0.1",
    )
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.stop()


@dataclass
class Outcome:
    at: float
    op: str
    ok: bool
    #: gRPC code name or HTTP status; "" when ok
    code: str = ""
    #: ErrorInfo reason / KP reason code
    reason: str = ""
    retry_after: str | None = None


@dataclass
class Ledger:
    outcomes: list[Outcome] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    #: (key id, ciphertext, aad, plaintext) of every acknowledged wrap
    acknowledged: list[tuple[str, bytes, str, bytes]] = field(default_factory=list)
    health: list[tuple[float, int, int]] = field(default_factory=list)  # (t, readiness, liveness)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def grpc_failure(op: str, err: grpc.RpcError) -> Outcome:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    reason = ""
    retry_after = None
    retry_info: int | None = None
    for detail in status.details if status is not None else ():
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, retry_after = info.reason, info.metadata.get("retry_after")
        elif detail.Unpack(retry):
            retry_info = retry.retry_delay.seconds
    if retry_after is not None and retry_info != int(retry_after):
        reason += " (RetryInfo missing or different)"
    return Outcome(time.monotonic(), op, False, err.code().name, reason, retry_after)


def token_dir(workdir: Path) -> Path:
    (found,) = [p for p in (workdir / "var" / "softhsm" / "tokens").iterdir() if p.is_dir()]
    return found


class Load:
    """Client threads (and a health prober) running until `stop()`; see the module docstring."""

    def __init__(self, d: Daemon, key_id: str) -> None:
        self.d = d
        self.key_id = key_id
        self.ledger = Ledger()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._guard(target), daemon=True)
            for target in (
                lambda: self._wrap_unwrap("a"),
                lambda: self._wrap_unwrap("b"),
                lambda: self._wrap_unwrap("c"),
                self._create,
                self._rest_wrap,
                self._probe_health,
            )
        ]

    def _guard(self, target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except Exception as exc:  # a client bug must fail the test, not vanish in a thread
                self.ledger.wrong.append(f"client thread crashed: {exc!r}")

        return run

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _call(self, op: str, rpc: Callable[..., T], request: object) -> T | None:
        """`rpc(request)`, recorded in the ledger; None when it failed."""
        try:
            result = rpc(request, metadata=MD, timeout=15)
        except grpc.RpcError as err:
            self.ledger.add(grpc_failure(op, err))
            time.sleep(0.02)
            return None
        self.ledger.add(Outcome(time.monotonic(), op, True))
        return result

    def _wrap_unwrap(self, name: str) -> None:
        crypto = crypto_pb2_grpc.CryptoServiceStub(grpc.insecure_channel(self.d.address))
        while not self._stop.is_set():
            plaintext = os.urandom(32)
            request = crypto_pb2.WrapRequest(key_id=self.key_id, plaintext=plaintext, aad=[name])
            wrapped = self._call("wrap", crypto.Wrap, request)
            if wrapped is None:
                continue
            with self.ledger.lock:
                self.ledger.acknowledged.append((self.key_id, wrapped.ciphertext, name, plaintext))
            unwrap = crypto_pb2.UnwrapRequest(key_id=self.key_id, ciphertext=wrapped.ciphertext, aad=[name])
            opened = self._call("unwrap", crypto.Unwrap, unwrap)
            if opened is not None and opened.plaintext != plaintext:
                self.ledger.wrong.append("unwrap returned another plaintext")

    def _create(self) -> None:
        keys = keys_pb2_grpc.KeyServiceStub(grpc.insecure_channel(self.d.address))
        n = 0
        while not self._stop.is_set():
            n += 1
            self._call("create", keys.CreateKey, keys_pb2.CreateKeyRequest(name=f"k{n}"))
            time.sleep(0.02)

    def _rest_wrap(self) -> None:
        url = f"{self.d.rest_url}/api/v2/keys/{self.key_id}/actions/wrap"
        with httpx.Client(timeout=15) as http:
            while not self._stop.is_set():
                response = http.post(url, json={"plaintext": "cGxhaW50ZXh0LWRhdGEta2V5"}, headers=DEV)
                if response.status_code == 200:
                    self.ledger.add(Outcome(time.monotonic(), "rest-wrap", True))
                else:
                    reasons = response.json()["resources"][0].get("reasons", [{}])
                    self.ledger.add(
                        Outcome(
                            time.monotonic(),
                            "rest-wrap",
                            False,
                            str(response.status_code),
                            reasons[0].get("code", ""),
                            response.headers.get("retry-after"),
                        )
                    )
                    time.sleep(0.02)

    def _probe_health(self) -> None:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(self.d.address))
        while not self._stop.is_set():
            ready = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            live = health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5).status
            with self.ledger.lock:
                self.ledger.health.append((time.monotonic(), ready, live))
            time.sleep(0.05)


def wait_until(check: Callable[[], bool], bound: float) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def diagnose(d: Daemon, ledger: Ledger, since: float) -> str:
    with ledger.lock:
        recent = [o for o in ledger.outcomes if o.at > since]
    kinds = sorted({(o.op, o.ok, o.code, o.reason) for o in recent})
    return f"not serving again; outcomes since: {kinds}\n" + "".join(d.output[-30:])


def run_outage(d: Daemon, seconds: float) -> dict[str, float]:
    """Move the token away for `seconds` under load; check everything; return measurements."""
    keys = keys_pb2_grpc.KeyServiceStub(grpc.insecure_channel(d.address))
    key = keys.CreateKey(keys_pb2.CreateKeyRequest(name=f"outage-{seconds}"), metadata=MD, timeout=30)
    load = Load(d, key.id)
    load.start()
    ledger = load.ledger
    assert wait_until(lambda: sum(o.ok for o in ledger.outcomes) >= 20, 30), "no load before the outage"
    directory = token_dir(d.workdir)
    aside = d.workdir / "token-aside"
    shutil.move(directory, aside)
    gone_at = time.monotonic()
    try:
        time.sleep(seconds)  # the fault's length itself, not a synchronisation
    finally:
        shutil.move(aside, directory)
    back_at = time.monotonic()
    ops = ("wrap", "unwrap", "create", "rest-wrap")

    def all_served_since(t: float) -> bool:
        with ledger.lock:
            return all(any(o.ok and o.at > t and o.op == op for o in ledger.outcomes) for op in ops)

    assert wait_until(lambda: all_served_since(back_at), BACK_WITHIN + 10), diagnose(d, ledger, back_at)
    # keep the load on past the deadline, so "nothing failed after it" is checked over a window
    window = back_at + BACK_WITHIN + 1.5
    assert wait_until(lambda: time.monotonic() > window and all_served_since(window - 1.0), 30)
    load.stop()

    assert d.proc is not None and d.proc.poll() is None, "the daemon died:\n" + "".join(d.output[-40:])
    assert not ledger.wrong, ledger.wrong
    failures = [o for o in ledger.outcomes if not o.ok]
    assert failures, "the outage was never noticed"
    for failure in failures:
        if failure.op == "rest-wrap":
            assert (failure.code, failure.reason) == ("503", "HSM_UNAVAILABLE_ERR"), failure
        else:
            assert (failure.code, failure.reason) == ("UNAVAILABLE", "HSM_UNAVAILABLE"), failure
        assert failure.retry_after is not None and int(failure.retry_after) >= 1, failure
    # served again within the deadline: every op type succeeded, and nothing failed, after it
    first_ok = {
        op: min(o.at for o in ledger.outcomes if o.ok and o.op == op and o.at > back_at) for op in ops
    }
    last_failure = max(f.at for f in failures)
    serving_again = max(max(first_ok.values()), last_failure) - back_at
    assert serving_again <= BACK_WITHIN, f"served again {serving_again:.2f}s after the token returned"

    during = [(r, live) for t, r, live in ledger.health if gone_at + 0.5 < t < back_at]
    after = [(r, live) for t, r, live in ledger.health if t > back_at + BACK_WITHIN]
    assert any(r != SERVING for r, _ in during), "readiness stayed SERVING during the outage"
    assert after and all(r == SERVING for r, _ in after), "readiness did not come back"
    assert all(live == SERVING for _, _, live in ledger.health), "liveness failed: it must not"

    # every ciphertext acknowledged during the run still opens to its plaintext
    crypto = crypto_pb2_grpc.CryptoServiceStub(grpc.insecure_channel(d.address))
    for key_id, ciphertext, aad, plaintext in ledger.acknowledged:
        opened = crypto.Unwrap(
            crypto_pb2.UnwrapRequest(key_id=key_id, ciphertext=ciphertext, aad=[aad]), metadata=MD, timeout=15
        )
        assert opened.plaintext == plaintext
    noticed = min(f.at for f in failures) - gone_at
    print(
        f"outage {seconds:.0f}s: {len(ledger.outcomes)} calls, {len(failures)} failed (all retryable), "
        f"noticed after {noticed:.2f}s, serving again {serving_again:.2f}s after the token returned"
    )
    return {"serving_again": serving_again, "failures": len(failures)}


def test_a_one_second_token_outage_heals_by_itself(dev: Daemon) -> None:
    run_outage(dev, 1.0)


def test_a_ten_second_token_outage_heals_by_itself(dev: Daemon) -> None:
    run_outage(dev, 10.0)


@pytest.mark.slow
def test_a_two_minute_token_outage_heals_by_itself(dev: Daemon) -> None:
    run_outage(dev, 120.0)


def test_an_outage_with_no_traffic_is_noticed_and_healed_by_readiness_alone(dev: Daemon) -> None:
    """An unready pod gets no requests: the readiness check itself must notice a vanished token
    and start the recovery, or the daemon would stay unready after the token returned."""
    channel = grpc.insecure_channel(dev.address)
    health = health_pb2_grpc.HealthStub(channel)

    def ready() -> bool:
        return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == SERVING

    assert wait_until(ready, 30)
    directory, aside = token_dir(dev.workdir), dev.workdir / "token-aside"
    shutil.move(directory, aside)
    try:
        assert wait_until(lambda: not ready(), 10), "readiness did not notice the outage"
    finally:
        shutil.move(aside, directory)
    back_at = time.monotonic()
    assert wait_until(ready, BACK_WITHIN), "not ready again after the token returned"
    print(f"idle outage: ready again {time.monotonic() - back_at:.2f}s after the token returned")
    keys = keys_pb2_grpc.KeyServiceStub(channel)
    key = keys.CreateKey(keys_pb2.CreateKeyRequest(name="after-idle-outage"), metadata=MD, timeout=30)
    crypto = crypto_pb2_grpc.CryptoServiceStub(channel)
    wrapped = crypto.Wrap(crypto_pb2.WrapRequest(key_id=key.id, plaintext=b"x" * 32), metadata=MD, timeout=15)
    opened = crypto.Unwrap(
        crypto_pb2.UnwrapRequest(key_id=key.id, ciphertext=wrapped.ciphertext), metadata=MD
    )
    assert opened.plaintext == b"x" * 32
