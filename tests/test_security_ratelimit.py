"""Rate limiting with an injected clock: bursts, refill, isolation, debt, pruning, the error."""

from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from hsmbridge.errors import Reason, ResourceExhausted
from hsmbridge.security.authz import ActionClass
from hsmbridge.security.ratelimit import RETRY_AFTER, BucketConfig, RateLimitConfig, RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(clock: Clock, rate: float = 2.0, burst: float = 5.0, **kw: int) -> RateLimiter:
    return RateLimiter({"crypto": BucketConfig(rate=rate, burst=burst)}, clock=clock, **kw)


def test_a_burst_passes_then_the_next_call_waits_for_one_token() -> None:
    clock = Clock()
    rl = limiter(clock)
    assert [rl.take("t", "crypto") for _ in range(5)] == [0.0] * 5
    assert rl.take("t", "crypto") == pytest.approx(0.5)  # one token at 2/s
    assert rl.take("t", "crypto") == pytest.approx(0.5)  # a refused call spends nothing


def test_refill_is_proportional_to_elapsed_time_and_capped_at_the_burst() -> None:
    clock = Clock()
    rl = limiter(clock)
    for _ in range(5):
        rl.take("t", "crypto")
    clock.now += 1.0  # two tokens back
    assert rl.take("t", "crypto") == 0.0
    assert rl.take("t", "crypto") == 0.0
    assert rl.take("t", "crypto") > 0
    clock.now += 3600  # idle for long: back to the burst, not more
    assert sum(rl.take("t", "crypto") == 0.0 for _ in range(10)) == 5


def test_a_clock_going_backwards_never_adds_tokens() -> None:
    clock = Clock()
    rl = limiter(clock)
    for _ in range(5):
        rl.take("t", "crypto")
    clock.now -= 100
    assert rl.take("t", "crypto") > 0


def test_instances_and_classes_have_separate_buckets() -> None:
    clock = Clock()
    rl = RateLimiter(
        {"crypto": BucketConfig(rate=1, burst=1), "manage": BucketConfig(rate=1, burst=1)}, clock=clock
    )
    assert rl.take("a", "crypto") == 0.0
    assert rl.take("a", "crypto") > 0
    assert rl.take("b", "crypto") == 0.0
    assert rl.take("a", "manage") == 0.0


def test_an_unconfigured_class_is_unlimited() -> None:
    rl = limiter(Clock())
    assert all(rl.take("t", "read") == 0.0 for _ in range(1000))
    assert rl.bucket_count("read") == 0


def test_a_batch_costs_its_size_and_one_larger_than_the_burst_goes_into_debt() -> None:
    clock = Clock()
    rl = limiter(clock, rate=10, burst=20)
    assert rl.take("t", "crypto", cost=15) == 0.0
    assert rl.take("t", "crypto", cost=10) == pytest.approx(0.5)  # 5 left, 5 more at 10/s
    clock.now += 10  # full again
    assert rl.take("t", "crypto", cost=50) == 0.0  # a full bucket lets it through: 20 - 50 = -30
    assert rl.take("t", "crypto") == pytest.approx(3.1)  # 31 tokens short at 10/s
    clock.now += 3.1
    assert rl.take("t", "crypto") == 0.0


def test_acquire_raises_rate_limited_with_whole_retry_after_seconds() -> None:
    clock = Clock()
    rl = limiter(clock, rate=0.25, burst=1)
    rl.acquire("t", "crypto")
    with pytest.raises(ResourceExhausted) as info:
        rl.acquire("t", "crypto")
    assert info.value.reason is Reason.RATE_LIMITED
    assert info.value.metadata == {RETRY_AFTER: "4"}
    fast = limiter(clock, rate=1000, burst=1)
    fast.acquire("t", "crypto")
    with pytest.raises(ResourceExhausted) as info:
        fast.acquire("t", "crypto")
    assert info.value.metadata[RETRY_AFTER] == "1"  # never 0: clients would spin


def test_buckets_are_bounded_by_dropping_full_ones() -> None:
    clock = Clock()
    rl = limiter(clock, rate=1, burst=2, max_buckets=10)
    for i in range(10):
        rl.take(f"t{i}", "crypto")
    clock.now += 5  # all refilled: droppable without changing any decision
    rl.take("new", "crypto")
    assert rl.bucket_count("crypto") == 1
    # busy buckets are kept; the prune threshold grows instead of rescanning on every call
    for i in range(30):
        rl.take(f"busy{i}", "crypto")
    assert rl.bucket_count("crypto") == 31


def test_concurrent_takers_never_exceed_the_burst() -> None:
    clock = Clock()
    rl = limiter(clock, rate=1, burst=100)
    allowed = []

    def worker() -> None:
        allowed.append(sum(rl.take("t", "crypto") == 0.0 for _ in range(50)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 100


def test_config_defaults_and_disable() -> None:
    cfg = RateLimitConfig()
    assert set(cfg.classes) == set(ActionClass)
    assert RateLimiter.from_config(RateLimitConfig(enabled=False)).take("t", "crypto") == 0.0
    custom = RateLimitConfig.model_validate({"classes": {"crypto": {"rate": 1, "burst": 1}}})
    rl = RateLimiter.from_config(custom, clock=Clock())
    assert rl.take("t", "crypto") == 0.0 and rl.take("t", "crypto") > 0
    assert rl.take("t", "manage") == 0.0
    with pytest.raises(ValidationError):
        RateLimitConfig.model_validate({"classes": {"bulk": {"rate": 1, "burst": 1}}})
    with pytest.raises(ValidationError):
        RateLimitConfig.model_validate({"classes": {"crypto": {"rate": 0, "burst": 1}}})
