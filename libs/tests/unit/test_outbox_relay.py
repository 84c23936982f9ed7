"""The outbox relay on its ports alone: the in-memory publisher and an in-memory outbox store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from promo_libs.bus import NotDurable
from promo_libs.outbox import OutboxEntry
from promo_libs.relay import OutboxRelay, PendingDocument
from promo_libs_testing.memory import InMemoryPublisher


@dataclass
class StoredDocument:
    outbox: dict[str, OutboxEntry] = field(default_factory=dict)
    flag: bool | str = False  # outbox_pending: True, False, or a pass's token


@dataclass
class InMemoryOutboxStore:
    """A fake OutboxStore with the MongoDB adapter's flag protocol (token, then conditional)."""

    documents: dict[str, StoredDocument] = field(default_factory=dict)
    name: str = "fake"

    def write(self, document_id: str, *entries: OutboxEntry) -> None:
        """A service's write: entries added and the flag set, in one step."""
        document = self.documents.setdefault(document_id, StoredDocument())
        document.outbox.update({e.event_id: e for e in entries})
        document.flag = True

    async def pending(self, after: Any, limit: int) -> list[PendingDocument]:
        ids = sorted(
            i
            for i, d in self.documents.items()
            if d.flag is not False and (after is None or i > after)
        )
        return [PendingDocument(i, list(self.documents[i].outbox.values())) for i in ids[:limit]]

    async def clear(self, published: Sequence[PendingDocument]) -> int:
        token = uuid.uuid4().hex
        for p in published:
            document = self.documents[p.document_id]
            for entry in p.entries:
                document.outbox.pop(entry.event_id, None)
            document.flag = token
        cleared = 0
        for p in published:
            document = self.documents[p.document_id]
            if document.flag == token:
                document.flag = bool(document.outbox)
                cleared += not document.outbox
        return cleared

    async def count_pending(self) -> int:
        return sum(d.flag is not False for d in self.documents.values())


def entry(stream: str, version: int) -> OutboxEntry:
    return OutboxEntry(
        uuid.uuid4().hex, "promo.v1.UserCreated", stream, b"env", aggregate_version=version
    )


async def test_publishes_each_document_in_version_order_and_clears_it() -> None:
    store, bus = InMemoryOutboxStore(), InMemoryPublisher()
    v3, v1, v2 = entry("s", 3), entry("s", 1), entry("s", 2)
    store.write("a", v3, v1, v2)
    store.write("b", entry("t", 1))
    relay = OutboxRelay(store, bus)
    assert await relay.publish_pending() == 2
    assert [e.event_id for e in bus.streams["s"]] == [v1.event_id, v2.event_id, v3.event_id]
    assert len(bus.streams["t"]) == 1
    assert all(d.flag is False and not d.outbox for d in store.documents.values())
    assert await relay.publish_pending() == 0


async def test_pages_through_every_flagged_document() -> None:
    store, bus = InMemoryOutboxStore(), InMemoryPublisher()
    for n in range(7):
        store.write(f"d{n}", entry("s", 1))
    assert await OutboxRelay(store, bus, page_size=2).publish_pending() == 7
    assert len(bus.streams["s"]) == 7 and await store.count_pending() == 0


async def test_an_entry_written_during_the_pass_stays_flagged_for_the_next() -> None:
    store = InMemoryOutboxStore()
    late = entry("s", 2)

    class WriteDuringPublish(InMemoryPublisher):
        async def publish(self, events: Sequence[OutboxEntry]) -> None:
            await super().publish(events)
            if late.event_id not in store.documents["a"].outbox and late not in events:
                store.write("a", late)

    bus = WriteDuringPublish()
    store.write("a", entry("s", 1))
    relay = OutboxRelay(store, bus)
    assert await relay.publish_pending() == 0
    assert store.documents["a"].flag is True and late.event_id in store.documents["a"].outbox
    assert await relay.publish_pending() == 1
    assert len(bus.streams["s"]) == 2


async def test_a_failed_publish_clears_nothing() -> None:
    store, bus = InMemoryOutboxStore(), InMemoryPublisher(fail=True)
    store.write("a", entry("s", 1))
    with pytest.raises(ConnectionError):
        await OutboxRelay(store, bus).publish_pending()
    assert store.documents["a"].flag is True and len(store.documents["a"].outbox) == 1


async def test_published_but_not_durable_is_not_cleared() -> None:
    """I3: an event the bus accepted but cannot promise to keep stays in its document."""

    class NeverDurable(InMemoryPublisher):
        async def durable(self) -> None:
            raise NotDurable("appendfsync everysec")

    store, bus = InMemoryOutboxStore(), NeverDurable()
    store.write("a", entry("s", 1))
    with pytest.raises(NotDurable):
        await OutboxRelay(store, bus).publish_pending()
    assert len(bus.streams["s"]) == 1
    assert store.documents["a"].flag is True and len(store.documents["a"].outbox) == 1
