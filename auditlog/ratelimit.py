"""Per-tenant token buckets, in process.

Each API process keeps its own buckets, so with N processes a tenant may send up to N times
the configured rate (README, "Rate limits"); configure the per-process rate accordingly.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(
        self, rate_per_s: float, burst: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate_per_s
        self.burst = max(burst, 1.0)
        self._lock = threading.Lock()
        self._buckets: dict[uuid.UUID, _Bucket] = {}
        self._now = now

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, tenant_id: uuid.UUID, cost: float = 1.0) -> float:
        """Take ``cost`` tokens; return 0 if allowed, else the seconds until it would be.

        A request costing more than the burst can never pass; it is told to wait as long as
        a full bucket takes to refill (and should be split)."""
        if not self.enabled:
            return 0.0
        now = self._now()
        with self._lock:
            bucket = self._buckets.get(tenant_id)
            if bucket is None:
                bucket = self._buckets[tenant_id] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return 0.0
            deficit = min(cost, self.burst) - bucket.tokens
        return max(deficit / self.rate, 0.001)


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
