"""GetCampaignStats over the wire, fed through the real pipeline (events -> Redis streams ->
sync-consumer -> ClickHouse 18.16 -> analytics), compared with the truth computed from the
very history the events describe; the campaign events are stored exactly once even when the
whole history is delivered twice. Reconcile compares every table, campaigns included, with the
MongoDB documents of that history (in the services' document shapes); the rebuild's loading,
derived filling and swap, fed the same history as the replays would publish it, give tables
that reconcile to zero and the same answers.

Two codes of one campaign (plus a code of another campaign and one of none, as noise), a
release, a cancelled order, a pending one, and a campaign update that lowers its max_uses.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from analytics_e2e import drop, service, wait_until_drained

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import analytics_pb2, analytics_pb2_grpc, common_pb2, events_pb2
from promo_libs.analytics_schema import TABLES
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD, TYPE_FIELD
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import ClickHouseSettings
from promo_libs.grpc.mapping import timestamp
from promo_reconcile import Difference, analytics_facts, differences, truth_facts
from sync_consumer import rebuild
from sync_consumer.adapters.clickhouse_sink import ClickHouseSink
from sync_consumer_testing import synthetic

DAY0 = datetime(2026, 1, 30, 10, 0, tzinfo=UTC)  # the history crosses a month partition
CAMPAIGN, OTHER = "camp-spring", "camp-other"
MAX_USES, BUDGET = 8, 5_000


@dataclass(frozen=True)
class Usage:
    usage_id: str
    code_id: str
    campaign_id: str
    user_id: str
    created: datetime
    discount: int
    released: datetime | None = None


@dataclass(frozen=True)
class Order:
    order_id: str
    code_id: str
    campaign_id: str
    user_id: str
    created: datetime
    subtotal: int
    discount: int
    status: str  # PENDING, CONFIRMED or CANCELLED


def day(n: int, hours: int = 0) -> datetime:
    return DAY0 + timedelta(days=n, hours=hours)


CODES = {"p1": CAMPAIGN, "p2": CAMPAIGN, "p3": "", "p4": OTHER}
USAGES = [
    Usage("u1", "p1", CAMPAIGN, "alice", day(0), 100),
    Usage("u2", "p2", CAMPAIGN, "bob", day(1), 200),
    Usage("u3", "p1", CAMPAIGN, "alice", day(2), 150, released=day(3)),  # its order cancelled
    Usage("u4", "p2", CAMPAIGN, "carol", day(4), 50),  # its order still pending
    Usage("u5", "p4", OTHER, "dave", day(1), 300),
    Usage("u6", "p3", "", "bob", day(2), 70),
]
ORDERS = [
    Order("u1", "p1", CAMPAIGN, "alice", day(0), 1_000, 100, "CONFIRMED"),
    Order("u2", "p2", CAMPAIGN, "bob", day(1), 2_000, 200, "CONFIRMED"),
    Order("u3", "p1", CAMPAIGN, "alice", day(2), 1_500, 150, "CANCELLED"),
    Order("u4", "p2", CAMPAIGN, "carol", day(4), 500, 50, "PENDING"),
    Order("u5", "p4", OTHER, "dave", day(1), 3_000, 300, "CONFIRMED"),
    Order("u6", "p3", "", "bob", day(2), 700, 70, "CONFIRMED"),
]


def events() -> list[tuple[str, events_pb2.EventEnvelope]]:
    """The history as producers publish it, in order, with the stream each goes to."""
    out: list[tuple[str, events_pb2.EventEnvelope]] = []
    for cid, limits in ((CAMPAIGN, {"max_uses": 10, "budget_minor": BUDGET}), (OTHER, {})):
        snapshot = synthetic.campaign(cid, DAY0 - timedelta(days=1), **limits)
        out.append(
            ("promo_codes", synthetic.campaign_event("created", snapshot, version=1, at=DAY0))
        )
    lowered = synthetic.campaign(
        CAMPAIGN, DAY0 - timedelta(days=1), max_uses=MAX_USES, budget_minor=BUDGET
    )
    out.append(("promo_codes", synthetic.campaign_event("updated", lowered, version=2, at=day(1))))
    for code_id, cid in CODES.items():
        out.append(("promo_codes", synthetic.promo_code_created(code_id, DAY0, campaign_id=cid)))
    for u in USAGES:
        common = {"amount": 1_000, "discount": u.discount, "campaign_id": u.campaign_id}
        out.append(
            (
                "promo_codes",
                synthetic.usage_event(
                    "redeemed", u.usage_id, u.code_id, u.user_id, u.created, version=1, **common
                ),
            )
        )
    for o in ORDERS:
        # A pending order names no code yet: the confirmation (or cancellation) applies it.
        out.append(
            (
                "orders",
                synthetic.order_event(
                    "created", o.order_id, o.user_id, o.created, subtotal=o.subtotal, version=1
                ),
            )
        )
        if o.status != "PENDING":
            kind = "confirmed" if o.status == "CONFIRMED" else "cancelled"
            out.append(
                (
                    "orders",
                    synthetic.order_event(
                        kind,
                        o.order_id,
                        o.user_id,
                        o.created,
                        subtotal=o.subtotal,
                        discount=o.discount,
                        code_id=o.code_id,
                        campaign_id=o.campaign_id,
                        version=2,
                    ),
                )
            )
    for u in USAGES:
        if u.released is not None:
            released = synthetic.usage_event(
                "released",
                u.usage_id,
                u.code_id,
                u.user_id,
                u.created,
                amount=1_000,
                discount=u.discount,
                version=2,
                campaign_id=u.campaign_id,
            )
            released.promo_code_released.usage.release_time.CopyFrom(timestamp(u.released))
            out.append(("promo_codes", released))
    return out


def inside(moment: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    return (
        moment is not None and (start is None or moment >= start) and (end is None or moment < end)
    )


def truth(
    campaign_id: str, start: datetime | None, end: datetime | None
) -> analytics_pb2.CampaignStats:
    """The answer computed from the history itself (all in EUR)."""
    mine = [u for u in USAGES if u.campaign_id == campaign_id]
    created = [u for u in mine if inside(u.created, start, end)]
    active_now = [u for u in mine if u.released is None]
    confirmed = [
        o
        for o in ORDERS
        if o.campaign_id == campaign_id
        and o.status == "CONFIRMED"
        and inside(o.created, start, end)
    ]
    eur = "EUR"
    stats = analytics_pb2.CampaignStats(
        campaign_id=campaign_id,
        display_name=f"Campaign {campaign_id}",
        codes=sum(c == campaign_id for c in CODES.values()),
        redemptions=len(created),
        releases=sum(inside(u.released, start, end) for u in mine),
        unique_users=len({u.user_id for u in created}),
        discount_cost=common_pb2.Money(
            currency_code=eur, amount_minor=sum(u.discount for u in created if u.released is None)
        ),
        orders=len(confirmed),
        revenue=common_pb2.Money(
            currency_code=eur, amount_minor=sum(o.subtotal - o.discount for o in confirmed)
        ),
    )
    if campaign_id == CAMPAIGN:  # the other campaign has no limits: both stay unset
        stats.remaining_uses = MAX_USES - len(active_now)
        stats.remaining_budget.CopyFrom(
            common_pb2.Money(
                currency_code=eur, amount_minor=BUDGET - sum(u.discount for u in active_now)
            )
        )
    return stats


def millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def documents() -> dict[str, list[dict[str, Any]]]:
    """The history as the services' MongoDB documents hold it (the fields reconcile reads)."""
    limits = {CAMPAIGN: (MAX_USES, BUDGET, "EUR"), OTHER: (None, None, None)}
    return {
        "campaigns": [
            {
                "_id": cid,
                "version": 2 if cid == CAMPAIGN else 1,
                "rules": {
                    "display_name": f"Campaign {cid}",
                    "max_uses": max_uses,
                    "max_uses_per_user": None,
                    "budget": budget,
                    "currency": currency,
                },
            }
            for cid, (max_uses, budget, currency) in limits.items()
        ],
        "codes": [
            {
                "_id": code_id,
                "code": f"CODE-{code_id}".upper(),
                "campaign_id": cid,
                "rules": {"active": True, "discount_type": "PERCENTAGE"},
            }
            for code_id, cid in CODES.items()
        ],
        "usages": [
            {
                "_id": u.usage_id,
                "promo_id": u.code_id,
                "code": f"CODE-{u.code_id}".upper(),
                "campaign_id": u.campaign_id,
                "user_id": u.user_id,
                "currency": "EUR",
                "created_at": millis(u.created),
                "discount": u.discount,
                "order_amount": 1_000,
                "status": "ACTIVE" if u.released is None else "RELEASED",
                **({} if u.released is None else {"release": {"at": millis(u.released)}}),
            }
            for u in USAGES
        ],
        "orders": [
            {
                "_id": o.order_id,
                "user_id": o.user_id,
                "currency": "EUR",
                "status": o.status,
                "created_at": millis(o.created),
                "subtotal_minor": o.subtotal,
                # A pending order has no code applied yet, hence no discount and no campaign.
                **(
                    {}
                    if o.status == "PENDING"
                    else {
                        "discount_minor": o.discount,
                        "promo_code_id": o.code_id,
                        "campaign_id": o.campaign_id,
                    }
                ),
            }
            for o in ORDERS
        ],
    }


def settings_of(stack: Stack, database: str) -> ClickHouseSettings:
    return stack.clickhouse_settings(database)


async def reconcile(
    stack: Stack, database: str, docs: dict[str, list[dict[str, Any]]]
) -> list[Difference]:
    """reconcile's own comparison of every table with these documents."""
    truth = truth_facts(
        [], docs["codes"], docs["usages"], docs["orders"], campaigns=docs["campaigns"]
    )
    clickhouse = ClickHouse(settings_of(stack, database))
    try:
        return differences(truth, await analytics_facts(clickhouse))
    finally:
        await clickhouse.close()


@dataclass
class Served:
    analytics: ServiceProcess
    database: str


@pytest.fixture(scope="module")
def served(stack: Stack) -> Iterator[Served]:
    token = uuid.uuid4().hex[:10]
    database = f"e2e_campaigns_{token}"
    streams = {kind: f"promo.events.t{token}.{kind}" for kind in ("users", "promo_codes", "orders")}
    client = redis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    consumer = service(
        stack,
        "sync-consumer",
        [sys.executable, "-m", "sync_consumer"],
        {
            "CLICKHOUSE_DATABASE": database,
            "STREAMS": ",".join(streams.values()),
            "CONSUMER_NAME": f"sync-{token}",
            "BATCH_SIZE": "7",  # several batches, and the redelivery below spans them
            "BATCH_WAIT_MS": "50",
        },
    )
    analytics = service(
        stack,
        "analytics",
        [sys.executable, "-m", "analytics_service"],
        {"CLICKHOUSE_DATABASE": database},
    )
    try:
        consumer.start_and_wait()
        # Everything twice, the second time at new stream positions with the same event ids
        # (a relay publishing again after a crash), after the first was stored: stored once.
        history = events()
        for _ in range(2):
            for kind, event in history:
                client.xadd(
                    streams[kind],
                    {
                        EVENT_ID_FIELD: event.event_id,
                        TYPE_FIELD: event.type,
                        ENVELOPE_FIELD: event.SerializeToString(),
                    },
                )
            wait_until_drained(client, streams.values(), "sync-consumer", timeout=60)
        analytics.start_and_wait()
        yield Served(analytics, database)
    finally:
        analytics.terminate()
        consumer.terminate()
        client.delete(*streams.values(), *(f"{s}.dead-letter" for s in streams.values()))
        client.close()
        drop(stack, database)


def query(stack: Stack, sql: str) -> list[list[str]]:
    text = stack.clickhouse_query(sql)
    return [line.split("\t") for line in text.splitlines()]


def test_campaign_events_and_campaign_ids_are_stored_exactly_once(
    stack: Stack, served: Served
) -> None:
    db = served.database
    # No (entity, version) twice, although every event was delivered twice.
    for table, key in (
        ("campaigns", "campaign_id"),
        ("promo_codes", "promo_code_id"),
        ("promo_code_usages_analytics", "usage_id"),
        ("orders_analytics", "order_id"),
    ):
        ((rows, distinct),) = query(
            stack, f"SELECT count(), uniqExact({key}, version) FROM {db}.{table}"
        )
        assert rows == distinct, table
    assert query(
        stack,
        f"SELECT campaign_id, argMax(max_uses, version), argMax(has_budget, version),"
        f" argMax(budget_minor, version), argMax(has_max_uses_per_user, version)"
        f" FROM {db}.campaigns GROUP BY campaign_id ORDER BY campaign_id",
    ) == [[OTHER, "0", "0", "0", "0"], [CAMPAIGN, str(MAX_USES), "1", str(BUDGET), "0"]]
    assert query(
        stack,
        f"SELECT usage_id, campaign_id FROM {db}.promo_code_usages_analytics FINAL"
        " ORDER BY usage_id",
    ) == [[u.usage_id, u.campaign_id] for u in sorted(USAGES, key=lambda u: u.usage_id)]
    assert query(
        stack, f"SELECT order_id, campaign_id FROM {db}.orders_analytics FINAL ORDER BY order_id"
    ) == [
        [o.order_id, o.campaign_id if o.status != "PENDING" else ""]
        for o in sorted(ORDERS, key=lambda o: o.order_id)
    ]


RANGES = [
    (None, None),
    (day(1), day(4)),  # from the second usage up to before the pending order
    (day(0, 12), day(3, 1)),  # partial days at both edges, the release inside
    (day(3, 1), None),  # after the release: only the pending order's usage
    (day(10), day(11)),  # nothing in it: zeros, the limits still from all time
]


@pytest.mark.parametrize("campaign_id", [CAMPAIGN, OTHER])
async def test_campaign_stats_equal_the_truth_over_ranges(served: Served, campaign_id: str) -> None:
    async with served.analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        for start, end in RANGES:
            request = analytics_pb2.GetCampaignStatsRequest(campaign_id=campaign_id)
            if start is not None or end is not None:
                request.time_range.CopyFrom(
                    common_pb2.TimeRange(start_time=timestamp(start), end_time=timestamp(end))
                )
            answer = await stub.GetCampaignStats(request, timeout=10)
            expected = truth(campaign_id, start, end)
            if not expected.redemptions and not expected.orders and not expected.releases:
                # Nothing selects a currency: amounts are zero with an empty currency.
                expected.discount_cost.currency_code = ""
                expected.revenue.currency_code = ""
            assert answer == expected, (start, end)
            asked = analytics_pb2.GetCampaignStatsRequest()
            asked.CopyFrom(request)
            asked.currency_code = "EUR"
            in_eur = await stub.GetCampaignStats(asked, timeout=10)
            assert in_eur.redemptions == expected.redemptions
            assert in_eur.revenue.currency_code == "EUR"


async def test_the_campaign_truth_has_the_cases_it_is_about(served: Served) -> None:
    # Guards the comparison above: a release, a cancelled and a pending order in the campaign.
    assert any(u.released for u in USAGES if u.campaign_id == CAMPAIGN)
    assert {o.status for o in ORDERS if o.campaign_id == CAMPAIGN} == {
        "CONFIRMED",
        "CANCELLED",
        "PENDING",
    }
    assert len({u.code_id for u in USAGES if u.campaign_id == CAMPAIGN}) == 2


async def answers(served: Served) -> list[analytics_pb2.CampaignStats]:
    async with served.analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        out = []
        for campaign_id in (CAMPAIGN, OTHER):
            for start, end in RANGES:
                request = analytics_pb2.GetCampaignStatsRequest(campaign_id=campaign_id)
                request.time_range.CopyFrom(
                    common_pb2.TimeRange(start_time=timestamp(start), end_time=timestamp(end))
                )
                out.append(await stub.GetCampaignStats(request, timeout=10))
        return out


async def test_reconcile_agrees_including_campaigns_and_sees_a_wrong_one(
    stack: Stack, served: Served
) -> None:
    docs = documents()
    assert await reconcile(stack, served.database, docs) == []
    # The comparison is not vacuous: a campaign limit, a code's campaign, a usage's campaign
    # that MongoDB states otherwise are each reported.
    docs["campaigns"][0]["rules"]["max_uses"] = MAX_USES + 1
    docs["codes"][0]["campaign_id"] = OTHER
    docs["usages"][0]["campaign_id"] = ""
    found = {d.fact for d in await reconcile(stack, served.database, docs)}
    assert {"campaigns", "campaign codes", "usages by campaign"} <= found


async def test_rebuild_swaps_in_tables_that_reconcile_and_answer_the_same(
    stack: Stack, served: Served
) -> None:
    before = await answers(served)
    db = served.database
    clickhouse = ClickHouse(settings_of(stack, db))
    client = clickhouse.connect()
    bus = aioredis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    token = uuid.uuid4().hex[:8]
    try:
        await rebuild.drop_tables(client, db, rebuild.REBUILD)
        for table in TABLES:
            await client.execute(f"CREATE TABLE {db}.{table}{rebuild.REBUILD} AS {db}.{table}")
        # What the replays publish: each document's current state once, at its version.
        latest: dict[tuple[str, str], tuple[str, events_pb2.EventEnvelope]] = {}
        for kind, event in events():
            latest[(event.aggregate_type, event.aggregate_id)] = (kind, event)
        sink = ClickHouseSink(client, db)
        for kind in ("promo_codes", "orders"):
            stream = f"promo.rebuild.t{token}.{kind}"
            for event_kind, event in latest.values():
                if event_kind == kind:
                    await bus.xadd(stream, {ENVELOPE_FIELD: event.SerializeToString()})
            try:
                await rebuild.load_stream(bus, sink, stream, f"live.{kind}", (1, 0), 4)
            finally:
                await bus.delete(stream)
        await rebuild.fill_derived(client, db)
        await rebuild.swap(client, db)
        campaigns = await client.fetchval(f"SELECT count() FROM {db}.campaigns")
    finally:
        await bus.aclose()
        await clickhouse.close()
    assert campaigns == 2  # one row per campaign, at its current version
    assert await reconcile(stack, db, documents()) == []
    assert await answers(served) == before
