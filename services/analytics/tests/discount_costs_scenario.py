"""Carts with lines for the ListDiscountCosts tests, their events, and the truth of every
ListDiscountCosts answer computed in plain Python from them.

Used by the end-to-end test (real sync-consumer and analytics over ClickHouse 18.16) and the
chdb test (the same SQL on current ClickHouse).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from promo.v1 import analytics_pb2 as pb
from promo.v1 import common_pb2, events_pb2, orders_pb2
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


RANGES = [
    (None, None),  # all time: FINAL
    (DAY, DAY + timedelta(days=1)),  # one day: argMax; edge-start in, edge-end out
    (DAY + timedelta(days=1) - SECOND, DAY + timedelta(days=1) + SECOND),  # two seconds
    (DAY - timedelta(days=120), DAY + timedelta(days=10)),  # long: FINAL
    (DAY + timedelta(hours=12), None),  # open end
    # Partial days at both edges, whole days of two partial months, two whole months: raw
    # lines, line_costs_daily and line_costs_monthly in one answer.
    (DAY - timedelta(days=70, hours=5), DAY + timedelta(days=1, hours=13)),
    (DAY - timedelta(days=400), DAY - timedelta(days=300)),  # nothing
]
GROUPINGS = [
    pb.DISCOUNT_COST_GROUPING_UNSPECIFIED,
    pb.DISCOUNT_COST_GROUPING_PRODUCT,
    pb.DISCOUNT_COST_GROUPING_CATEGORY,
]


def all_cases() -> list[tuple[datetime | None, datetime | None, int, int, str, str]]:
    cases = []
    for start, end in RANGES:
        for grouping in GROUPINGS:
            for currency in ("", "EUR", "USD", "GBP"):
                for campaign in ("", "k1", "k2", "k-unknown"):
                    cases.append((start, end, grouping, 0, currency, campaign))
            cases += [(start, end, grouping, 2, "", ""), (start, end, grouping, 1000, "EUR", "")]
    return cases
