"""Replaying a service's current state as events, for a rebuild of the analytics (I6).

Each producing service has a `replay` command (`python -m <service> replay --stream NAME`) that
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
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.bus import EventPublisher, RedisStreamPublisher
from promo_libs.config import MongoServiceSettings
from promo_libs.entrypoint import Command, print_json
from promo_libs.kit import ServiceKit
from promo_libs.mongo.migrations import Migration
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


def replay_command(
    producer: str,
    migrations: Sequence[Migration],
    build_sources: Callable[[AsyncDatabase[Document]], Sequence[Source]],
) -> Command[MongoServiceSettings]:
    """`replay --stream NAME`: the service's current state, as events, on that stream; prints
    the count. Connects through the kit like the server, but builds only the database: a replay
    reads its own database and calls no other service (so it needs no certificates, and runs
    with sync-consumer's environment during a rebuild)."""

    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--stream", required=True, help="stream to publish the events to")

    async def run(settings: MongoServiceSettings, args: argparse.Namespace) -> int:
        async with ServiceKit(settings) as kit:
            db = (await kit.mongo(settings, migrations)).db
            # A short de-duplication window: replayed events get fresh ids, none is re-sent.
            publisher = RedisStreamPublisher(
                kit.redis(settings, timeout_seconds=10.0),
                dedupe_ttl_seconds=600,
                appendfsync_always=settings.redis_appendfsync_always,
            )
            count = await replay(db, build_sources(db), publisher, args.stream)
        print_json({"producer": producer, "stream": args.stream, "events": count})
        return 0

    return Command(
        "replay", f"publish the current state of {producer}'s database as events", run, arguments
    )
