"""The outbox relay against real MongoDB and Redis, and the query forms it relies on."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from pymongo import AsyncMongoClient, UpdateOne

from devstack.stack import Stack
from promo.v1 import events_pb2
from promo_libs.bus import EventPublisher, NotDurable, RedisStreamPublisher
from promo_libs.events import outbox_entry
from promo_libs.mongo.outbox_store import MongoOutboxStore
from promo_libs.outbox import OutboxEntry, outbox_fields
from promo_libs.relay import OutboxRelay

Client = AsyncMongoClient[dict[str, Any]]


@pytest.fixture
async def redis(stack: Stack) -> AsyncIterator[aioredis.Redis]:
    from promo_libs.bus import redis_client

    client = redis_client(
        stack.redis_settings(),
        timeout_seconds=0.5,
    )
    yield client
    await client.aclose()


def event(stream: str, user_id: str, version: int = 1) -> OutboxEntry:
    now = datetime.now(UTC)
    return outbox_entry(
        stream=stream,
        payload_field="user_created",
        payload=events_pb2.UserCreated(user=events_pb2.UserSnapshot(id=user_id)),
        aggregate_type="user",
        aggregate_id=user_id,
        aggregate_version=version,
        producer="test",
        occurred_at=now,
    )


async def stream_ids(redis: aioredis.Redis, stream: str) -> list[str]:
    return [fields[b"event_id"].decode() for _, fields in await redis.xrange(stream)]


# --- conformance: the query forms the relay relies on ---------------------------------------


async def test_pending_flag_query_and_empty_map_filter(
    mongo_client: Client, mongo_db_name: str
) -> None:
    collection = mongo_client[mongo_db_name]["c"]
    await collection.insert_many(
        [
            {"_id": "a", "outbox": {"e1": {"n": 1}}, "outbox_pending": True},
            {"_id": "b", "outbox": {}, "outbox_pending": False},
            {"_id": "c", "outbox": {}, "outbox_pending": False},
            {"_id": "d", "name": "no outbox at all"},
        ]
    )
    await collection.update_one(
        {"_id": "c"}, {"$set": {"outbox.e2": {"n": 2}, "outbox_pending": True}}
    )
    assert [d["_id"] async for d in collection.find({"outbox_pending": True}).sort("_id", 1)] == [
        "a",
        "c",
    ]
    page = collection.find({"outbox_pending": True, "_id": {"$gt": "a"}}).sort("_id", 1)
    assert [d["_id"] async for d in page] == ["c"]
    # $unset of a map entry leaves an empty map; of an absent one changes nothing.
    await collection.update_one({"_id": "a"}, {"$unset": {"outbox.e1": "", "outbox.nope": ""}})
    assert (await collection.find_one({"_id": "a"}))["outbox"] == {}  # type: ignore[index]
    # The relay's flag protocol: a token string replaces the flag, a write sets it back to true,
    # and the loop finds anything not false (true, a dead relay's token, or no flag at all).
    await collection.update_one({"_id": "a"}, {"$set": {"outbox_pending": "token-a"}})
    await collection.update_one({"_id": "c"}, {"$set": {"outbox_pending": "token-c"}})
    await collection.update_one(
        {"_id": "c"}, {"$set": {"outbox.e3": {"n": 3}, "outbox_pending": True}}
    )
    missed = await collection.update_one(
        {"_id": "c", "outbox_pending": "token-c"}, {"$set": {"outbox_pending": False}}
    )
    assert missed.matched_count == 0
    pending = collection.find({"outbox_pending": {"$ne": False}}).sort("_id", 1)
    assert [d["_id"] async for d in pending] == ["a", "c", "d"]
    hit = await collection.update_one(
        {"_id": "a", "outbox_pending": "token-a"}, {"$set": {"outbox_pending": False}}
    )
    assert hit.modified_count == 1
    pending = collection.find({"outbox_pending": {"$ne": False}}).sort("_id", 1)
    assert [d["_id"] async for d in pending] == ["c", "d"]
    assert [d["_id"] async for d in collection.find({"outbox_pending": True})] == ["c"]


async def test_binary_envelopes_and_the_batched_clearing_forms(
    mongo_client: Client, mongo_db_name: str
) -> None:
    """Bytes stored by insert and by `$set` come back as bytes; the store's page clearing is a
    bulk of per-document updates, a `$in` read and a token-conditional `update_many`."""
    collection = mongo_client[mongo_db_name]["binary"]
    await collection.insert_one({"_id": "a", "outbox": {"e1": {"envelope": b"\x00\x01"}}})
    await collection.insert_one({"_id": "b", "outbox": {}})
    await collection.update_one({"_id": "b"}, {"$set": {"outbox.e2": {"envelope": b"\xff\x00"}}})
    stored = {d["_id"]: d async for d in collection.find({})}
    assert stored["a"]["outbox"]["e1"]["envelope"] == b"\x00\x01"
    assert stored["b"]["outbox"]["e2"]["envelope"] == b"\xff\x00"
    result = await collection.bulk_write(
        [
            UpdateOne({"_id": "a"}, {"$unset": {"outbox.e1": ""}, "$set": {"outbox_pending": "t"}}),
            UpdateOne({"_id": "b"}, {"$set": {"outbox_pending": "t"}}),
        ],
        ordered=False,
    )
    assert result.matched_count == 2
    left = [d async for d in collection.find({"_id": {"$in": ["a", "b"]}}, {"outbox": 1})]
    assert sorted((d["_id"], bool(d["outbox"])) for d in left) == [("a", False), ("b", True)]
    await collection.update_one({"_id": "a"}, {"$set": {"outbox_pending": True}})  # a write
    cleared = await collection.update_many(
        {"_id": {"$in": ["a", "b"]}, "outbox_pending": "t"}, {"$set": {"outbox_pending": False}}
    )
    assert cleared.modified_count == 1  # only b: a was written to after the token
    flags = {d["_id"]: d["outbox_pending"] async for d in collection.find({})}
    assert bool(flags["a"]) and not flags["b"]


# --- the relay ----------------------------------------------------------------------------


async def test_publishes_in_version_order_once_and_clears_the_outbox(
    mongo_client: Client, mongo_db_name: str, redis: aioredis.Redis
) -> None:
    stream = f"test.{uuid.uuid4().hex}"
    collection = mongo_client[mongo_db_name]["users"]
    v2, v1 = event(stream, "u1", 2), event(stream, "u1", 1)
    await collection.insert_one({"_id": "u1", **outbox_fields([v2, v1], nested=True)})
    await collection.insert_one({"_id": "u2", **outbox_fields([event(stream, "u2")], nested=True)})
    relay = OutboxRelay(MongoOutboxStore(collection), RedisStreamPublisher(redis))
    assert await relay.publish_pending() == 2
    ids = await stream_ids(redis, stream)
    # Version order within an aggregate; documents are published side by side, so u2's event
    # may come anywhere relative to u1's.
    assert [i for i in ids if i in (v1.event_id, v2.event_id)] == [v1.event_id, v2.event_id]
    assert len(ids) == 3
    for document in [d async for d in collection.find({})]:
        assert document["outbox"] == {} and not document["outbox_pending"]
    # Published again (a relay that died before clearing): the stream still holds each once.
    await RedisStreamPublisher(redis).publish(
        [OutboxEntry(v1.event_id, v1.event_type, stream, v1.envelope)]
    )
    assert len(await stream_ids(redis, stream)) == 3
    assert await relay.publish_pending() == 0


async def test_entry_added_during_a_pass_is_not_stranded(
    mongo_client: Client, mongo_db_name: str, redis: aioredis.Redis
) -> None:
    stream = f"test.{uuid.uuid4().hex}"
    collection = mongo_client[mongo_db_name]["users"]
    late = event(stream, "u1", 2)

    class WriteDuringPublish(EventPublisher):
        """A concurrent write lands between the relay's read and its clearing of the flag."""

        def __init__(self) -> None:
            self.inner = RedisStreamPublisher(redis)
            self.wrote = False

        async def durable(self) -> None:
            await self.inner.durable()

        async def publish(self, events: Sequence[OutboxEntry]) -> None:
            await self.inner.publish(events)
            if not self.wrote:
                self.wrote = True
                await collection.update_one(
                    {"_id": "u1"}, {"$set": outbox_fields([late], nested=False)}
                )

    await collection.insert_one({"_id": "u1", **outbox_fields([event(stream, "u1")], nested=True)})
    relay = OutboxRelay(MongoOutboxStore(collection), WriteDuringPublish())
    await relay.publish_pending()
    document = await collection.find_one({"_id": "u1"})
    assert (
        document is not None
        and bool(document["outbox_pending"])
        and late.event_id in document["outbox"]
    )
    await relay.publish_pending()
    assert len(await stream_ids(redis, stream)) == 2
    assert [d async for d in collection.find({"outbox_pending": {"$ne": False}})] == []


async def test_redis_down_keeps_entries_and_the_loop_publishes_them_after(
    stack: Stack, mongo_client: Client, mongo_db_name: str, redis: aioredis.Redis
) -> None:
    if not stack.is_managed("redis"):
        pytest.skip("Redis comes from the environment")
    stream = f"test.{uuid.uuid4().hex}"
    collection = mongo_client[mongo_db_name]["users"]
    relay = OutboxRelay(
        MongoOutboxStore(collection),
        RedisStreamPublisher(redis),
        idle_seconds=0.05,
        max_backoff_seconds=0.5,
    )
    written: list[str] = []
    await asyncio.to_thread(stack.stop_server, "redis")
    task = asyncio.create_task(relay.run())
    try:
        for n in range(20):
            entry = event(stream, f"u{n}")
            written.append(entry.event_id)
            await collection.insert_one({"_id": f"u{n}", **outbox_fields([entry], nested=True)})
            relay.notify()
        assert await collection.count_documents({"outbox_pending": {"$ne": False}}) == 20
        # The backlog is on the metrics endpoint for operators (and their alert).
        await until(lambda: backlog("users") == 20, "backlog gauge at 20")
        await asyncio.to_thread(stack.start_server, "redis")
        deadline = asyncio.get_running_loop().time() + 20
        while await collection.count_documents({"outbox_pending": {"$ne": False}}):
            assert asyncio.get_running_loop().time() < deadline, "outbox not drained"
            await asyncio.sleep(0.05)
        await until(lambda: backlog("users") == 0, "backlog gauge back at 0")
    finally:
        task.cancel()
    assert sorted(await stream_ids(redis, stream)) == sorted(written)


def backlog(collection: str) -> float | None:
    return REGISTRY.get_sample_value("outbox_pending_documents", {"collection": collection})


async def until(condition: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"no {what} within {seconds}s"
        await asyncio.sleep(0.05)


# --- durability (I3): an entry is cleared only once its event is known durable ---------------


async def test_an_entry_stays_while_redis_cannot_promise_durability(
    mongo_client: Client, mongo_db_name: str, redis: aioredis.Redis
) -> None:
    """On Redis 7.0 with `appendfsync everysec`, an acknowledged XADD may still be lost with
    its host: the relay publishes (consumers get the event) but keeps the entry, and clears it
    once the server fsyncs every write (the next pass republishes, de-duplicated)."""
    stream = f"test.{uuid.uuid4().hex}"
    collection = mongo_client[mongo_db_name]["durable"]
    entry = event(stream, "d1")
    await collection.insert_one({"_id": "d1", **outbox_fields([entry], nested=True)})
    publisher = RedisStreamPublisher(redis)
    relay = OutboxRelay(MongoOutboxStore(collection), publisher)
    info = await redis.info("server")
    assert tuple(int(p) for p in info["redis_version"].split(".")[:2]) < (7, 2)  # no WAITAOF
    await redis.config_set("appendfsync", "everysec")
    try:
        with pytest.raises(NotDurable, match="appendfsync=everysec"):
            await relay.publish_pending()
        stored = await collection.find_one({"_id": "d1"})
        assert stored is not None and entry.event_id in stored["outbox"]
        assert stored["outbox_pending"]  # still flagged (True or a pass token)
        assert await stream_ids(redis, stream) == [entry.event_id]  # published, not cleared
    finally:
        await redis.config_set("appendfsync", "always")
    assert await relay.publish_pending() == 1
    stored = await collection.find_one({"_id": "d1"})
    assert stored is not None and stored["outbox"] == {} and not stored["outbox_pending"]
    assert await stream_ids(redis, stream) == [entry.event_id]  # once, whatever the passes
