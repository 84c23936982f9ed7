"""The pipeline with in-memory sink and dead letters: exactly once per table, dead letters."""

from datetime import UTC, datetime

from promo.v1 import events_pb2
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD
from sync_consumer import synthetic
from sync_consumer.adapters.event_rows import DERIVED, ORDERS, USAGES, USERS, VERSIONED, rows_for
from sync_consumer.adapters.memory import InMemoryDeadLetters, InMemorySink
from sync_consumer.domain.model import StreamEntry
from sync_consumer.service_layer.pipeline import StreamPipeline

AT = datetime(2024, 1, 31, 23, 59, 58, tzinfo=UTC)
STREAM = synthetic.ORDERS_STREAM


async def _no_sleep(_: float) -> None:
    return None


def pipeline(sink: InMemorySink, letters: InMemoryDeadLetters) -> StreamPipeline:
    return StreamPipeline(
        STREAM,
        sink,
        letters,
        rows_for,
        max_deliveries=3,
        sleep=_no_sleep,
        versioned=VERSIONED,
        derived=DERIVED,
    )


def entry(n: int, message: object, deliveries: int = 1) -> StreamEntry:
    envelope = message.SerializeToString()  # type: ignore[attr-defined]
    fields = {EVENT_ID_FIELD: b"x", ENVELOPE_FIELD: envelope}
    return StreamEntry(STREAM, f"1000-{n}", fields, deliveries)


def orders(n: int) -> list[StreamEntry]:
    return [
        entry(i, synthetic.order_event("confirmed", f"o{i}", "u1", AT, subtotal=1000, version=2))
        for i in range(n)
    ]


async def test_rows_carry_denormalized_values_and_position() -> None:
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    confirmed = synthetic.order_event(
        "confirmed", "o1", "u1", AT, subtotal=1000, discount=100, code_id="p1", version=2
    )
    await pipeline(sink, letters).handle([entry(7, confirmed)])
    (row,) = sink.tables[ORDERS]
    assert row["order_id"] == "o1" and row["status"] == "CONFIRMED"
    assert (row["total_minor"], row["discount_minor"], row["discount_type"]) == (
        900,
        100,
        "PERCENTAGE",
    )
    assert (row["order_date"], row["create_time"]) == ("2024-01-31", "2024-01-31 23:59:58")
    assert (row["src_stream"], row["src_ms"], row["src_seq"], row["version"]) == (
        STREAM,
        1000,
        7,
        2,
    )
    assert row["user_email"] == "u1@example.com" and row["event_type"] == "promo.v1.OrderConfirmed"


async def test_one_insert_per_table_and_batch() -> None:
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    redeemed = synthetic.usage_event(
        "redeemed", "o9", "p1", "u1", AT, amount=10, discount=1, version=1
    )
    await pipeline(sink, letters).handle(
        [*orders(5), entry(50, redeemed), entry(51, synthetic.user_created("u1", AT))]
    )
    assert sink.inserts == 3 and len(sink.tables[ORDERS]) == 5
    assert len(sink.tables[USAGES]) == 1 and len(sink.tables[USERS]) == 1


async def test_redelivered_batch_is_stored_once_also_by_a_new_process() -> None:
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    batch = orders(10)
    await pipeline(sink, letters).handle(batch[:6])
    await pipeline(sink, letters).handle(batch)  # a restarted consumer gets it all again
    again = pipeline(sink, letters)
    await again.handle(batch[3:])
    assert [r["order_id"] for r in sink.tables[ORDERS]] == [f"o{i}" for i in range(10)]


async def test_failed_insert_is_retried_until_stored() -> None:
    sink, letters = InMemorySink(failures_left=3), InMemoryDeadLetters()
    await pipeline(sink, letters).handle(orders(4))
    assert len(sink.tables[ORDERS]) == 4 and sink.inserts == 1


async def test_malformed_entry_goes_to_dead_letters_and_the_rest_is_stored() -> None:
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    bad = StreamEntry(STREAM, "1000-99", {ENVELOPE_FIELD: b"\xff\xfenot protobuf"})
    missing = StreamEntry(STREAM, "1000-98", {EVENT_ID_FIELD: b"only an id"})
    no_order = synthetic.envelope(
        "order_confirmed",
        events_pb2.OrderConfirmed(user=events_pb2.UserSnapshot(id="u1")),
        aggregate_type="order",
        aggregate_id="o",
        version=1,
        at=AT,
    )
    batch = [*orders(3), bad, missing, entry(97, no_order)]
    result = await pipeline(sink, letters).handle(batch)
    assert len(sink.tables[ORDERS]) == 3
    reasons = {letter.entry.entry_id: letter.reason for letter in letters.letters}
    assert reasons["1000-99"].startswith("malformed: envelope does not decode")
    assert reasons["1000-98"] == "malformed: no envelope field"
    assert reasons["1000-97"] == "malformed: OrderConfirmed without order"
    assert len(result) == len(reasons)


async def test_a_time_no_datetime_can_hold_dead_letters_the_entry_not_the_stream() -> None:
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    poisoned = synthetic.order_event("confirmed", "o99", "u1", AT, subtotal=1000, version=2)
    poisoned.order_confirmed.order.create_time.seconds = 10**15  # far beyond year 9999
    await pipeline(sink, letters).handle([*orders(2), entry(99, poisoned)])
    assert [row["order_id"] for row in sink.tables[ORDERS]] == ["o0", "o1"]
    (letter,) = letters.letters
    assert letter.entry.entry_id == "1000-99"
    assert letter.reason.startswith("malformed: order_confirmed: ")


async def test_too_many_deliveries_dead_letters_only_what_is_not_stored() -> None:
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    batch = orders(4)
    await pipeline(sink, letters).handle(batch[:2])
    tired = [StreamEntry(e.stream, e.entry_id, e.fields, deliveries=9) for e in batch]
    await pipeline(sink, letters).handle(tired)
    assert [letter.entry.entry_id for letter in letters.letters] == ["1000-2", "1000-3"]
    assert len(sink.tables[ORDERS]) == 2


async def test_unknown_payload_is_skipped_not_dead_lettered() -> None:
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    future = synthetic.envelope(
        "order_created",
        events_pb2.OrderCreated(),
        aggregate_type="order",
        aggregate_id="o",
        version=1,
        at=AT,
    )
    future.ClearField("order_created")  # no payload this consumer knows
    await pipeline(sink, letters).handle([entry(1, future)])
    assert not letters.letters and not sink.tables
