"""The dead-letter script against the local Redis: one letter per entry, whoever sends it."""

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from devstack.stack import Stack
from sync_consumer.adapters.redis_streams import RedisDeadLetters, dead_letter_stream
from sync_consumer.domain.model import DeadLetter, StreamEntry


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    redis = aioredis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    yield redis
    await redis.aclose()


async def test_an_entry_handled_twice_after_a_claim_is_dead_lettered_once(
    client: aioredis.Redis,
) -> None:
    # The claim loop hands a slow batch's entry to a second handle; both isolate it and both
    # send its letter. The second finds it acknowledged and adds nothing.
    stream, group = f"dl.{uuid.uuid4().hex[:8]}", "g"
    await client.xgroup_create(stream, group, id="0", mkstream=True)
    entry_id = (await client.xadd(stream, {b"envelope": b"\x00"})).decode()
    await client.xreadgroup(group, "c1", {stream: ">"})
    entry = StreamEntry(stream, entry_id, {b"envelope": b"\x00"}, 1)
    letters = RedisDeadLetters(client, group)
    await letters.send([DeadLetter(entry, "rejected 3 times: Code: 16")])
    claimed = await client.xautoclaim(stream, group, "c1", min_idle_time=0, start_id="0")
    assert claimed[1] == []  # acknowledged with its letter: nothing left to claim
    await letters.send([DeadLetter(entry, "rejected 3 times: Code: 16")])
    stored = await client.xrange(dead_letter_stream(stream))
    assert [fields[b"source_id"].decode() for _, fields in stored] == [entry_id]
    assert (await client.xpending(stream, group))["pending"] == 0
