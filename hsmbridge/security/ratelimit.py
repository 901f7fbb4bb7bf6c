"""Per-instance rate limiting: one token bucket per (action class, instance).

Key Protect applies rate limits "on a per-service-instance basis" and answers 429; the Go SDK
retries 429 after a back-off. Buckets are per instance so one tenant's bulk rewrap cannot starve
another's unwraps, and per action class (`ActionClass`: crypto, manage, read) so a flood of list
calls cannot eat the budget of the HSM-bound crypto path.

Why this shape:
- The check runs on every call, so it is two dict lookups and a little float arithmetic under one
  short lock — no allocation once a bucket exists (buckets live in per-class dicts keyed by the
  instance string the caller already has, so no tuple key is built per call).
- Time comes from an injected monotonic clock, so tests drive refill without sleeping.
- A batch may cost more than one token. A cost above the burst could otherwise never pass, so
  a full bucket lets it through and goes into debt; later calls wait for the debt to refill.
- A refused request costs at most one token: the gate gives back the rest (`refund`) when an
  admitted call fails, and the adapters check a batch's size before its cost is charged. Without
  that, one oversized or invalid batch would drive the bucket into a debt that locks the tenant
  out for as long as the debt takes to refill (issue 15: 18 s per rejected 1,000,000-item batch).
- The number of buckets is bounded: instance names are caller-supplied. When a class holds more
  than `max_buckets`, buckets that have refilled to full are dropped — a full bucket is
  indistinguishable from a new one, so dropping it changes no decision.

Defaults are an inference [I] (Key Protect does not publish its per-instance limits): generous for
crypto, tighter for HSM-heavy management, moderate for reads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping

from pydantic import BaseModel, ConfigDict, Field

from hsmbridge.errors import Reason, ResourceExhausted
from hsmbridge.security.authz import ActionClass

#: The metadata key of `ResourceExhausted` that carries whole seconds to wait; REST sends it as
#: ``Retry-After``, gRPC in ``ErrorInfo.metadata``.
RETRY_AFTER = "retry_after"
TOO_MANY_REQUESTS_MSG = "Too Many Requests: Wait a few minutes and try again."


class BucketConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: sustained requests per second
    rate: float = Field(gt=0)
    #: requests allowed at once after an idle period
    burst: float = Field(ge=1)


def _default_classes() -> dict[ActionClass, BucketConfig]:
    """Per instance. Crypto counts batch *items*: one worker does tens of thousands of GCM items
    per second, so a lower default would throttle the bulk rewraps batches exist for; the limit is
    there to keep one tenant from monopolising the HSM, not to meter normal use. Management calls
    (key creation, RSA keygen for import tokens) are the expensive ones."""
    return {
        ActionClass.CRYPTO: BucketConfig(rate=50_000.0, burst=100_000.0),
        ActionClass.MANAGE: BucketConfig(rate=100.0, burst=200.0),
        ActionClass.READ: BucketConfig(rate=2_000.0, burst=4_000.0),
    }


class RateLimitConfig(BaseModel):
    """``[security.rate_limit]``; a class left out of `classes` is not limited."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    classes: dict[ActionClass, BucketConfig] = Field(default_factory=_default_classes)
    max_buckets: int = Field(100_000, ge=1)


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class RateLimiter:
    """Token buckets per (action class, instance). Thread-safe."""

    def __init__(
        self,
        limits: Mapping[str, BucketConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 100_000,
    ) -> None:
        self._limits = {str(k): (float(v.rate), float(v.burst)) for k, v in limits.items()}
        self._buckets: dict[str, dict[str, _Bucket]] = {k: {} for k in self._limits}
        self._clock = clock
        self._lock = threading.Lock()
        self._max = max_buckets
        self._prune_at = {k: max_buckets for k in self._limits}

    @classmethod
    def from_config(
        cls, config: RateLimitConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> RateLimiter:
        return cls(config.classes if config.enabled else {}, clock=clock, max_buckets=config.max_buckets)

    def take(self, instance: str, action_class: str, cost: float = 1.0) -> float:
        """Spend `cost` tokens of the instance's bucket for the class: 0.0 when allowed, else the
        seconds until it would be (nothing is spent then)."""
        limit = self._limits.get(action_class)
        if limit is None:
            return 0.0
        rate, burst = limit
        buckets = self._buckets[action_class]
        with self._lock:
            now = self._clock()
            bucket = buckets.get(instance)
            if bucket is None:
                if len(buckets) >= self._prune_at[action_class]:
                    self._prune(action_class, now)
                bucket = buckets[instance] = _Bucket(burst, now)
            else:
                elapsed = now - bucket.stamp
                if elapsed > 0:
                    bucket.tokens = min(burst, bucket.tokens + elapsed * rate)
                    bucket.stamp = now
            needed = min(cost, burst)
            if bucket.tokens >= needed:
                bucket.tokens -= cost
                return 0.0
            return (needed - bucket.tokens) / rate

    def refund(self, instance: str, action_class: str, amount: float) -> None:
        """Give back `amount` tokens of an admitted call that turned out to be refused; never
        above the burst (a bucket that refilled meanwhile stays full)."""
        limit = self._limits.get(action_class)
        if limit is None or amount <= 0:
            return
        with self._lock:
            bucket = self._buckets[action_class].get(instance)
            if bucket is not None:
                bucket.tokens = min(limit[1], bucket.tokens + amount)

    def acquire(self, instance: str, action_class: str, cost: float = 1.0) -> None:
        """`take`, raising `ResourceExhausted(RATE_LIMITED)` with whole retry-after seconds."""
        wait = self.take(instance, action_class, cost)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise ResourceExhausted(
                TOO_MANY_REQUESTS_MSG, reason=Reason.RATE_LIMITED, metadata={RETRY_AFTER: str(seconds)}
            )

    def _prune(self, action_class: str, now: float) -> None:
        rate, burst = self._limits[action_class]
        buckets = self._buckets[action_class]
        full = [i for i, b in buckets.items() if b.tokens + (now - b.stamp) * rate >= burst]
        for instance in full:
            del buckets[instance]
        # If most buckets are busy, do not rescan on every new instance: wait for twice as many.
        self._prune_at[action_class] = max(self._max, 2 * len(buckets))

    def bucket_count(self, action_class: str) -> int:
        return len(self._buckets.get(action_class, {}))
