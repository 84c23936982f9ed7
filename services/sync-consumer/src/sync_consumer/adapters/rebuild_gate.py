"""The rebuild gate on Redis: a rebuild holds every consumer of a group between two batches.

Keys, per consumer group:
- `promo:sync:<group>:hold`: set (with an expiry the rebuild keeps refreshing) while a rebuild
  runs; a consumer that sees it before a batch waits until it is gone;
- `promo:sync:<group>:busy:<stream>:<consumer>`: set by a consumer for the length of one batch
  (with an expiry, in case it dies mid-batch);
- `promo:sync:<group>:generation`: incremented by a rebuild that swapped tables in; a consumer
  that sees it change drops its cached stream positions.

The consumer sets its busy mark before it looks at the hold, and the rebuild sets the hold before
it looks for busy marks; Redis runs commands one at a time, so either the consumer sees the hold
(and waits) or the rebuild sees the batch (and waits for it to end). No batch runs while held.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from sync_consumer.domain.ports import RebuildGate

_UNSEEN = b"unseen"


def hold_key(group: str) -> str:
    return f"promo:sync:{group}:hold"


def generation_key(group: str) -> str:
    return f"promo:sync:{group}:generation"


def busy_pattern(group: str) -> str:
    return f"promo:sync:{group}:busy:*"


class RedisRebuildGate(RebuildGate):
    def __init__(
        self,
        client: aioredis.Redis,
        group: str,
        stream: str,
        consumer: str,
        *,
        busy_ms: int = 60_000,
        poll_seconds: float = 0.2,
    ) -> None:
        self._client = client
        self._busy = f"promo:sync:{group}:busy:{stream}:{consumer}"
        self._hold = hold_key(group)
        self._generation = generation_key(group)
        self._busy_ms = busy_ms
        self._poll = poll_seconds
        self._seen: bytes | None = _UNSEEN

    async def enter(self) -> bool:
        held = False
        while True:
            await self._client.set(self._busy, b"1", px=self._busy_ms)
            hold, generation = await self._client.mget(self._hold, self._generation)
            if hold is None:
                break
            held = True
            await self._client.delete(self._busy)
            await asyncio.sleep(self._poll)
        current = None if generation is None else str(generation).encode()
        changed = held or self._seen not in (_UNSEEN, current)
        self._seen = current
        return changed

    async def leave(self) -> None:
        await self._client.delete(self._busy)


async def hold(client: aioredis.Redis, group: str, ttl_ms: int) -> None:
    await client.set(hold_key(group), b"1", px=ttl_ms)


async def wait_idle(client: aioredis.Redis, group: str, timeout_seconds: float) -> None:
    """Returns once no consumer of `group` is inside a batch (the hold must be set already)."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        busy = [key async for key in client.scan_iter(match=busy_pattern(group), count=100)]
        if not busy:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"consumers still inside a batch: {busy}")
        await asyncio.sleep(0.1)


async def release(client: aioredis.Redis, group: str, *, swapped: bool) -> None:
    if swapped:
        await client.incr(generation_key(group))
    await client.delete(hold_key(group))
