"""The pipeline with in-memory sink and dead letters: exactly once per table, dead letters."""

import re
from datetime import UTC, datetime

from promo.v1 import events_pb2
from promo_libs.analytics_schema import ENTITY_KEYS, ORDERS, USAGES, USERS
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD
from sync_consumer.adapters.event_rows import DERIVED, rows_for
from sync_consumer.domain.model import StreamEntry, TableRow
from sync_consumer.service_layer.pipeline import StreamPipeline
from sync_consumer_testing import synthetic
from sync_consumer_testing.memory import InMemoryDeadLetters, InMemoryFailures, InMemorySink

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
        InMemoryFailures(),
        max_failures=3,
        sleep=_no_sleep,
        versioned=ENTITY_KEYS,
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


async def test_deliveries_alone_never_dead_letter() -> None:
    # A restarted consumer claims its pending entries again: high delivery counts, no failure.
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    batch = orders(4)
    await pipeline(sink, letters).handle(batch[:2])
    tired = [StreamEntry(e.stream, e.entry_id, e.fields, deliveries=99) for e in batch]
    await pipeline(sink, letters).handle(tired)
    assert not letters.letters
    assert [r["order_id"] for r in sink.tables[ORDERS]] == ["o0", "o1", "o2", "o3"]


async def test_a_store_that_is_down_is_retried_and_counts_no_failure() -> None:
    sink, letters, failures = (
        InMemorySink(failures_left=50),
        InMemoryDeadLetters(),
        InMemoryFailures(),
    )
    p = StreamPipeline(STREAM, sink, letters, rows_for, failures, max_failures=2, sleep=_no_sleep)
    await p.handle(orders(3))
    assert not letters.letters and not failures.counts and len(sink.tables[ORDERS]) == 3


async def test_a_refused_entry_is_isolated_counted_and_dead_lettered_its_neighbours_stored() -> (
    None
):
    sink, letters, failures = InMemorySink(), InMemoryDeadLetters(), InMemoryFailures()
    sink.rejects = lambda row: row["order_id"] == "o5"
    p = StreamPipeline(STREAM, sink, letters, rows_for, failures, max_failures=3, sleep=_no_sleep)
    returned = await p.handle(orders(12))
    assert [letter.entry.entry_id for letter in returned] == ["1000-5"]
    assert re.fullmatch(r"rejected \d+ times: Code: 117\..*", returned[0].reason)
    assert [r["order_id"] for r in sink.tables[ORDERS]] == [f"o{i}" for i in range(12) if i != 5]
    assert not failures.counts  # stored or dead-lettered: nothing left counted
    # Three refusals of the whole batch, then halves down to the one entry: O(log n) more.
    assert sink.rejections <= 3 + 2 * 4


async def test_failures_counted_before_a_restart_still_count_after_it() -> None:
    sink, letters, failures = InMemorySink(), InMemoryDeadLetters(), InMemoryFailures()
    sink.rejects = lambda row: row["order_id"] == "o1"
    batch = orders(2)
    failures.counts = {e.entry_id: 2 for e in batch}  # left by a process that was killed
    p = StreamPipeline(STREAM, sink, letters, rows_for, failures, max_failures=3, sleep=_no_sleep)
    await p.handle(batch)
    assert [letter.entry.entry_id for letter in letters.letters] == ["1000-1"]
    assert sink.rejections == 2  # one more refusal reaches the limit; then o1 alone


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


async def test_an_order_at_the_epoch_dead_letters_its_entry_and_the_rest_is_stored() -> None:
    # A create_time of exactly 0 once tripped the mapping with an unforeseen error; the mapping
    # now names it (MalformedEvent). Any other error is test_a_mapping_that_raises_anything_...
    sink, letters = InMemorySink(), InMemoryDeadLetters()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    bad = entry(
        3, synthetic.order_event("confirmed", "o-epoch", "u1", epoch, subtotal=1, version=2)
    )
    batch = [*orders(3), bad]
    returned = await pipeline(sink, letters).handle(batch)
    assert [letter.entry.entry_id for letter in returned] == [bad.entry_id]
    assert [letter.entry.entry_id for letter in letters.letters] == [bad.entry_id]
    assert letters.letters[0].reason == "malformed: order create_time at the epoch"
    assert [r["order_id"] for r in sink.tables[ORDERS]] == ["o0", "o1", "o2"]


async def test_a_mapping_that_raises_anything_dead_letters_instead_of_escaping() -> None:
    sink, letters = InMemorySink(), InMemoryDeadLetters()

    def broken(e: StreamEntry) -> list[TableRow]:
        if e.entry_id == "1000-1":
            raise KeyError("no such column")
        return rows_for(e)

    p = StreamPipeline(STREAM, sink, letters, broken, InMemoryFailures(), sleep=_no_sleep)
    returned = await p.handle(orders(3))
    assert [letter.entry.entry_id for letter in returned] == ["1000-1"]
    assert returned[0].reason == "mapping failed: KeyError: 'no such column'"
    assert [r["order_id"] for r in sink.tables[ORDERS]] == ["o0", "o2"]


async def test_halved_inserts_after_a_refusal_still_send_only_what_is_missing() -> None:
    # The first INSERT fails after four rows landed (a transient error); the retry is refused for
    # o5's row. Every halved insert goes through the version guard: the landed rows are never
    # sent again, o5 alone is dead-lettered, and users_analytics is exact without it.
    sink, letters = InMemorySink(failures_left=1, partial=4), InMemoryDeadLetters()
    sink.rejects = lambda row: row["order_id"] == "o5"
    returned = await pipeline(sink, letters).handle(orders(12))
    assert [letter.entry.entry_id for letter in returned] == ["1000-5"]
    stored = [r["order_id"] for r in sink.tables[ORDERS]]
    assert sorted(stored) == sorted(f"o{i}" for i in range(12) if i != 5)  # each exactly once
    (summary,) = sink.latest_summary().values()
    assert summary[0] == 11  # confirmed orders of u1: every stored one, not the refused one
