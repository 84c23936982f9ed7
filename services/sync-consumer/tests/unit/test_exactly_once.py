"""Exactly once per (entity, version) and exact derived tables, whatever subset of a write
landed: the pipeline against the in-memory sink, whose failures store part of their rows."""

from datetime import UTC, datetime, timedelta

from promo_libs import analytics_schema
from promo_libs.analytics_schema import (
    CODE_DICTIONARY,
    CODE_ORDERS_DAILY,
    CODE_ORDERS_MONTHLY,
    ENTITY_KEYS,
    ORDERS,
    ORDERS_DAILY,
    ORDERS_MONTHLY,
    USAGES,
    USAGES_DAILY,
    USAGES_MONTHLY,
    USERS_ANALYTICS,
)
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD
from sync_consumer.adapters.derived import refresh_statement
from sync_consumer.adapters.event_rows import DERIVED, rows_for
from sync_consumer.domain.model import StreamEntry
from sync_consumer.service_layer.pipeline import StreamPipeline
from sync_consumer_testing import synthetic
from sync_consumer_testing.memory import InMemoryDeadLetters, InMemoryFailures, InMemorySink

JAN = datetime(2024, 1, 31, 23, 0, tzinfo=UTC)
FEB = JAN + timedelta(hours=2)
STREAM = synthetic.ORDERS_STREAM


async def _no_sleep(_: float) -> None:
    return None


def pipeline(sink: InMemorySink) -> StreamPipeline:
    return StreamPipeline(
        STREAM,
        sink,
        InMemoryDeadLetters(),
        rows_for,
        InMemoryFailures(),
        sleep=_no_sleep,
        versioned=ENTITY_KEYS,
        derived=DERIVED,
    )


def entries(*messages: object) -> list[StreamEntry]:
    return [
        StreamEntry(
            STREAM, f"3000-{n}", {EVENT_ID_FIELD: b"x", ENVELOPE_FIELD: m.SerializeToString()}
        )  # type: ignore[attr-defined]
        for n, m in enumerate(messages)
    ]


def two_months() -> list[StreamEntry]:
    """A January order cancelled and a February one confirmed, with their usages, one batch."""
    return entries(
        synthetic.order_event(
            "confirmed", "jan", "u1", JAN, subtotal=1000, discount=100, version=2
        ),
        synthetic.order_event("confirmed", "feb", "u1", FEB, subtotal=2000, version=2),
        synthetic.order_event(
            "cancelled", "jan", "u1", JAN, subtotal=1000, discount=100, version=3
        ),
        synthetic.usage_event(
            "redeemed", "jan", "p1", "u1", JAN, amount=1000, discount=100, version=1
        ),
        synthetic.usage_event(
            "released", "jan", "p1", "u1", JAN, amount=1000, discount=100, version=2
        ),
        synthetic.usage_event(
            "redeemed", "feb", "p1", "u1", FEB, amount=2000, discount=0, version=1
        ),
    )


EXPECTED = {
    ("u1", "2024-01-31", "EUR"): (0, 0, 0, 0),
    ("u1", "2024-02-01", "EUR"): (1, 2000, 0, 1),
}


async def test_a_batch_across_months_cut_after_its_first_part_lands_once_and_exact() -> None:
    sink = InMemorySink(failures_left=2, partial=1)  # one part lands, then the error; twice
    await pipeline(sink).handle(two_months())
    versions = sorted((r["order_id"], r["version"]) for r in sink.tables[ORDERS])
    assert versions == [("feb", 2), ("jan", 2), ("jan", 3)]
    assert sorted((r["usage_id"], r["version"]) for r in sink.tables[USAGES]) == [
        ("feb", 1),
        ("jan", 1),
        ("jan", 2),
    ]
    assert sink.latest_summary() == EXPECTED


async def test_a_derived_write_failing_after_its_source_committed_is_redone() -> None:
    sink = InMemorySink(refresh_failures_left=3)
    await pipeline(sink).handle(two_months())
    # One successful recomputation per derived table the batch touched.
    touched = {derived for table in sink.tables for derived, _ in DERIVED.get(table, ())}
    assert sink.latest_summary() == EXPECTED and sink.refreshes == len(touched) == 8


async def test_a_batch_delivered_again_after_a_crash_before_the_refresh_is_exact() -> None:
    sink = InMemorySink()
    batch = two_months()
    await pipeline(sink).handle(batch)
    del sink.tables[USERS_ANALYTICS]  # as if the process died before refreshing
    await pipeline(sink).handle(batch)  # redelivered: every row is skipped as stored
    assert len(sink.tables[ORDERS]) == 3 and sink.latest_summary() == EXPECTED


async def test_an_older_recomputation_arriving_last_does_not_win() -> None:
    sink = InMemorySink()
    batch = two_months()
    await pipeline(sink).handle(batch[:1])  # jan confirmed only
    stale = list(sink.tables[USERS_ANALYTICS])
    await pipeline(sink).handle(batch)
    sink.tables[USERS_ANALYTICS].extend(stale)  # a late commit of the first recomputation
    assert sink.latest_summary() == EXPECTED


def test_migrations_fill_derived_tables_with_the_live_statements() -> None:
    by_version = {m.version: m for m in analytics_schema.migrations()}
    for version, table in (
        (2, USERS_ANALYTICS),
        (3, ORDERS_DAILY),
        (4, USAGES_DAILY),
        (5, CODE_ORDERS_DAILY),
        (6, ORDERS_MONTHLY),
        (7, USAGES_MONTHLY),
        (8, CODE_ORDERS_MONTHLY),
        (9, CODE_DICTIONARY),
    ):
        assert by_version[version].statements("db")[-1] == refresh_statement(table, "db")
