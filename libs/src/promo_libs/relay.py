"""The outbox relay: publishes the events stored in documents (promo_libs.outbox) to the bus.

A service calls `notify()` (or awaits `publish_now(id)`) right after a write; `run()` is a
background loop that publishes whatever is still pending (left by a crash, or by Redis being
down) and clears what it published. Nothing committed is ever without its event (I3): an entry
leaves the document only after the bus accepted it, and the flag is cleared only when the map
was seen empty after the flag was set to this pass's token, by an update conditional on that
token: a concurrent write sets the flag back to true, so its entry stays flagged. (A filter
`outbox: {}` would say it directly, but the local MongoDB stand-in matches every document.)
Publishing twice is harmless: the publisher is idempotent by event_id.

"The bus accepted" means durable, not merely acknowledged: after publishing, the relay waits for
`EventPublisher.durable()` (WAITAOF, or a Redis that fsyncs every write) before it clears any
entry, once per page of documents rather than per document. An event acknowledged by Redis but
lost with its host's page cache is therefore still in its document, and published again.

Entries of one document are published in aggregate version order, so a stream holds one
aggregate's events in the order they happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from prometheus_client import Counter, Gauge
from pymongo.asynchronous.collection import AsyncCollection

from promo.v1 import events_pb2
from promo_libs.bus import BusEvent, EventPublisher
from promo_libs.logging import get_logger
from promo_libs.outbox import decode_envelope

log = get_logger(__name__)

Document = dict[str, Any]

OUTBOX_PUBLISHED = Counter(
    "outbox_events_published_total", "Outbox entries published to the bus", ["collection"]
)
OUTBOX_FAILURES = Counter(
    "outbox_relay_failures_total", "Relay passes that failed (bus or MongoDB down)", ["collection"]
)
OUTBOX_BACKLOG = Gauge(
    "outbox_pending_documents",
    "Documents whose events were still unpublished after the relay's last pass",
    ["collection"],
)


def _order(event_id: str, stored: Document) -> tuple[int, int, str]:
    version = 0
    with contextlib.suppress(Exception):  # an undecodable envelope is still published, as is
        envelope = events_pb2.EventEnvelope.FromString(decode_envelope(stored))
        version = envelope.aggregate_version
    return version, int(stored.get("occurred_at", 0)), event_id


def pending_events(document: Document) -> list[BusEvent]:
    """The document's outbox entries as bus events, in the order they must be published."""
    outbox: dict[str, Document] = document.get("outbox") or {}
    ordered = sorted(outbox.items(), key=lambda item: _order(*item))
    return [
        BusEvent(
            event_id=event_id,
            event_type=str(stored["type"]),
            stream=str(stored["stream"]),
            envelope=decode_envelope(stored),
        )
        for event_id, stored in ordered
    ]


class OutboxRelay:
    def __init__(
        self,
        collection: AsyncCollection[Document],
        publisher: EventPublisher,
        *,
        page_size: int = 200,
        idle_seconds: float = 0.5,
        min_backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self._collection = collection
        self._publisher = publisher
        self._page_size = page_size
        self._idle = idle_seconds
        self._min_backoff = min_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """A write left events in the outbox: run a pass now instead of after the idle wait."""
        self._wake.set()

    async def publish_now(self, document_id: Any) -> bool:
        """Best effort, right after a write: False (and the loop's retry) when it fails."""
        try:
            document = await self._collection.find_one({"_id": document_id})
            if document is not None and document.get("outbox"):
                events = await self._send(document)
                await self._publisher.durable()
                await self._clear(document_id, events)
            return True
        except Exception as exc:
            log.warning("publishing right after the write failed", error=str(exc))
            self.notify()
            return False

    async def publish_pending(self) -> int:
        """One pass over every document with outbox_pending; returns how many it cleared."""
        cleared = found = 0
        after: Any = None
        while True:
            # Not only `true`: a relay that died mid-pass leaves its token (a string) there.
            query: Document = {"outbox_pending": {"$ne": False}}
            if after is not None:
                query["_id"] = {"$gt": after}
            cursor = self._collection.find(query).sort("_id", 1).limit(self._page_size)
            documents = [document async for document in cursor]
            found += len(documents)
            sent = [(document["_id"], await self._send(document)) for document in documents]
            if sent:
                await self._publisher.durable()  # once for the page: WAITAOF may take a second
            for document_id, events in sent:
                cleared += await self._clear(document_id, events)
            if len(documents) < self._page_size:
                # Left flagged: written to during the pass; the next pass takes them.
                OUTBOX_BACKLOG.labels(self._collection.name).set(found - cleared)
                return cleared
            after = documents[-1]["_id"]

    async def _send(self, document: Document) -> list[BusEvent]:
        events = pending_events(document)
        if events:
            await self._publisher.publish(events)
            OUTBOX_PUBLISHED.labels(self._collection.name).inc(len(events))
        return events

    async def _clear(self, document_id: Any, events: list[BusEvent]) -> int:
        """Removes the published (and durable) entries; 1 when the document has none left."""
        # The flag becomes this pass's token: a write from now on sets it back to true, which
        # makes the conditional updates below miss, so its entry stays flagged.
        token = uuid.uuid4().hex
        await self._collection.update_one(
            {"_id": document_id},
            {
                "$unset": {f"outbox.{event.event_id}": "" for event in events},
                "$set": {"outbox_pending": token},
            },
        )
        after = await self._collection.find_one({"_id": document_id}, {"outbox": 1})
        remaining = bool(after and after.get("outbox"))
        result = await self._collection.update_one(
            {"_id": document_id, "outbox_pending": token}, {"$set": {"outbox_pending": remaining}}
        )
        return 0 if remaining else result.modified_count

    async def _count_backlog(self) -> None:
        """After a failed pass: how much waits (nothing to report when MongoDB is the problem)."""
        with contextlib.suppress(Exception):
            waiting = await self._collection.count_documents({"outbox_pending": {"$ne": False}})
            OUTBOX_BACKLOG.labels(self._collection.name).set(waiting)

    async def run(self) -> None:
        backoff = self._min_backoff
        while True:
            self._wake.clear()
            try:
                await self.publish_pending()
            except Exception as exc:
                OUTBOX_FAILURES.labels(self._collection.name).inc()
                log.warning("outbox relay pass failed", error=str(exc), retry_in=backoff)
                await self._count_backlog()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = self._min_backoff
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle)
