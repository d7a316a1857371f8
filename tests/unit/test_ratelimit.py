import uuid

from auditlog.ratelimit import RateLimiter, retry_after_header


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refills_at_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=10, burst=20, now=clock)
    tenant = uuid.uuid4()
    assert limiter.acquire(tenant, 20) == 0
    wait = limiter.acquire(tenant, 5)
    assert abs(wait - 0.5) < 1e-9
    clock.now += 0.5
    assert limiter.acquire(tenant, 5) == 0


def test_tenants_have_separate_buckets() -> None:
    limiter = RateLimiter(rate_per_s=1, burst=1, now=FakeClock())
    a, b = uuid.uuid4(), uuid.uuid4()
    assert limiter.acquire(a) == 0
    assert limiter.acquire(a) > 0
    assert limiter.acquire(b) == 0


def test_zero_rate_disables_the_limit() -> None:
    limiter = RateLimiter(rate_per_s=0, burst=0)
    assert not limiter.enabled
    assert limiter.acquire(uuid.uuid4(), 10**9) == 0


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(2.2) == "3"
