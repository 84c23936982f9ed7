"""Exactly once per (entity, version) and exact derived tables, whatever subset of a write
landed: the pipeline against the in-memory sink, whose failures store part of their rows."""

from datetime import UTC, datetime, timedelta

from promo_libs import analytics_schema
from promo_libs.analytics_schema import (
    CODE_DICTIONARY,
    CODE_ORDERS_DAILY,
    CODE_ORDERS_HOURLY,
    CODE_ORDERS_MONTHLY,
    ENTITY_KEYS,
    LINE_COSTS_DAILY,
    LINE_COSTS_MONTHLY,
    ORDERS,
    ORDERS_DAILY,
    ORDERS_HOURLY,
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
    assert sink.latest_summary() == EXPECTED and sink.refreshes == len(touched) == 10


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
        (15, USERS_ANALYTICS),
        (3, ORDERS_DAILY),
        (4, USAGES_DAILY),
        (5, CODE_ORDERS_DAILY),
        (6, ORDERS_MONTHLY),
        (7, USAGES_MONTHLY),
        (8, CODE_ORDERS_MONTHLY),
        (9, CODE_DICTIONARY),
        (13, LINE_COSTS_DAILY),
        (14, LINE_COSTS_MONTHLY),
        (16, ORDERS_HOURLY),
        (17, CODE_ORDERS_HOURLY),
        (18, USAGES_DAILY),
        (19, CODE_ORDERS_DAILY),
        (20, ORDERS_DAILY),
    ):
        assert by_version[version].statements("db")[-1] == refresh_statement(table, "db")


def _cart(kind: str, version: int, discounts: tuple[int, ...]) -> object:
    """An order of three lines (issue 14) at one version, with its lines' discount shares."""
    message = synthetic.order_event(
        kind, "cart", "u1", FEB, subtotal=600, discount=sum(discounts), version=version
    )
    order = getattr(message, f"order_{kind}").order
    order.campaign_id = "k1" if kind != "created" else ""
    for n, share in enumerate(discounts):
        order.lines.add(
            sku=f"s{n}", product_id=f"p{n}", category_ids=["c", f"c{n}"], quantity=1,
            unit_price_minor=200, discount_minor=share,
        )  # fmt: skip
    return message


async def test_an_order_event_writes_every_line_with_the_orders_state() -> None:
    sink = InMemorySink()
    await pipeline(sink).handle(entries(_cart("created", 1, (0, 0, 0))))
    await pipeline(sink).handle(entries(_cart("confirmed", 2, (10, 20, 30))))
    lines = sink.tables[analytics_schema.ORDER_LINES]
    assert [(r["line_id"], r["version"], r["status"], r["discount_minor"]) for r in lines] == [
        ("cart#0", 1, "PENDING", 0),
        ("cart#1", 1, "PENDING", 0),
        ("cart#2", 1, "PENDING", 0),
        ("cart#0", 2, "CONFIRMED", 10),
        ("cart#1", 2, "CONFIRMED", 20),
        ("cart#2", 2, "CONFIRMED", 30),
    ]
    assert {(r["order_id"], r["currency_code"], r["user_id"], r["order_date"]) for r in lines} == {
        ("cart", "EUR", "u1", "2024-02-01")
    }
    assert [r["campaign_id"] for r in lines] == ["", "", "", "k1", "k1", "k1"]
    assert lines[4]["category_ids"] == ["c", "c1"] and lines[4]["line_index"] == 1


async def test_an_order_whose_lines_were_cut_between_parts_is_completed_once() -> None:
    # The first attempt stores two of the three lines (one block committed), then fails; the
    # guard is per line, so the retry sends the third one only, never skipping it as "the
    # order's version is stored", and a redelivery adds nothing.
    # Two failures: the order's row lands and fails first (its retry sends nothing more), then
    # the lines' INSERT.
    sink = InMemorySink(failures_left=2, partial=2)
    batch = entries(_cart("confirmed", 2, (10, 20, 30)))
    await pipeline(sink).handle(batch)
    await pipeline(sink).handle(batch)
    lines = sink.tables[analytics_schema.ORDER_LINES]
    assert sorted((r["line_id"], r["version"]) for r in lines) == [
        ("cart#0", 2),
        ("cart#1", 2),
        ("cart#2", 2),
    ]
    assert sink.failures_left == 0 and len(sink.tables[ORDERS]) == 1
