"""The token bucket and the login back-off's arithmetic (the Redis script does the same)."""

import pytest

from promo_libs.rate_limit import Backoff, lockout_seconds
from promo_libs_testing.memory import MemoryLimiter

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_bucket_grants_its_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    granted = [await limiter.take("k", rate=2.0, burst=3) for _ in range(4)]
    assert granted[:3] == [0.0, 0.0, 0.0]
    assert granted[3] == pytest.approx(0.5)  # one token at 2 per second
    clock.now += 0.5
    assert await limiter.take("k", rate=2.0, burst=3) == 0.0
    assert await limiter.take("other", rate=2.0, burst=3) == 0.0  # keys are independent


async def test_failures_lock_out_exponentially_and_a_success_clears_them() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock)
    backoff = Backoff("login", str, frozenset({"INVALID_CREDENTIALS"}), free=3, base_seconds=1)
    for _ in range(3):
        await limiter.fail("a", backoff)
    assert await limiter.blocked_for("a") == 0.0  # three free failures
    await limiter.fail("a", backoff)
    assert await limiter.blocked_for("a") == pytest.approx(1.0)
    await limiter.fail("a", backoff)
    assert await limiter.blocked_for("a") == pytest.approx(2.0)
    assert [lockout_seconds(n, backoff) for n in (6, 7, 30)] == [4.0, 8.0, 900.0]
    await limiter.succeed("a")
    assert await limiter.blocked_for("a") == 0.0
