"""Order lines and ListDiscountCosts end to end (issue 14): order events with lines -> Redis
streams -> a real sync-consumer -> ClickHouse 18.16 (order_lines) -> a real analytics service.

The orders come from discount_costs_scenario, and every answer is compared with the truth
computed from them in plain Python: product and category grouping (a line in several
categories counts in each), two currencies, the edges of a range, short ranges (argMax) and
long ones (FINAL), the campaign filter, ties, limits. Redelivery of every entry stores no
line version twice; a cancellation re-emits the lines with the new status and drops them from
the answers.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import redis
from analytics_e2e import ANALYTICS, drop, service, wait_until_drained
from discount_costs_scenario import (
    DAY,
    GROUPINGS,
    SECOND,
    Line,
    Order,
    all_cases,
    generate,
    order_event,
    order_events,
    request,
    truth,
)

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import analytics_pb2 as pb
from promo.v1 import analytics_pb2_grpc, events_pb2
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD, TYPE_FIELD

# --- the running pipeline ----------------------------------------------------------------------


@dataclass
class Lines:
    stack: Stack
    database: str
    orders: list[Order]
    client: redis.Redis
    stream: str
    analytics: ServiceProcess
    published: list[events_pb2.EventEnvelope] = field(default_factory=list)

    def publish(self, event: events_pb2.EventEnvelope) -> None:
        self.client.xadd(
            self.stream,
            {
                EVENT_ID_FIELD: event.event_id,
                TYPE_FIELD: event.type,
                ENVELOPE_FIELD: event.SerializeToString(),
            },
        )
        self.published.append(event)

    def drained(self) -> None:
        wait_until_drained(self.client, [self.stream], "sync-consumer", timeout=60)

    def query(self, sql: str) -> list[list[str]]:
        text = self.stack.clickhouse_query(sql.format(db=self.database))
        return [line.split("\t") for line in text.splitlines()]


@pytest.fixture(scope="module")
def lines(stack: Stack) -> Iterator[Lines]:
    token = uuid.uuid4().hex[:10]
    database = f"e2e_lines_{token}"
    stream = f"promo.events.t{token}.orders"
    client = redis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    consumer = service(
        stack,
        "sync-consumer-lines",
        [sys.executable, "-m", "sync_consumer"],
        {
            "CLICKHOUSE_DATABASE": database,
            "STREAMS": stream,
            "CONSUMER_NAME": f"sync-{token}",
            "BATCH_SIZE": "50",  # several batches, each order's versions often in two of them
            "BATCH_WAIT_MS": "100",
        },
    )
    analytics = service(stack, "analytics-lines", ANALYTICS, {"CLICKHOUSE_DATABASE": database})
    running = Lines(stack, database, generate(), client, stream, analytics)
    try:
        consumer.start_and_wait()
        # Merges stopped: a duplicate line version would otherwise be folded away by a merge
        # before the exactly-once assertion could see it.
        running.query("SYSTEM STOP MERGES {db}.order_lines")
        for order in running.orders:
            for event in order_events(order):
                running.publish(event)
        running.drained()
        analytics.start_and_wait()
        yield running
    finally:
        analytics.terminate()
        consumer.terminate()
        client.delete(stream, f"{stream}.dead-letter")
        client.close()
        drop(stack, database)


async def _answers(
    analytics: ServiceProcess, cases: list[pb.ListDiscountCostsRequest]
) -> list[pb.ListDiscountCostsResponse]:
    async with analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        gate = asyncio.Semaphore(6)

        async def one(message: pb.ListDiscountCostsRequest) -> pb.ListDiscountCostsResponse:
            async with gate:
                return await stub.ListDiscountCosts(message, timeout=10)

        return list(await asyncio.gather(*(one(c) for c in cases)))


async def _compare(lines: Lines, orders: list[Order]) -> int:
    cases = all_cases()
    answers = await _answers(lines.analytics, [request(*case) for case in cases])
    for case, answer in zip(cases, answers, strict=True):
        assert answer == truth(orders, *case), case
    return len(cases)


async def test_every_answer_equals_the_truth_of_the_orders(lines: Lines) -> None:
    started = time.monotonic()
    compared = await _compare(lines, lines.orders)
    print(f"{compared} ListDiscountCosts answers compared in {time.monotonic() - started:.1f}s")
    # The data exercises what the comparison claims to: two currencies, multi-category lines,
    # every campaign, the tie and the left-out product.
    all_time = truth(lines.orders, None, None, pb.DISCOUNT_COST_GROUPING_PRODUCT, 1000, "EUR")
    keys = [e.key for e in all_time.entries]
    assert keys.index("tie-a") + 1 == keys.index("tie-b") and "p-free" not in keys
    assert (
        len(truth(lines.orders, None, None, pb.DISCOUNT_COST_GROUPING_CATEGORY).per_currency) == 2
    )
    assert any(len(line.categories) > 1 for o in lines.orders for line in o.lines)
    assert {o.campaign for o in lines.orders if o.status == "CONFIRMED"} >= {"k1", "k2", ""}


async def test_lines_are_stored_once_per_version_and_complete(lines: Lines) -> None:
    versions = sum(len(order_events(o)) for o in lines.orders)
    stored_lines = sum(
        len(getattr(e, e.WhichOneof("payload") or "").order.lines) for e in lines.published
    )
    assert versions == len(lines.published)
    rows = lines.query(
        "SELECT count(), uniqExact(event_id, line_id), uniqExact(line_id) FROM {db}.order_lines"
    )
    assert rows == [
        [str(stored_lines), str(stored_lines), str(sum(len(o.lines) for o in lines.orders))]
    ]
    # The latest version of each line is its order's state now.
    latest = lines.query(
        "SELECT order_id, status, toString(sum(discount_minor)), toString(count())"
        " FROM {db}.order_lines FINAL GROUP BY order_id, status ORDER BY order_id"
    )
    expected = sorted(
        [
            o.id,
            o.status,
            str(sum(line.discount for line in o.lines) if o.discounted else 0),
            str(len(o.lines)),
        ]
        for o in lines.orders
    )
    assert latest == expected


async def test_every_entry_delivered_again_stores_no_line_twice(lines: Lines) -> None:
    before = lines.query("SELECT count() FROM {db}.order_lines")
    lines.client.xgroup_setid(lines.stream, "sync-consumer", "0")
    for event in lines.published[:40]:  # and the same events again at new positions
        lines.client.xadd(
            lines.stream,
            {
                EVENT_ID_FIELD: event.event_id,
                TYPE_FIELD: event.type,
                ENVELOPE_FIELD: event.SerializeToString(),
            },
        )
    lines.drained()
    assert lines.query("SELECT count() FROM {db}.order_lines") == before
    assert lines.query("SELECT count() - uniqExact(event_id, line_id) FROM {db}.order_lines") == [
        ["0"]
    ]
    answers = await _answers(
        lines.analytics, [request(None, None, g) for g in GROUPINGS] + [request(DAY, None, 2)]
    )
    assert answers == [truth(lines.orders, None, None, g) for g in GROUPINGS] + [
        truth(lines.orders, DAY, None, 2)
    ]


async def test_a_cancellation_re_emits_the_lines_and_drops_them_from_the_costs(
    lines: Lines,
) -> None:
    at = DAY + timedelta(days=2, hours=3)
    mine = [
        Order(
            f"kc-{n}",
            "u9",
            "EUR",
            at + n * SECOND,
            [
                Line("a", "kc-product", ["kc-cat", "sale"], 2, 1000, 150),
                Line("b", "kc-other", ["kc-cat"], 1, 400, 40),
            ],
            campaign="kc",
        )
        for n in range(3)
    ]
    for order in mine:
        for event in order_events(order):
            lines.publish(event)
    lines.drained()
    by_category = request(None, None, pb.DISCOUNT_COST_GROUPING_CATEGORY, campaign="kc")
    (answer,) = await _answers(lines.analytics, [by_category])
    assert answer == truth(mine, None, None, pb.DISCOUNT_COST_GROUPING_CATEGORY, campaign="kc")
    assert [e.key for e in answer.entries] == ["kc-cat", "sale"]
    assert answer.entries[0].discount.amount_minor == 3 * 190 and answer.entries[0].orders == 3

    for order in mine[:2]:
        order.status = "CANCELLED"
        lines.publish(order_event(order, "cancelled", 3))
    lines.drained()
    rows = lines.query(
        "SELECT order_id, status, toString(version), toString(count()) FROM {db}.order_lines FINAL"
        " WHERE order_id LIKE 'kc-%' GROUP BY order_id, status, version ORDER BY order_id"
    )
    assert rows == [
        ["kc-0", "CANCELLED", "3", "2"],
        ["kc-1", "CANCELLED", "3", "2"],
        ["kc-2", "CONFIRMED", "2", "2"],
    ]
    (answer,) = await _answers(lines.analytics, [by_category])
    assert answer == truth(mine, None, None, pb.DISCOUNT_COST_GROUPING_CATEGORY, campaign="kc")
    assert answer.entries[0].discount.amount_minor == 190 and answer.entries[0].orders == 1
    # The rollups computed before the cancellation were recomputed exactly: one order left.
    assert lines.query(
        "SELECT kind, cost_key, toString(discount_minor), toString(gross_minor),"
        " toString(units), toString(orders) FROM {db}.line_costs_daily FINAL"
        " WHERE campaign_id = 'kc' ORDER BY kind, cost_key"
    ) == [
        ["category", "kc-cat", "190", "2400", "3", "1"],
        ["category", "sale", "150", "2000", "2", "1"],
        ["product", "kc-other", "40", "400", "1", "1"],
        ["product", "kc-product", "150", "2000", "2", "1"],
    ]
    assert lines.query(
        "SELECT toString(month), toString(discount_minor), toString(orders)"
        " FROM {db}.line_costs_monthly FINAL WHERE campaign_id = 'kc' AND cost_key = 'kc-cat'"
    ) == [["2024-03-01", "190", "1"]]
    # The whole comparison still holds with these orders in the data.
    lines.orders += mine
    await _compare(lines, lines.orders)
