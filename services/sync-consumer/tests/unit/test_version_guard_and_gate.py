"""The entity-version guard (a duplicate at another position, a replayed state) and the rebuild
gate (positions read again after a swap), with in-memory fakes; and reconcile's comparison."""

from datetime import UTC, datetime

from promo_libs.analytics_schema import ENTITY_KEYS, ORDERS
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD
from promo_reconcile import differences, truth_facts
from sync_consumer.adapters.event_rows import rows_for
from sync_consumer.domain.model import StreamEntry
from sync_consumer.domain.ports import RebuildGate
from sync_consumer.service_layer.pipeline import StreamPipeline
from sync_consumer_testing import synthetic
from sync_consumer_testing.memory import InMemoryDeadLetters, InMemoryFailures, InMemorySink

AT = datetime(2024, 3, 1, 12, tzinfo=UTC)
STREAM = synthetic.ORDERS_STREAM


class FlippingGate(RebuildGate):
    def __init__(self) -> None:
        self.swapped = False
        self.entered = 0

    async def enter(self) -> bool:
        self.entered += 1
        swapped, self.swapped = self.swapped, False
        return swapped

    async def leave(self) -> None:
        return None


async def _no_sleep(_: float) -> None:
    return None


def entry(n: int, message: object) -> StreamEntry:
    fields = {EVENT_ID_FIELD: b"x", ENVELOPE_FIELD: message.SerializeToString()}  # type: ignore[attr-defined]
    return StreamEntry(STREAM, f"2000-{n}", fields)


def pipeline(sink: InMemorySink, gate: RebuildGate | None = None) -> StreamPipeline:
    return StreamPipeline(
        STREAM,
        sink,
        InMemoryDeadLetters(),
        rows_for,
        InMemoryFailures(),
        versioned=ENTITY_KEYS,
        gate=gate,
        sleep=_no_sleep,
    )


def confirmed(order_id: str, version: int = 2) -> object:
    return synthetic.order_event("confirmed", order_id, "u1", AT, subtotal=1000, version=version)


async def test_the_same_event_at_a_later_position_is_stored_once() -> None:
    sink = InMemorySink()
    event = confirmed("o1")
    await pipeline(sink).handle([entry(1, event), entry(2, event)])  # twice in one batch
    await pipeline(sink).handle([entry(3, event)])  # and once more later
    assert len(sink.tables[ORDERS]) == 1


async def test_a_version_already_replayed_is_skipped_a_newer_one_stored() -> None:
    sink = InMemorySink()
    sink.tables[ORDERS] = [
        {"order_id": "o1", "version": 3, "src_stream": STREAM, "src_ms": 1000, "src_seq": 0}
    ]
    cancelled = synthetic.order_event("cancelled", "o1", "u1", AT, subtotal=1000, version=4)
    await pipeline(sink).handle([entry(1, confirmed("o1", 2)), entry(2, cancelled)])
    assert [r["version"] for r in sink.tables[ORDERS]] == [3, 4]


async def test_after_a_swap_the_positions_are_read_again() -> None:
    sink, gate = InMemorySink(), FlippingGate()
    consumer = pipeline(sink, gate)
    await consumer.handle([entry(5, confirmed("o1"))])
    sink.tables[ORDERS] = []  # the rebuild swapped in a table without that row
    gate.swapped = True
    await consumer.handle([entry(5, confirmed("o1"))])  # redelivered: it is not stored yet
    assert len(sink.tables[ORDERS]) == 1 and gate.entered == 2


def test_reconcile_reports_what_differs_and_nothing_else() -> None:
    order = {
        "_id": "o1",
        "status": "CONFIRMED",
        "currency": "EUR",
        "created_at": 1_709_294_400_000,
        "subtotal_minor": 1000,
        "discount_minor": 100,
        "user_id": "u1",
        "promo_code_id": "p1",
    }
    truth = truth_facts([], [], [], [order])
    assert truth["users_analytics"] == {("u1", "2024-03-01", "EUR"): (1, 900, 100, 0)}
    analytics = {fact: dict(values) for fact, values in truth.items()}
    assert differences(truth, analytics) == []
    analytics["orders by user"][("u1", "CONFIRMED")] = (2, 1800)
    (found,) = differences(truth, analytics)
    assert (found.fact, found.truth, found.analytics) == ("orders by user", (1, 900), (2, 1800))
