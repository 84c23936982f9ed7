"""Order lines and ListDiscountCosts end to end (issue 14): order events with lines -> Redis
streams -> a real sync-consumer -> ClickHouse 18.16 (order_lines) -> a real analytics service.

The orders are generated here, and every answer is compared with the truth computed from them
in plain Python: product and category grouping (a line in several categories counts in each),
two currencies, the edges of a range, short ranges (argMax) and long ones (FINAL), the
campaign filter, ties, limits. Redelivery of every entry stores no line version twice; a
cancellation re-emits the lines with the new status and drops them from the answers.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from analytics_e2e import ANALYTICS, drop, service, wait_until_drained

from devstack.probes import clickhouse_query
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import analytics_pb2 as pb
from promo.v1 import analytics_pb2_grpc, common_pb2, events_pb2, orders_pb2
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD, TYPE_FIELD
from promo_libs.grpc.mapping import timestamp
from sync_consumer_testing.synthetic import envelope

DAY = datetime(2024, 3, 4, tzinfo=UTC)  # a Monday
SECOND = timedelta(seconds=1)
PRODUCTS = ["p1", "p2", "p3", "p4", "p5", ""]  # "": a line without product id
CATEGORIES = ["shoes", "spring", "sale", "kids"]
CAMPAIGNS = ["k1", "k2", ""]


@dataclass
class Line:
    sku: str
    product: str
    categories: list[str]
    quantity: int
    price: int
    discount: int  # the share once confirmed


@dataclass
class Order:
    id: str
    user: str
    currency: str
    created: datetime
    lines: list[Line]
    status: str = "CONFIRMED"  # PENDING, CONFIRMED, REJECTED, CANCELLED (now)
    campaign: str = ""

    @property
    def discounted(self) -> bool:
        return self.status in ("CONFIRMED", "CANCELLED")


def generate(seed: int = 14, count: int = 90) -> list[Order]:
    rnd = random.Random(seed)
    times = [DAY + timedelta(seconds=rnd.randrange(3 * 86400)) for _ in range(count)]
    # A sparser history months before: long and open ranges read it through FINAL.
    times += [DAY - timedelta(days=rnd.randrange(50, 100)) for _ in range(count // 4)]
    orders = []
    for n, created in enumerate(sorted(times)):
        currency = "USD" if n % 4 == 0 else "EUR"
        lines = []
        for i in range(rnd.randrange(1, 5)):
            price = rnd.randrange(100, 5000)
            quantity = rnd.randrange(1, 4)
            share = rnd.choice([0, rnd.randrange(0, price * quantity + 1)])
            lines.append(
                Line(
                    f"sku{i}",
                    rnd.choice(PRODUCTS),
                    rnd.sample(CATEGORIES, rnd.randrange(0, 3)),
                    quantity,
                    price,
                    share,
                )
            )
        status = rnd.choices(["CONFIRMED", "CANCELLED", "REJECTED", "PENDING"], [70, 15, 10, 5])[0]
        orders.append(
            Order(f"o{n:03d}", f"u{n % 7}", currency, created, lines, status, rnd.choice(CAMPAIGNS))
        )
    # Fixed cases: the range edges (start inclusive, end exclusive), a tie broken by key, a
    # product whose lines have no discount (left out), a category listed twice on one line.
    edge = DAY + timedelta(days=1)
    orders += [
        Order("edge-start", "u1", "EUR", DAY, [Line("a", "p1", ["sale"], 1, 900, 90)]),
        Order("edge-before", "u1", "EUR", edge - SECOND, [Line("a", "p2", ["kids"], 1, 800, 80)]),
        Order(
            "edge-end", "u2", "EUR", edge, [Line("a", "p3", ["sale"], 2, 500, 70)], campaign="k1"
        ),
        Order(
            "tie",
            "u3",
            "EUR",
            DAY + timedelta(hours=5),
            [
                Line("a", "tie-b", ["tie"], 1, 1000, 777),
                Line("b", "tie-a", ["tie"], 1, 1000, 777),
            ],
        ),
        Order(
            "free",
            "u3",
            "EUR",
            DAY + timedelta(hours=6),
            [
                Line("a", "p-free", ["free"], 3, 1000, 0),
                Line("b", "p1", ["shoes", "shoes"], 1, 50, 5),
            ],
        ),
    ]
    return orders


# --- events ------------------------------------------------------------------------------------

_STATUS = {
    "created": orders_pb2.ORDER_STATUS_PENDING,
    "confirmed": orders_pb2.ORDER_STATUS_CONFIRMED,
    "rejected": orders_pb2.ORDER_STATUS_REJECTED,
    "cancelled": orders_pb2.ORDER_STATUS_CANCELLED,
}


def order_event(order: Order, kind: str, version: int) -> events_pb2.EventEnvelope:
    """The order as the orders service publishes it: shares and campaign once settled."""
    settled = kind in ("confirmed", "cancelled")
    lines = [
        events_pb2.LineSnapshot(
            sku=line.sku,
            product_id=line.product,
            category_ids=line.categories,
            quantity=line.quantity,
            unit_price_minor=line.price,
            discount_minor=line.discount if settled else 0,
        )
        for line in order.lines
    ]
    subtotal = sum(line.quantity * line.price for line in order.lines)
    discount = sum(line.discount for line in order.lines) if settled else 0
    at = order.created + version * SECOND
    snapshot = events_pb2.OrderSnapshot(
        id=order.id,
        user_id=order.user,
        currency_code=order.currency,
        subtotal_minor=subtotal,
        discount_minor=discount,
        total_minor=subtotal - discount,
        promo_code_id=f"code-{order.campaign}" if settled and order.campaign else "",
        campaign_id=order.campaign if settled else "",
        status=_STATUS[kind],
        create_time=timestamp(order.created),
        update_time=timestamp(at),
        lines=lines,
    )
    payload: Any = {
        "created": events_pb2.OrderCreated,
        "confirmed": events_pb2.OrderConfirmed,
        "rejected": events_pb2.OrderRejected,
        "cancelled": events_pb2.OrderCancelled,
    }[kind](order=snapshot)
    return envelope(
        f"order_{kind}", payload, aggregate_type="order", aggregate_id=order.id,
        version=version, at=at,
    )  # fmt: skip


def order_events(order: Order) -> list[events_pb2.EventEnvelope]:
    events = [order_event(order, "created", 1)]
    if order.status in ("CONFIRMED", "CANCELLED"):
        events.append(order_event(order, "confirmed", 2))
    if order.status == "CANCELLED":
        events.append(order_event(order, "cancelled", 3))
    if order.status == "REJECTED":
        events.append(order_event(order, "rejected", 2))
    return events


# --- the truth ---------------------------------------------------------------------------------


def truth(
    orders: list[Order],
    start: datetime | None,
    end: datetime | None,
    grouping: int,
    limit: int = 0,
    currency: str = "",
    campaign: str = "",
) -> pb.ListDiscountCostsResponse:
    sums: dict[str, dict[str, list[Any]]] = {}
    for order in orders:
        if order.status != "CONFIRMED" or (campaign and order.campaign != campaign):
            continue
        if (start is not None and order.created < start) or (
            end is not None and order.created >= end
        ):
            continue
        for line in order.lines:
            if grouping == pb.DISCOUNT_COST_GROUPING_CATEGORY:
                keys = sorted(set(line.categories))
            else:
                keys = [line.product] if line.product else []
            for key in keys:
                entry = sums.setdefault(order.currency, {}).setdefault(key, [0, 0, 0, set()])
                entry[0] += line.discount
                entry[1] += line.quantity * line.price
                entry[2] += line.quantity
                entry[3].add(order.id)

    def entries(of: str) -> list[pb.DiscountCost]:
        ranked = sorted(
            ((k, v) for k, v in sums.get(of, {}).items() if v[0] > 0),
            key=lambda kv: (-kv[1][0], kv[0]),
        )
        return [
            pb.DiscountCost(
                key=key,
                discount=common_pb2.Money(currency_code=of, amount_minor=d),
                gross=common_pb2.Money(currency_code=of, amount_minor=g),
                units=u,
                orders=len(ids),
            )
            for key, (d, g, u, ids) in ranked[: limit or 10]
        ]

    present = sorted(c for c, keys in sums.items() if any(v[0] > 0 for v in keys.values()))
    if currency:
        return pb.ListDiscountCostsResponse(entries=entries(currency))
    if len(present) > 1:
        return pb.ListDiscountCostsResponse(
            per_currency=[
                pb.CurrencyDiscountCosts(currency_code=c, entries=entries(c)) for c in present
            ]
        )
    return pb.ListDiscountCostsResponse(entries=entries(present[0]) if present else [])


def request(
    start: datetime | None,
    end: datetime | None,
    grouping: int,
    limit: int = 0,
    currency: str = "",
    campaign: str = "",
) -> pb.ListDiscountCostsRequest:
    message = pb.ListDiscountCostsRequest(
        group_by=grouping, limit=limit, currency_code=currency, campaign_id=campaign
    )
    if start is not None or end is not None:
        message.time_range.CopyFrom(
            common_pb2.TimeRange(start_time=timestamp(start), end_time=timestamp(end))
        )
    return message


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
        text = clickhouse_query(
            self.stack.clickhouse_host, self.stack.clickhouse_port, sql.format(db=self.database)
        )
        return [line.split("\t") for line in text.splitlines()]


@pytest.fixture(scope="module")
def lines(stack: Stack) -> Iterator[Lines]:
    token = uuid.uuid4().hex[:10]
    database = f"e2e_lines_{token}"
    stream = f"t{token}.orders"
    client = redis.Redis(host=stack.redis_host, port=stack.redis_port)
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


RANGES = [
    (None, None),  # all time: FINAL
    (DAY, DAY + timedelta(days=1)),  # one day: argMax; edge-start in, edge-end out
    (DAY + timedelta(days=1) - SECOND, DAY + timedelta(days=1) + SECOND),  # two seconds
    (DAY - timedelta(days=120), DAY + timedelta(days=10)),  # long: FINAL
    (DAY + timedelta(hours=12), None),  # open end
    (DAY - timedelta(days=400), DAY - timedelta(days=300)),  # nothing
]
GROUPINGS = [
    pb.DISCOUNT_COST_GROUPING_UNSPECIFIED,
    pb.DISCOUNT_COST_GROUPING_PRODUCT,
    pb.DISCOUNT_COST_GROUPING_CATEGORY,
]


def _cases() -> list[tuple[datetime | None, datetime | None, int, int, str, str]]:
    cases = []
    for start, end in RANGES:
        for grouping in GROUPINGS:
            for currency in ("", "EUR", "USD", "GBP"):
                for campaign in ("", "k1", "k2", "k-unknown"):
                    cases.append((start, end, grouping, 0, currency, campaign))
            cases += [(start, end, grouping, 2, "", ""), (start, end, grouping, 1000, "EUR", "")]
    return cases


async def _compare(lines: Lines, orders: list[Order]) -> int:
    cases = _cases()
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
    # The whole comparison still holds with these orders in the data.
    lines.orders += mine
    await _compare(lines, lines.orders)
