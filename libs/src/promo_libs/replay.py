"""Replaying a service's current state as events, for a rebuild of the analytics (I6).

Each producing service has a `replay` command (`python -m <service>.replay --stream NAME`) that
reads only its own database and publishes, for every aggregate, one event carrying its current
snapshot, in the same envelope format as the live events and with `aggregate_version` = the
document's current version. sync_consumer.rebuild runs the three commands into dedicated
streams and maps the events into fresh tables with the live consumer's own row mapping.

A service supplies, per collection, a function from a stored document to its outbox entries
(its own repository's mapping and event codec); this module pages through the collection and
publishes the entries to the stream it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.bus import EventPublisher, RedisStreamPublisher, redis_client
from promo_libs.config import MongoSettings, RedisSettings
from promo_libs.mongo.connection import MongoConnection
from promo_libs.outbox import OutboxEntry

Document = dict[str, Any]
ToEntries = Callable[[Document], Awaitable[list[OutboxEntry]]]


@dataclass(frozen=True, slots=True)
class Source:
    """One collection of the service and how a document of it becomes events."""

    collection: str
    to_entries: ToEntries


async def replay(
    db: AsyncDatabase[Document],
    sources: Sequence[Source],
    publisher: EventPublisher,
    stream: str,
    page_size: int = 500,
) -> int:
    """Publishes the current state of every source to `stream`; returns the number of events."""
    published = 0
    for source in sources:
        after: Any = None
        while True:
            query: Document = {} if after is None else {"_id": {"$gt": after}}
            cursor = db[source.collection].find(query).sort("_id", 1).limit(page_size)
            documents = [document async for document in cursor]
            events = [
                dataclasses.replace(entry, stream=stream)
                for document in documents
                for entry in await source.to_entries(document)
            ]
            await publisher.publish(events)
            published += len(events)
            if len(documents) < page_size:
                break
            after = documents[-1]["_id"]
    return published


def main(
    producer: str,
    build_sources: Callable[[AsyncDatabase[Document]], Sequence[Source]],
    mongo: MongoSettings,
    bus: RedisSettings,
    argv: Sequence[str] | None = None,
) -> int:
    """The command line of a service's replay module; prints one JSON line with the count."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {producer}.replay",
        description=f"Publish the current state of {producer}'s database as events.",
    )
    parser.add_argument("--stream", required=True, help="stream to publish the events to")
    args = parser.parse_args(argv)

    async def run() -> int:
        connection = MongoConnection(mongo)
        await connection.connect()
        redis = redis_client(bus, timeout_seconds=10.0)
        try:
            await connection.wait_until_reachable()
            # A short de-duplication window: replayed events get fresh ids, none is re-sent.
            publisher = RedisStreamPublisher(redis, dedupe_ttl_seconds=600)
            return await replay(connection.db, build_sources(connection.db), publisher, args.stream)
        finally:
            await redis.aclose()
            await connection.disconnect()

    count = asyncio.run(run())
    print(json.dumps({"producer": producer, "stream": args.stream, "events": count}), flush=True)
    return 0
