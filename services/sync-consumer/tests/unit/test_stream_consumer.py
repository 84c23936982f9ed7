"""The consumer's loops over the ConsumerGroup port, with in-memory fakes: what is pending goes
first, nothing is acknowledged before it is stored, a lost group is joined again."""

from datetime import UTC, datetime

import pytest

from promo_libs.analytics_schema import ENTITY_KEYS, ORDERS
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD
from sync_consumer.adapters.event_rows import DERIVED, rows_for
from sync_consumer.domain.model import GroupLost, StreamEntry
from sync_consumer.entrypoints.stream_consumer import StreamConsumer
from sync_consumer.service_layer.pipeline import StreamPipeline
from sync_consumer_testing import synthetic
from sync_consumer_testing.memory import (
    InMemoryDeadLetters,
    InMemoryFailures,
    InMemoryGroup,
    InMemorySink,
)

AT = datetime(2024, 3, 1, 12, tzinfo=UTC)
STREAM = synthetic.ORDERS_STREAM


def entries(first: int, n: int) -> list[StreamEntry]:
    made = []
    for i in range(first, first + n):
        event = synthetic.order_event("created", f"o{i}", "u1", AT, subtotal=1000, version=1)
        fields = {EVENT_ID_FIELD: f"e{i}".encode(), ENVELOPE_FIELD: event.SerializeToString()}
        made.append(StreamEntry(STREAM, f"1000-{i}", fields))
    return made


def consumer(group: InMemoryGroup, sink: InMemorySink) -> StreamConsumer:
    pipeline = StreamPipeline(
        STREAM,
        sink,
        InMemoryDeadLetters(),
        rows_for,
        InMemoryFailures(),
        versioned=ENTITY_KEYS,
        derived=DERIVED,
    )
    return StreamConsumer(
        group, pipeline, batch_size=2, poll_ms=10, claim_idle_ms=1000, retention_ms=0
    )


def stored(sink: InMemorySink) -> list[str]:
    return [row["order_id"] for row in sink.tables.get(ORDERS, [])]


async def test_a_predecessors_pending_batch_is_stored_before_anything_new() -> None:
    group = InMemoryGroup(STREAM, exists=True)
    group.add(entries(0, 5))
    await group.read(2, 0)  # a consumer read o0, o1 and died before storing them
    sink = InMemorySink()
    reader = consumer(group, sink)
    await reader.prepare()
    assert stored(sink) == ["o0", "o1"] and not group.pending
    assert await reader.read_once() == 2
    assert stored(sink) == ["o0", "o1", "o2", "o3"]
    assert not group.pending  # acknowledged once stored


async def test_the_group_is_created_from_the_first_entry() -> None:
    group = InMemoryGroup(STREAM)  # entries published before the group existed
    group.add(entries(0, 3))
    sink = InMemorySink()
    reader = consumer(group, sink)
    await reader.prepare()
    while await reader.read_once():
        pass
    assert stored(sink) == ["o0", "o1", "o2"]
    status = await group.status()
    assert status is not None and (status.lag, status.pending) == (0, 0)


async def test_a_lost_group_is_joined_again_and_read_from_the_start() -> None:
    group = InMemoryGroup(STREAM, exists=True)
    group.add(entries(0, 2))
    sink = InMemorySink()
    reader = consumer(group, sink)
    await reader.prepare()
    await reader.read_once()
    group.lose()
    with pytest.raises(GroupLost):
        await reader.read_once()
    await reader.prepare()  # what the read loop does on GroupLost
    while await reader.read_once():
        pass
    # Read again from the start; the version guard stores each (entity, version) once.
    assert stored(sink) == ["o0", "o1"]
