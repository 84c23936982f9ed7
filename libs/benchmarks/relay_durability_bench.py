"""What the outbox relay's durability costs: relay throughput and publish latency, per mode.

    .venv/bin/python libs/benchmarks/relay_durability_bench.py --documents 2000 --concurrency 16

Starts the local stack (MongoDB stand-in, Redis 7.0), then for each Redis mode writes
`--documents` documents with one outbox entry each and measures one
OutboxRelay.publish_pending over all of them (XADD per event, one durable() per page, then the
page's clearing writes) -- the relay's throughput after an outage.
Modes: `appendfsync everysec` with the old behaviour (clear on acknowledgement: the floor, what
durability is compared against), and `appendfsync always` with the durable relay. WAITAOF needs
Redis 7.2, so its cost cannot be measured here. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from devstack.stack import Stack
from promo.v1 import events_pb2
from promo_libs.bus import RedisStreamPublisher, redis_client
from promo_libs.events import outbox_entry
from promo_libs.mongo.outbox_store import MongoOutboxStore
from promo_libs.outbox import outbox_fields
from promo_libs.relay import OutboxRelay


class AcknowledgedIsEnough(RedisStreamPublisher):
    """The relay before issue 12: an acknowledgement was taken as durability (the floor)."""

    async def durable(self) -> None:
        return None


def _document(n: int, stream: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    entry = outbox_entry(
        stream=stream,
        payload_field="user_created",
        payload=events_pb2.UserCreated(user=events_pb2.UserSnapshot(id=f"u{n}")),
        aggregate_type="user",
        aggregate_id=f"u{n}",
        aggregate_version=1,
        producer="bench",
        occurred_at=datetime.now(UTC),
    )
    return {"_id": f"d{n:07d}", **outbox_fields([entry], nested=True)}


async def run_mode(stack: Stack, mode: str, durable: bool, args: argparse.Namespace) -> None:
    settings = stack.redis_settings()
    client = redis_client(settings)
    await client.config_set("appendfsync", mode)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(stack.mongo_uri)
    collection = mongo["bench_relay"][f"c{uuid.uuid4().hex[:8]}"]
    stream = f"bench.{uuid.uuid4().hex[:8]}"
    publisher = RedisStreamPublisher(client) if durable else AcknowledgedIsEnough(client)
    relay = OutboxRelay(MongoOutboxStore(collection), publisher)
    try:
        await collection.insert_many([_document(n, stream) for n in range(args.documents)])
        started = time.perf_counter()
        cleared = await relay.publish_pending()
        seconds = time.perf_counter() - started
        assert cleared == args.documents, cleared

        label = f"{mode}{' + durable relay' if durable else ' (clear on ack, floor)'}"
        print(f"| {label} | {args.documents / seconds:,.0f} /s |")
    finally:
        await mongo.drop_database("bench_relay")
        await mongo.aclose()
        await client.config_set("appendfsync", "always")
        await client.aclose()


async def main_async(args: argparse.Namespace) -> None:
    stack = Stack.from_environ(Path(tempfile.mkdtemp(prefix="relay-bench-")))
    stack.start()
    try:
        print("| mode | relay pass |")
        print("|---|---:|")
        for _ in range(args.rounds):
            await run_mode(stack, "everysec", False, args)
            await run_mode(stack, "always", True, args)
    finally:
        stack.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(main_async(parser.parse_args()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
