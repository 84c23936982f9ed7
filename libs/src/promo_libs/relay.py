"""The outbox relay: publishes the events stored in documents (promo_libs.outbox) to the bus.

A service calls `notify()` right after a write; `run()` is a background loop that publishes
whatever is pending (just written, left by a crash, or by Redis being down) and clears what it
published. The relay knows its documents only through the `OutboxStore` port
(`promo_libs.mongo.outbox_store` is the MongoDB adapter), so it is tested on in-memory fakes
too. Nothing committed is ever without its event (I3): an entry leaves the document only after
the bus accepted it, and the flag is cleared only when the map was seen empty after the flag
was set to this pass's token, by an update conditional on that token: a concurrent write sets
the flag back to true, so its entry stays flagged. The store does that for a whole page at once
(`OutboxStore.clear`), in a fixed number of round trips. (A filter `outbox: {}` would say it
directly, but the local MongoDB stand-in matches every document.)
Publishing twice is harmless: the publisher is idempotent by event_id.

"The bus accepted" means durable, not merely acknowledged: after publishing, the relay waits for
`EventPublisher.durable()` (WAITAOF, or a Redis that fsyncs every write) before it clears any
entry, once per page of documents rather than per document. An event acknowledged by Redis but
lost with its host's page cache is therefore still in its document, and published again.

Entries of one document are published in aggregate version order, so a stream holds one
aggregate's events in the order they happened: the version is a plain field of each stored
entry (promo_libs.outbox), no envelope is parsed to find it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter, Gauge

from promo_libs.bus import EventPublisher
from promo_libs.logging import get_logger
from promo_libs.outbox import OutboxEntry

log = get_logger(__name__)

_T = TypeVar("_T")
_R = TypeVar("_R")

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


@dataclass(frozen=True, slots=True)
class PendingDocument:
    """A flagged document's id and the outbox entries it held when it was read."""

    document_id: Any
    entries: Sequence[OutboxEntry]


class OutboxStore(Protocol):
    """Where the documents with outbox entries live (one collection)."""

    @property
    def name(self) -> str:
        """The collection's name, for the metrics."""

    async def pending(self, after: Any, limit: int) -> list[PendingDocument]:
        """Up to `limit` flagged documents (flag not false: true, or a dead pass's token) with
        ids above `after` (all when None), in id order."""

    async def clear(self, published: Sequence[PendingDocument]) -> int:
        """Removes the given (published and durable) entries of each document and drops the
        flag of those left with none, unless a write came meanwhile (the token protocol of the
        module doc); returns how many documents it unflagged."""

    async def count_pending(self) -> int:
        """How many documents are flagged."""


class OutboxRelay:
    def __init__(
        self,
        store: OutboxStore,
        publisher: EventPublisher,
        *,
        page_size: int = 200,
        concurrency: int = 16,
        idle_seconds: float = 0.5,
        pass_interval_seconds: float = 0.1,
        min_backoff_seconds: float = 0.2,
        max_backoff_seconds: float = 10.0,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._page_size = page_size
        self._concurrency = concurrency
        self._idle = idle_seconds
        self._interval = pass_interval_seconds
        self._min_backoff = min_backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """A write left events in the outbox: run a pass now instead of after the idle wait."""
        self._wake.set()

    async def publish_pending(self) -> int:
        """One pass over every flagged document; returns how many it cleared."""
        cleared = found = 0
        after: Any = None
        while True:
            documents = await self._store.pending(after, self._page_size)
            found += len(documents)
            cleared += await self._publish_documents(documents)
            if len(documents) < self._page_size:
                # Left flagged: written to during the pass; the next pass takes them.
                OUTBOX_BACKLOG.labels(self._store.name).set(found - cleared)
                return cleared
            after = documents[-1].document_id

    async def _publish_documents(self, documents: list[PendingDocument]) -> int:
        """A page's documents side by side, `concurrency` at a time: one after the other a
        relay fell behind at 40 orders/s (commit -> XADD p50 10 s). Order only matters within
        a document (one aggregate), and `_send` keeps it; documents of one pass are distinct.

        Two phases with one durability wait between them (I3): every document is published,
        then `durable()` is awaited once for the page (WAITAOF may take a second), and only
        then is the page cleared, in one batch. A publish that failed fails the pass before
        anything is cleared; every publish of the page finishes before the pass fails with the
        first error (the loop retries, the publisher de-duplicates)."""
        if not documents:
            return 0
        await self._each(documents, self._send)
        await self._publisher.durable()
        return await self._store.clear(documents)

    async def _each(self, items: Sequence[_T], work: Callable[[_T], Awaitable[_R]]) -> list[_R]:
        """`work` on every item, `concurrency` at a time, results in the items' order."""
        limit = asyncio.Semaphore(self._concurrency)

        async def one(item: _T) -> _R:
            async with limit:
                return await work(item)

        results = await asyncio.gather(*(one(item) for item in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if not isinstance(r, BaseException)]

    async def _send(self, document: PendingDocument) -> None:
        entries = sorted(document.entries, key=lambda entry: entry.publish_order)
        if entries:
            await self._publisher.publish(entries)
            OUTBOX_PUBLISHED.labels(self._store.name).inc(len(entries))

    async def _count_backlog(self) -> None:
        """After a failed pass: how much waits (nothing to report when MongoDB is the problem)."""
        with contextlib.suppress(Exception):
            OUTBOX_BACKLOG.labels(self._store.name).set(await self._store.count_pending())

    async def run(self) -> None:
        """Passes until cancelled: woken by `notify()` (or after `idle_seconds`), but at most one
        pass per `pass_interval_seconds`. A pass costs the same few round trips for one document
        as for a page, and every write wakes the relay: without the interval, writes coming
        one after the other each got a pass of their own (4 round trips per event instead of
        4 per page). The interval is the most an event waits for its pass on top of that."""
        loop = asyncio.get_running_loop()
        backoff = self._min_backoff
        while True:
            self._wake.clear()
            started = loop.time()
            try:
                await self.publish_pending()
            except Exception as exc:
                OUTBOX_FAILURES.labels(self._store.name).inc()
                log.warning("outbox relay pass failed", error=str(exc), retry_in=backoff)
                await self._count_backlog()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            backoff = self._min_backoff
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle)
            # Pacing, not synchronisation: the writes of the interval share the next pass.
            await asyncio.sleep(max(0.0, started + self._interval - loop.time()))
