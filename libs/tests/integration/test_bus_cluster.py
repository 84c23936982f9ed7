"""Publishing and the outbox relay on a local Redis Cluster (three masters)."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from redis.asyncio.cluster import RedisCluster

from devstack.servers import RedisCluster as LocalCluster
from promo.v1 import events_pb2
from promo_libs.bus import (
    NotDurable,
    RedisClient,
    RedisStreamPublisher,
    dedupe_key,
    redis_client,
)
from promo_libs.config import RedisSettings
from promo_libs.events import outbox_entry
from promo_libs.mongo.outbox_store import MongoOutboxStore
from promo_libs.outbox import OutboxEntry, outbox_fields
from promo_libs.relay import OutboxRelay

Client = AsyncMongoClient[dict[str, Any]]


@pytest.fixture
async def cluster(redis_cluster: LocalCluster) -> AsyncIterator[RedisClient]:
    settings = RedisSettings(
        redis_host=redis_cluster.host,
        redis_port=redis_cluster.port,
        redis_cluster=True,
        redis_password=None,  # the test's own cluster, no users
    )
    client = redis_client(settings, timeout_seconds=2.0)
    assert isinstance(client, RedisCluster)
    await client.initialize()  # the slot map, for get_node_from_key below
    yield client
    await client.aclose()


def event(stream: str, user_id: str, version: int = 1) -> OutboxEntry:
    return outbox_entry(
        stream=stream,
        payload_field="user_created",
        payload=events_pb2.UserCreated(user=events_pb2.UserSnapshot(id=user_id)),
        aggregate_type="user",
        aggregate_id=user_id,
        aggregate_version=version,
        producer="test",
        occurred_at=datetime.now(UTC),
    )


def streams_on_every_master(cluster: RedisCluster, count: int = 3) -> list[str]:
    """Stream names whose slots belong to `count` different masters."""
    by_node: dict[str, str] = {}
    while len(by_node) < count:
        name = f"test.cluster.{uuid.uuid4().hex[:8]}"
        node = cluster.get_node_from_key(name)
        by_node.setdefault(node.name, name)
    return list(by_node.values())


async def test_publishing_once_works_on_every_master_of_a_cluster(cluster: RedisClient) -> None:
    assert isinstance(cluster, RedisCluster)
    publisher = RedisStreamPublisher(cluster)
    for stream in streams_on_every_master(cluster):
        # The marker and the stream are the script's two keys: one slot, or CROSSSLOT.
        assert cluster.keyslot(dedupe_key(stream, "e")) == cluster.keyslot(stream)
        events = [
            OutboxEntry(f"{stream}-{n}", "promo.v1.UserCreated", stream, b"x") for n in range(3)
        ]
        await publisher.publish(events)
        await publisher.publish(events[1:])  # a relay that died before clearing: again
        stored = await cluster.xrange(stream)
        assert [fields[b"event_id"].decode() for _, fields in stored] == [
            e.event_id for e in events
        ]
        await cluster.delete(stream)


async def test_the_outbox_relay_publishes_to_a_cluster_and_clears_the_outbox(
    mongo_client: Client, mongo_db_name: str, cluster: RedisClient
) -> None:
    assert isinstance(cluster, RedisCluster)
    streams = streams_on_every_master(cluster)
    collection = mongo_client[mongo_db_name]["users"]
    published: dict[str, list[str]] = {}
    for n, stream in enumerate(streams):
        entries = [event(stream, f"u{n}", 2), event(stream, f"u{n}", 1)]
        published[stream] = [entries[1].event_id, entries[0].event_id]  # version order
        await collection.insert_one({"_id": f"u{n}", **outbox_fields(entries, nested=True)})
    relay = OutboxRelay(MongoOutboxStore(collection), RedisStreamPublisher(cluster))
    assert await relay.publish_pending() == len(streams)
    for stream, ids in published.items():
        stored = await cluster.xrange(stream)
        assert [fields[b"event_id"].decode() for _, fields in stored] == ids
        await cluster.delete(stream)
    for document in [d async for d in collection.find({})]:
        assert document["outbox"] == {} and not document["outbox_pending"]
    assert await relay.publish_pending() == 0


async def test_durability_on_a_cluster_asks_every_primary_not_the_default_node(
    cluster: RedisClient,
) -> None:
    # INFO, CONFIG GET and WAITAOF go to one default node on a cluster; one primary that fsyncs
    # only every second must make every publish unproven, whichever node is the default.
    assert isinstance(cluster, RedisCluster)
    publisher = RedisStreamPublisher(cluster)
    await publisher.durable()  # the local cluster runs appendfsync always on every master
    default = cluster.get_default_node()
    loose = next(node for node in cluster.get_primaries() if node.name != default.name)
    await cluster.config_set("appendfsync", "everysec", target_nodes=loose)
    try:
        publisher.reset_durability()
        with pytest.raises(NotDurable, match=loose.name):
            await publisher.durable()
    finally:
        await cluster.config_set("appendfsync", "always", target_nodes=loose)
    await publisher.durable()  # a failed probe is not cached: the fixed node is seen at once
