"""The rebuild hold and the consumers' gate against the local Redis, Redis failing included."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from devstack.stack import Stack
from sync_consumer.adapters.rebuild_gate import (
    HoldLost,
    RebuildHold,
    RedisRebuildGate,
    hold_key,
)


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis(
        host=stack.redis_host,
        port=stack.redis_port,
        password=stack.redis_password,
        socket_timeout=1,
        socket_connect_timeout=1,
    )
    yield redis
    await redis.aclose()


def group() -> str:
    return f"g-{uuid.uuid4().hex[:8]}"


async def test_a_held_group_fences_its_consumers_until_released(client: aioredis.Redis) -> None:
    g = group()
    gate = RedisRebuildGate(client, g, "s", "c1", poll_seconds=0.05)
    assert await gate.enter() is False  # not held: straight in
    await gate.leave()
    hold = RebuildHold(client, g, ttl_ms=5000)
    await hold.take()
    await hold.wait_idle(5)
    entering = asyncio.create_task(gate.enter())
    await asyncio.sleep(0.3)  # long enough for several polls: it must still be waiting
    assert not entering.done()
    await hold.confirm()
    await hold.release(swapped=True)
    assert await asyncio.wait_for(entering, 5) is True  # held, then swapped: drop positions
    assert await client.get(hold_key(g)) is None


async def test_a_second_rebuild_cannot_take_a_held_group(client: aioredis.Redis) -> None:
    g = group()
    first, second = RebuildHold(client, g, 5000), RebuildHold(client, g, 5000)
    await first.take()
    with pytest.raises(HoldLost, match="another rebuild"):
        await second.take()
    await second.release(swapped=False)  # its finally: must not release the first one's hold
    await first.confirm()
    await first.release(swapped=False)


async def test_the_rebuild_waits_for_a_batch_in_progress(client: aioredis.Redis) -> None:
    g = group()
    gate = RedisRebuildGate(client, g, "s", "c1")
    await gate.enter()  # a batch is running
    hold = RebuildHold(client, g, 5000)
    await hold.take()
    with pytest.raises(TimeoutError):
        await hold.wait_idle(0.3)
    await gate.leave()
    await hold.wait_idle(5)
    await hold.release(swapped=False)


async def test_redis_down_briefly_the_refresher_survives_and_the_hold_holds(
    stack: Stack, client: aioredis.Redis
) -> None:
    if not stack.is_managed("redis"):
        pytest.skip("Redis comes from the environment")
    g = group()
    hold = RebuildHold(client, g, ttl_ms=4000)
    await hold.take()
    await asyncio.to_thread(stack.kill_server, "redis")  # refreshes fail meanwhile
    await asyncio.sleep(1.5)  # the fault's length (< TTL), not a synchronisation
    await asyncio.to_thread(stack.start_server, "redis")
    deadline = time.monotonic() + 10
    while True:  # the refresher keeps trying; once Redis is back it refreshes again
        try:
            ttl = await client.pttl(hold_key(g))
        except aioredis.ConnectionError:
            ttl = -1
        if ttl > 3000:
            break
        assert time.monotonic() < deadline, "the refresher died with the failed refresh"
        await asyncio.sleep(0.05)
    await hold.confirm()
    await hold.release(swapped=False)


async def test_redis_down_longer_than_the_ttl_loses_the_hold_loudly(
    stack: Stack, client: aioredis.Redis
) -> None:
    if not stack.is_managed("redis"):
        pytest.skip("Redis comes from the environment")
    g = group()
    hold = RebuildHold(client, g, ttl_ms=1500)
    await hold.take()
    await asyncio.to_thread(stack.kill_server, "redis")
    await asyncio.sleep(2.0)  # the fault's length (> TTL)
    await asyncio.to_thread(stack.start_server, "redis")
    # Redis kept the key (append-only file), but its expiry ran on: either it is gone, or the
    # rebuild could not confirm it for a whole TTL. Either way the rebuild must not swap.
    with pytest.raises(HoldLost):
        await hold.confirm()
    gate = RedisRebuildGate(client, g, "s", "c1", poll_seconds=0.05)
    await asyncio.wait_for(gate.enter(), 10)  # the consumers go on
    await hold.release(swapped=False)


async def test_a_hold_deleted_under_the_rebuild_is_noticed(client: aioredis.Redis) -> None:
    g = group()
    hold = RebuildHold(client, g, ttl_ms=5000)
    await hold.take()
    await client.delete(hold_key(g))  # Redis lost it (failover, a cut append-only file)
    gate = RedisRebuildGate(client, g, "s", "c1")
    await gate.enter()  # a consumer got in meanwhile
    with pytest.raises(HoldLost, match="expired or was replaced"):
        await hold.confirm()
    # And a new hold by someone else is never released by the old rebuild.
    await gate.leave()
    other = RebuildHold(client, g, ttl_ms=5000)
    await other.take()
    await hold.release(swapped=False)
    await other.confirm()
    await other.release(swapped=False)
