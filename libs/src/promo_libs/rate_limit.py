"""Rate limits shared by every replica: token buckets and login back-off in Redis (DESIGN.md I7).

Each service declares one visible table, `LimitTable`: method -> `MethodLimits`, enforced by
the shared interceptor before the use case runs (promo_libs.grpc.interceptors):

- `per_caller`: a bucket per (calling workload, method), for the workloads that face people
  (the storefront); the platform's own services are not throttled by it;
- `buckets`: buckets keyed by a field of the request (an email, a user id, a code), so one
  account or one code cannot be hammered, whichever replica or caller the calls reach;
- `backoff`: failures of the given reasons (e.g. INVALID_CREDENTIALS) per key lock the key out
  for exponentially longer (base * 2^(n - free)), until a success clears them.

A refused call answers RESOURCE_EXHAUSTED with RetryInfo (when to retry) and reason
RATE_LIMITED or TOO_MANY_FAILURES. The buckets live in Redis, one key each, updated by one Lua
script (atomic: concurrent calls on two replicas cannot both take the last token), with the time
taken from Redis itself so replicas' clocks do not matter. Keys are `rl:{<scope>:<digest>}`: a
hash tag makes each key its own slot (Redis Cluster safe), and the digest keeps emails and codes
out of Redis.

When Redis does not answer, each method's table entry decides (`if_store_down`, no default, so
every limited method states its choice where its limits are): LET_THROUGH (logged) where the
limits only slow abuse that is impractical anyway and refusing would stop the business (codes
too long to guess; checkout), REFUSE (UNAVAILABLE, DEPENDENCY_UNAVAILABLE: retry later) where
the limits are the protection itself (log-in: without the lock-out and the per-email bucket,
passwords could be guessed at the argon2 queue's speed for as long as Redis is down).
"""

from __future__ import annotations

import enum
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from promo_libs import errors

KeyOf = Callable[[Any], str]


@dataclass(frozen=True)
class Bucket:
    """`burst` calls at once, refilled at `rate` per second, per value of `key(request)`."""

    scope: str
    key: KeyOf
    rate: float
    burst: int


@dataclass(frozen=True)
class Backoff:
    """After `free` failures (of `reasons`) per key, lock it out for base * 2^k seconds."""

    scope: str
    key: KeyOf
    reasons: frozenset[str]
    free: int = 3
    base_seconds: float = 1.0
    max_seconds: float = 900.0


class IfStoreDown(enum.Enum):
    """What a limited method does while the buckets' store (Redis) does not answer."""

    LET_THROUGH = "let through"
    REFUSE = "refuse"


@dataclass(frozen=True, kw_only=True)
class MethodLimits:
    if_store_down: IfStoreDown  # no default: each method decides (module docstring)
    per_caller: tuple[float, int] | None = None  # (rate per second, burst)
    buckets: Sequence[Bucket] = ()
    backoff: Backoff | None = None


LimitTable = Mapping[str, MethodLimits]  # "/pkg.Service/Method" -> limits


@dataclass(frozen=True)
class Overrides:
    """Per-scope (rate, burst) replacing the table's, from configuration (e.g. tests)."""

    values: Mapping[str, tuple[float, int]] = field(default_factory=dict)

    def of(self, scope: str, rate: float, burst: int) -> tuple[float, int]:
        return self.values.get(scope, (rate, burst))


def bucket_key(scope: str, value: str) -> str:
    digest = hashlib.sha256(value.encode()).hexdigest()[:32]
    return f"rl:{{{scope}:{digest}}}"


class Limiter(ABC):
    """The buckets' store: Redis in services, memory in unit tests."""

    @abstractmethod
    async def take(self, key: str, rate: float, burst: int) -> float:
        """Takes a token: 0 when granted, else the seconds until one is there."""

    @abstractmethod
    async def blocked_for(self, key: str) -> float:
        """Seconds the key is still locked out for (0: it is not)."""

    @abstractmethod
    async def fail(self, key: str, backoff: Backoff) -> None:
        """Counts a failure, locking the key out once past `backoff.free`."""

    @abstractmethod
    async def succeed(self, key: str) -> None:
        """Forgets the key's failures."""


def lockout_seconds(failures: int, backoff: Backoff) -> float:
    if failures <= backoff.free:
        return 0.0
    return float(
        min(backoff.max_seconds, backoff.base_seconds * 2 ** (failures - backoff.free - 1))
    )


_TAKE = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""

_FAIL = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local free, base, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if n > free then
  local lock = math.min(max, base * 2 ^ (n - free - 1))
  redis.call('HSET', KEYS[1], 'until', tostring(now + lock))
end
redis.call('PEXPIRE', KEYS[1], math.ceil(max * 2000))
return n
"""

_BLOCKED = """
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local until_ = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
return tostring(math.max(0, until_ - now))
"""


class RedisLimiter(Limiter):
    def __init__(self, redis: Any) -> None:
        self._take = redis.register_script(_TAKE)
        self._fail = redis.register_script(_FAIL)
        self._blocked = redis.register_script(_BLOCKED)
        self._redis = redis

    async def take(self, key: str, rate: float, burst: int) -> float:
        return float(await self._take(keys=[key], args=[rate, burst]))

    async def blocked_for(self, key: str) -> float:
        return float(await self._blocked(keys=[f"{key}:failures"]))

    async def fail(self, key: str, backoff: Backoff) -> None:
        await self._fail(
            keys=[f"{key}:failures"], args=[backoff.free, backoff.base_seconds, backoff.max_seconds]
        )

    async def succeed(self, key: str) -> None:
        await self._redis.delete(f"{key}:failures")


def exhausted(reason: str, wait: float, what: str) -> errors.ResourceExhausted:
    return errors.ResourceExhausted(
        f"too many {what}; retry in {math.ceil(wait)} s", reason, retry_after_seconds=wait
    )
