"""In-memory fakes of promo_libs' ports, for unit tests of the services and of libs: the
same semantics as the real adapters, without a server. Never shipped (see __init__)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from promo_libs.bus import EventPublisher
from promo_libs.outbox import OutboxEntry
from promo_libs.rate_limit import Backoff, Limiter, lockout_seconds
from promo_libs.repository import Repository, T


class InMemoryRepository(Repository[T]):
    """A dict-backed fake with the same semantics, for unit tests of application services."""

    def __init__(self) -> None:
        self.items: dict[str, T] = {}

    async def find_by_id(self, entity_id: str) -> T | None:
        item = self.items.get(entity_id)
        return copy.deepcopy(item) if item is not None else None

    async def find_all(self, filter: Mapping[str, Any] | None = None) -> list[T]:
        wanted = dict(filter or {})
        return [
            copy.deepcopy(item)
            for _, item in sorted(self.items.items())
            if all(getattr(item, key) == value for key, value in wanted.items())
        ]

    async def create(self, entity: T) -> T:
        if entity.id in self.items:
            raise KeyError(f"duplicate id {entity.id}")
        self.items[entity.id] = copy.deepcopy(entity)
        return entity

    async def update(self, entity_id: str, changes: Mapping[str, Any]) -> T:
        item = self.items[entity_id]
        for key, value in changes.items():
            setattr(item, key, value)
        return copy.deepcopy(item)

    async def delete(self, entity_id: str) -> None:
        self.items.pop(entity_id, None)

    async def exists(self, entity_id: str) -> bool:
        return entity_id in self.items


@dataclass
class InMemoryPublisher(EventPublisher):
    """A fake for unit tests: the streams as lists, de-duplicated like the real one."""

    streams: dict[str, list[OutboxEntry]] = field(default_factory=dict)
    fail: bool = False
    _seen: set[str] = field(default_factory=set)

    async def publish(self, events: Sequence[OutboxEntry]) -> None:
        if self.fail:
            raise ConnectionError("bus unavailable")
        for event in events:
            if event.event_id not in self._seen:
                self._seen.add(event.event_id)
                self.streams.setdefault(event.stream, []).append(event)

    async def durable(self) -> None:
        if self.fail:
            raise ConnectionError("bus unavailable")


class MemoryLimiter(Limiter):
    """The same arithmetic in one process, on a clock the test controls."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._failures: dict[str, tuple[int, float]] = {}

    async def take(self, key: str, rate: float, burst: int) -> float:
        now = self._clock()
        tokens, ts = self._buckets.get(key, (float(burst), now))
        tokens = min(float(burst), tokens + max(0.0, now - ts) * rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / rate
        self._buckets[key] = (tokens, now)
        return wait

    async def blocked_for(self, key: str) -> float:
        _, until = self._failures.get(key, (0, 0.0))
        return max(0.0, until - self._clock())

    async def fail(self, key: str, backoff: Backoff) -> None:
        count, until = self._failures.get(key, (0, 0.0))
        count += 1
        lock = lockout_seconds(count, backoff)
        self._failures[key] = (count, self._clock() + lock if lock else until)

    async def succeed(self, key: str) -> None:
        self._failures.pop(key, None)
