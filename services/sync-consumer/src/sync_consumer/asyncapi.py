"""`python -m sync_consumer.asyncapi [--check]`: the AsyncAPI description of the event streams.

FastStream describes a RedisBroker's subscribers and publishers; this module declares on a
broker that never connects what the platform's streams are: per producing service one stream,
written by its outbox relay and read by sync-consumer's group, and its dead-letter stream.
The document is kept in the repository (services/sync-consumer/asyncapi.yaml); `--check` exits
1 when the file is not what this module generates (a unit test does the same).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml  # type: ignore[import-untyped]
from faststream.redis import RedisBroker, StreamSub
from faststream.specification import AsyncAPI
from pydantic import BaseModel, Field

from promo_libs.events import ORDERS_STREAM, PROMO_CODES_STREAM, USERS_STREAM
from sync_consumer.adapters.redis_streams import dead_letter_stream

DOCUMENT = Path(__file__).resolve().parents[2] / "asyncapi.yaml"
VERSION = "1.0.0"
PRODUCERS = {
    USERS_STREAM: ("users", "UserCreated, UserUpdated, UserDeactivated"),
    PROMO_CODES_STREAM: (
        "promocodes",
        "PromoCodeCreated, PromoCodeUpdated, PromoCodeDeactivated, PromoCodeRedeemed, "
        "PromoCodeReleased, CampaignCreated, CampaignUpdated",
    ),
    ORDERS_STREAM: ("orders", "OrderCreated, OrderConfirmed, OrderRejected, OrderCancelled"),
}


class EventEntry(BaseModel):
    """The fields of one stream entry (promo_libs.bus)."""

    event_id: str = Field(description="Unique id of the event; consumers de-duplicate on it")
    type: str = Field(description="Full name of the payload message, e.g. promo.v1.OrderCreated")
    envelope: bytes = Field(
        description="The serialized promo.v1.EventEnvelope (protos/promo/v1/events.proto): "
        "aggregate id and version, occurred_at, producer and the denormalized snapshot"
    )


class DeadLetterEntry(BaseModel):
    """An entry that could not be stored, with where it came from and why."""

    reason: str = Field(
        description="Why it was dead-lettered: malformed, its mapping failed, or ClickHouse "
        "refused its rows MAX_FAILURES times"
    )
    source_stream: str
    source_id: str = Field(description="The entry id in the source stream")
    deliveries: int
    dead_at_ms: int
    original_event_id: bytes = Field(alias="original.event_id")
    original_type: bytes = Field(alias="original.type")
    original_envelope: bytes = Field(alias="original.envelope")


def broker(group: str = "sync-consumer") -> RedisBroker:
    """A broker declaring every stream; it is never started."""
    described = RedisBroker("redis://localhost:6379", description="Redis Streams, append-only")
    for stream, (producer, events) in PRODUCERS.items():
        described.publisher(
            stream=stream,
            schema=EventEntry,
            title=f"{stream}:publish",
            description=f"Written by the {producer} service's outbox relay (XADD, once per "
            f"event_id): {events}.",
        )
        subscriber = described.subscriber(
            stream=StreamSub(stream, group=group, consumer="<hostname>", batch=True),
            title=f"{stream}:consume",
            description=f"Read by sync-consumer (group {group}, one ordered consumer) in batches "
            "into ClickHouse; acknowledged once stored.",
        )

        async def handle(entries: list[EventEntry]) -> None:
            return None

        subscriber(handle)
        described.publisher(
            stream=dead_letter_stream(stream),
            schema=DeadLetterEntry,
            title=f"{dead_letter_stream(stream)}:publish",
            description="Entries sync-consumer could not store, added before they are "
            "acknowledged.",
        )
    return described


def document() -> str:
    spec = AsyncAPI(
        broker(),
        title="Promo platform events",
        version=VERSION,
        description="Domain events from MongoDB outboxes to the analytics (DESIGN.md, Event bus).",
        schema_version="2.6.0",
    )
    # FastStream's order of channels varies between processes: sort every mapping.
    return str(yaml.safe_dump(spec.to_specification().to_jsonable(), sort_keys=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sync_consumer.asyncapi", description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    parser.add_argument("--output", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = document()
    if args.check:
        if not args.output.exists() or args.output.read_text() != text:
            print(f"{args.output} is stale: run python -m sync_consumer.asyncapi", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
