"""A random but reproducible shop history, its events, and every analytics answer computed in
plain Python from it (the truth the service is compared with).

Used by the integration (ClickHouse 18.16), chdb (current ClickHouse) and end-to-end tests.
Events are the envelopes producers publish; rows are what sync-consumer's own mapper writes.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics_service.domain import rules
from analytics_service.domain.model import Granularity
from promo.v1 import analytics_pb2, common_pb2, events_pb2, orders_pb2, promo_codes_pb2
from promo_libs.bus import ENVELOPE_FIELD
from promo_libs.grpc.mapping import timestamp
from sync_consumer.adapters.event_rows import rows_for
from sync_consumer.domain.model import StreamEntry
from sync_consumer_testing.synthetic import envelope

DAY0 = datetime(2024, 2, 26, tzinfo=UTC)  # a Monday; the history crosses 29 Feb -> 1 Mar
DAYS = 5
MAX_SERIES_BUCKETS = 1000
HISTORY_DAYS = 120  # the sparse part of the history, before DAY0: October to February
SECOND = timedelta(seconds=1)


@dataclass
class Code:
    id: str
    code: str
    currency: str
    max_uses: int | None = None
    budget: int | None = None
    basis_points: int = 1000
    campaign: str = ""  # the campaign's id, "" none; a code's campaign never changes


@dataclass
class Campaign:
    id: str
    max_uses: int | None = None
    budget: int | None = None  # in EUR
    first_max_uses: int | None = None  # set: created with it, then updated to max_uses

    @property
    def name(self) -> str:
        return f"Campaign {self.id}"


@dataclass
class Order:
    id: str
    user: str
    currency: str
    subtotal: int
    created: datetime
    code: Code | None = None
    outcome: str = "CONFIRMED"  # PENDING, CONFIRMED, REJECTED
    cancelled_at: datetime | None = None
    discount: int = 0

    @property
    def status(self) -> str:
        return "CANCELLED" if self.cancelled_at else self.outcome

    @property
    def total(self) -> int:
        return self.subtotal - self.discount

    @property
    def redeemed(self) -> bool:
        return self.code is not None and self.outcome == "CONFIRMED"

    @property
    def usage_created(self) -> datetime:
        return self.created + SECOND


@dataclass
class Scenario:
    users: list[str]
    codes: list[Code]
    orders: list[Order] = field(default_factory=list)
    campaigns: list[Campaign] = field(default_factory=list)

    # --- generation ---------------------------------------------------------------------------

    @classmethod
    def generate(cls, seed: int = 7, orders: int = 160) -> Scenario:
        rnd = random.Random(seed)
        users = [f"u{n:02d}" for n in range(1, 13)]
        # k1: two EUR codes, both limits (max_uses lowered by an update); k2: an EUR and a USD
        # code, no limits (CURRENCY_REQUIRED without a currency); k3: a code never used.
        codes = [
            Code("c1", "SPRING-10", "EUR", max_uses=40, campaign="k1"),
            Code("c2", "BUDGET-5", "EUR", budget=50_000, basis_points=500, campaign="k1"),
            Code("c3", "PLAIN", "EUR", campaign="k2"),
            Code("c4", "BOTH", "EUR", max_uses=1000, budget=1_000_000, basis_points=1500),
            Code("c5", "DOLLAR", "USD", max_uses=500, campaign="k2"),
            Code("c6", "NEVER-USED", "EUR", max_uses=5, budget=100, campaign="k3"),
        ]
        campaigns = [
            Campaign("k1", max_uses=70, budget=300_000, first_max_uses=90),
            Campaign("k2"),
            Campaign("k3", max_uses=3),
        ]
        scenario = cls(users, codes, campaigns=campaigns)
        # Edge cases at midnight UTC: the last second of a day and the first of the next.
        times = [DAY0 + timedelta(days=1) - SECOND, DAY0 + timedelta(days=1), DAY0]
        times += [DAY0 + timedelta(seconds=rnd.randrange(DAYS * 86400)) for _ in range(orders - 3)]
        # A sparser history over the months before: every batch of the pipeline spans several
        # month partitions, and long ranges read many of them.
        times += [
            DAY0 - timedelta(seconds=rnd.randrange(1, HISTORY_DAYS * 86400))
            for _ in range(orders // 3)
        ]
        for n, created in enumerate(sorted(times)):
            user = rnd.choice(users)
            currency = "USD" if user in ("u11", "u12") else "EUR"
            usable = [c for c in codes[:5] if c.currency == currency]
            code = rnd.choice(usable) if rnd.random() < 0.65 else None
            outcome = rnd.choices(["CONFIRMED", "REJECTED", "PENDING"], [85, 10, 5])[0]
            order = Order(
                f"o{n:04d}", user, currency, rnd.randrange(500, 50_000), created, code, outcome
            )
            if order.redeemed and code is not None:
                order.discount = order.subtotal * code.basis_points // 10_000
            if outcome == "CONFIRMED" and rnd.random() < 0.25:
                order.cancelled_at = created + timedelta(minutes=rnd.randrange(30, 36 * 60))
            scenario.orders.append(order)
        return scenario

    # --- events and rows ----------------------------------------------------------------------

    def events(self) -> Iterator[tuple[str, events_pb2.EventEnvelope]]:
        """(stream kind, envelope) in the order producers write them."""
        for user in self.users:
            yield "users", _user_created(user)
        for campaign in self.campaigns:
            yield from (("promo_codes", e) for e in _campaign_events(campaign))
        for code in self.codes:
            yield "promo_codes", _code_created(code)
        cancels: list[tuple[datetime, Order]] = []
        for order in self.orders:
            yield "orders", _order_event(order, "created", 1)
            if order.redeemed:
                yield "promo_codes", _usage_event(order, released=False)
            if order.outcome == "CONFIRMED":
                yield "orders", _order_event(order, "confirmed", 2)
            elif order.outcome == "REJECTED":
                yield "orders", _order_event(order, "rejected", 2)
            if order.cancelled_at:
                cancels.append((order.cancelled_at, order))
        for _, order in sorted(cancels, key=lambda c: (c[0], c[1].id)):
            yield "orders", _order_event(order, "cancelled", 3)
            if order.code is not None:
                yield "promo_codes", _usage_event(order, released=True)

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        """The rows sync-consumer writes for these events, per table."""
        tables: dict[str, list[dict[str, Any]]] = {}
        for n, (kind, event) in enumerate(self.events(), start=1):
            entry = StreamEntry(kind, f"{n}-0", {ENVELOPE_FIELD: event.SerializeToString()})
            for table_row in rows_for(entry):
                tables.setdefault(table_row.table, []).append(table_row.row)
        return tables

    def event_counts(self) -> dict[str, int]:
        """Rows per event table once every event has landed."""
        return {table: len(rows) for table, rows in self.rows().items()}

    # --- the truth ------------------------------------------------------------------------------

    def usages(self) -> list[Order]:
        return [o for o in self.orders if o.redeemed]

    @staticmethod
    def _currency(requested: str, present: set[str]) -> str | None:
        """The chosen currency, or None for CURRENCY_REQUIRED."""
        if requested:
            return requested
        if len(present) > 1:
            return None
        return next(iter(present), "")

    def code_stats(
        self, code: Code, start: datetime | None, end: datetime | None, currency: str
    ) -> analytics_pb2.PromoCodeStats | str:
        inside = _between(start, end)
        usages = [o for o in self.usages() if o.code is code and inside(o.usage_created)]
        releases = [
            o for o in self.usages() if o.code is code and o.cancelled_at and inside(o.cancelled_at)
        ]
        orders = [
            o
            for o in self.orders
            if o.code is code and o.status == "CONFIRMED" and inside(o.created)
        ]
        chosen = self._currency(currency, {o.currency for o in usages + releases + orders})
        if chosen is None:
            return "CURRENCY_REQUIRED"
        usages = [o for o in usages if o.currency == chosen]
        releases = [o for o in releases if o.currency == chosen]
        orders = [o for o in orders if o.currency == chosen]
        active = [o for o in self.usages() if o.code is code and not o.cancelled_at]
        revenue = sum(o.total for o in orders)
        stats = analytics_pb2.PromoCodeStats(
            promo_code_id=code.id,
            code=code.code,
            redemptions=len(usages),
            releases=len(releases),
            unique_users=len({o.user for o in usages}),
            total_discount=_money(chosen, sum(o.discount for o in usages if not o.cancelled_at)),
            orders=len(orders),
            revenue=_money(chosen, revenue),
            average_order_value=_money(chosen, revenue // len(orders) if orders else 0),
        )
        if code.max_uses is not None:
            stats.remaining_uses = code.max_uses - len(active)
        if code.budget is not None:
            stats.remaining_budget.CopyFrom(
                _money(code.currency, code.budget - sum(o.discount for o in active))
            )
        return stats

    def campaign_stats(
        self, campaign: Campaign, start: datetime | None, end: datetime | None, currency: str
    ) -> analytics_pb2.CampaignStats | str:
        inside = _between(start, end)
        codes = [c for c in self.codes if c.campaign == campaign.id]
        mine = [o for o in self.usages() if o.code in codes]
        usages = [o for o in mine if inside(o.usage_created)]
        releases = [o for o in mine if o.cancelled_at and inside(o.cancelled_at)]
        orders = [
            o
            for o in self.orders
            if o.code in codes and o.status == "CONFIRMED" and inside(o.created)
        ]
        chosen = self._currency(currency, {o.currency for o in usages + releases + orders})
        if chosen is None:
            return "CURRENCY_REQUIRED"
        usages = [o for o in usages if o.currency == chosen]
        releases = [o for o in releases if o.currency == chosen]
        orders = [o for o in orders if o.currency == chosen]
        active = [o for o in mine if not o.cancelled_at]
        stats = analytics_pb2.CampaignStats(
            campaign_id=campaign.id,
            display_name=campaign.name,
            codes=len(codes),
            redemptions=len(usages),
            releases=len(releases),
            unique_users=len({o.user for o in usages}),
            discount_cost=_money(chosen, sum(o.discount for o in usages if not o.cancelled_at)),
            orders=len(orders),
            revenue=_money(chosen, sum(o.total for o in orders)),
        )
        if campaign.max_uses is not None:  # against its active uses in every currency
            stats.remaining_uses = campaign.max_uses - len(active)
        if campaign.budget is not None:
            granted = sum(o.discount for o in active if o.currency == "EUR")
            stats.remaining_budget.CopyFrom(_money("EUR", campaign.budget - granted))
        return stats

    def top(
        self, start: datetime | None, end: datetime | None, ranking: str, limit: int, currency: str
    ) -> analytics_pb2.ListTopPromoCodesResponse | str:
        inside = _between(start, end)
        present = {o.currency for o in self.usages() if inside(o.usage_created)}
        present |= {o.currency for o in self.usages() if o.cancelled_at and inside(o.cancelled_at)}
        present |= {
            o.currency
            for o in self.orders
            if o.code and o.status == "CONFIRMED" and inside(o.created)
        }
        chosen = self._currency(currency, present)
        if chosen is None:  # several currencies, none asked for: one list per currency
            response = analytics_pb2.ListTopPromoCodesResponse()
            for one in sorted(present):
                alone = self.top(start, end, ranking, limit, one)
                assert not isinstance(alone, str)
                response.per_currency.add(currency_code=one, entries=alone.entries)
            return response
        entries = []
        for code in self.codes:
            stats = self.code_stats(code, start, end, chosen)
            assert not isinstance(stats, str)
            if stats.redemptions or stats.releases or stats.orders:
                entries.append(stats)
        measure: Callable[[analytics_pb2.PromoCodeStats], int] = {
            "redemptions": lambda s: s.redemptions,
            "discount": lambda s: s.total_discount.amount_minor,
            "revenue": lambda s: s.revenue.amount_minor,
        }[ranking]
        entries.sort(key=lambda s: (-measure(s), s.code))
        return analytics_pb2.ListTopPromoCodesResponse(entries=entries[:limit])

    def user_stats(
        self, user: str, start: datetime | None, end: datetime | None, currency: str
    ) -> analytics_pb2.UserStats | str:
        inside = _between(start, end)
        orders = [o for o in self.orders if o.user == user and inside(o.created)]
        usages = [o for o in self.usages() if o.user == user and inside(o.usage_created)]
        chosen = self._currency(currency, {o.currency for o in orders + usages})
        if chosen is None:
            return "CURRENCY_REQUIRED"
        orders = [o for o in orders if o.currency == chosen]
        usages = [o for o in usages if o.currency == chosen]
        confirmed = [o for o in orders if o.status == "CONFIRMED"]
        return analytics_pb2.UserStats(
            user_id=user,
            orders=len(orders),
            confirmed_orders=len(confirmed),
            revenue=_money(chosen, sum(o.total for o in confirmed)),
            discount=_money(chosen, sum(o.discount for o in confirmed)),
            redemptions=len(usages),
            codes_used=len({o.code.id for o in usages if o.code}),
            codes=sorted({o.code.code for o in usages if o.code}),
        )

    def series(
        self,
        start: datetime,
        end: datetime,
        granularity: Granularity,
        code: Code | None,
        currency: str,
    ) -> analytics_pb2.GetOrdersTimeSeriesResponse | str:
        buckets, bucket = 0, _floor(start, granularity)
        while bucket < end:
            buckets, bucket = buckets + 1, _advance(bucket, granularity)
        if buckets > MAX_SERIES_BUCKETS:  # the contract's limit, checked before any data
            return "RANGE_TOO_LARGE"
        inside = _between(start, end)
        # An order carries its code's id once settled (a pending one has only the code text).
        orders = [
            o
            for o in self.orders
            if inside(o.created) and (code is None or (o.code is code and o.status != "PENDING"))
        ]
        chosen = self._currency(currency, {o.currency for o in orders})
        if chosen is None:  # several currencies, none asked for: one series per currency
            several = analytics_pb2.GetOrdersTimeSeriesResponse()
            for one in sorted({o.currency for o in orders}):
                alone = self.series(start, end, granularity, code, one)
                assert not isinstance(alone, str)
                several.per_currency.add(currency_code=one, points=alone.points)
            return several
        orders = [o for o in orders if o.currency == chosen]
        # Buckets by walking the calendar, independently of the service's arithmetic.
        response = analytics_pb2.GetOrdersTimeSeriesResponse()
        bucket = _floor(start, granularity)
        while bucket < end:
            following = _advance(bucket, granularity)
            mine = [o for o in orders if bucket <= o.created < following]
            confirmed = [o for o in mine if o.status == "CONFIRMED"]
            response.points.add(
                bucket_start=timestamp(bucket),
                orders=len(mine),
                confirmed_orders=len(confirmed),
                revenue=_money(chosen, sum(o.total for o in confirmed)),
                discount=_money(chosen, sum(o.discount for o in confirmed)),
            )
            bucket = following
        return response

    def overview(
        self, start: datetime | None, end: datetime | None, currency: str
    ) -> analytics_pb2.Overview | str:
        inside = _between(start, end)
        orders = [o for o in self.orders if inside(o.created)]
        usages = [o for o in self.usages() if inside(o.usage_created)]
        releases = [o for o in self.usages() if o.cancelled_at and inside(o.cancelled_at)]
        present = {o.currency for o in orders + usages + releases}
        chosen = self._currency(currency, present)
        if chosen is None:  # several currencies, none asked for: one overview per currency
            per_currency = []
            for one in sorted(present):
                alone = self.overview(start, end, one)
                assert not isinstance(alone, str)
                per_currency.append(alone)
            return analytics_pb2.Overview(per_currency=per_currency)
        orders = [o for o in orders if o.currency == chosen]
        usages = [o for o in usages if o.currency == chosen]
        releases = [o for o in releases if o.currency == chosen]
        confirmed = [o for o in orders if o.status == "CONFIRMED"]
        revenue = sum(o.total for o in confirmed)
        return analytics_pb2.Overview(
            orders=len(orders),
            confirmed_orders=len(confirmed),
            rejected_orders=sum(o.status == "REJECTED" for o in orders),
            cancelled_orders=sum(o.status == "CANCELLED" for o in orders),
            revenue=_money(chosen, revenue),
            discount=_money(chosen, sum(o.discount for o in confirmed)),
            average_order_value=_money(chosen, revenue // len(confirmed) if confirmed else 0),
            redemptions=len(usages),
            releases=len(releases),
            active_users=len({o.user for o in orders}),
            active_codes=len({o.code.id for o in usages if o.code}),
        )


# --- comparison plan -------------------------------------------------------------------------

RANGES: list[tuple[datetime | None, datetime | None]] = [
    (None, None),  # all time
    (DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)),  # one day, midnight to midnight
    (DAY0 + timedelta(hours=13, minutes=7), DAY0 + timedelta(days=3, hours=2)),
    (DAY0 + timedelta(days=3), None),  # open end
    (None, DAY0 + timedelta(days=1)),  # open start, ends exactly at midnight
    (DAY0 - timedelta(days=90), DAY0 + timedelta(days=DAYS)),  # 95 days, over four months
    (DAY0 - timedelta(days=61, hours=7), DAY0 - timedelta(days=20)),  # 41 days, in the past
    (DAY0 - timedelta(days=300), DAY0 - timedelta(days=200)),  # before any data: empty
    # Mid-December to 28 February: partial days, whole days of December and February, and
    # January from the monthly rollups.
    (DAY0 - timedelta(days=75, hours=5), DAY0 + timedelta(days=2, hours=7)),
    # 31 December to 1 March exactly: whole January and February, one whole day before.
    (DAY0 - timedelta(days=57), DAY0 + timedelta(days=4)),
]


SERIES_RANGES: list[tuple[datetime, datetime]] = [
    (DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)),
    (DAY0 + timedelta(hours=13, minutes=7), DAY0 + timedelta(days=3, hours=2)),
    (DAY0 - timedelta(hours=5), DAY0 + timedelta(days=DAYS, hours=3)),
    (DAY0 - timedelta(days=30), DAY0 - timedelta(days=1)),
    # Months, weeks and days across month boundaries, with partial edges (31 days: hourly
    # buckets stay under the limit).
    (DAY0 - timedelta(days=29, hours=5), DAY0 + timedelta(days=2, hours=7)),
    (DAY0 - timedelta(days=75, hours=5), DAY0 + timedelta(days=2, hours=7)),
    # Over the whole history: hourly buckets exceed the limit (RANGE_TOO_LARGE).
    (DAY0 - timedelta(days=HISTORY_DAYS + 3), DAY0 + timedelta(days=DAYS)),
]

# A call of one AnalyticsService method by name: the response, or the error's reason.
Call = Callable[[str, Any], Awaitable[Any]]


Case = tuple[str, Any, Any]  # method, request, expected answer (or error reason)


def plan(scenario: Scenario) -> list[Case]:
    """Every question of the comparison, with the truth's answer."""
    cases: list[Case] = []
    rankings = {
        "redemptions": analytics_pb2.PROMO_CODE_RANKING_REDEMPTIONS,
        "discount": analytics_pb2.PROMO_CODE_RANKING_DISCOUNT,
        "revenue": analytics_pb2.PROMO_CODE_RANKING_REVENUE,
    }
    for start, end in RANGES:
        tr = time_range(start, end)
        for currency in ("", "EUR", "USD"):
            cases.append(
                (
                    "GetOverview",
                    analytics_pb2.GetOverviewRequest(time_range=tr, currency_code=currency),
                    scenario.overview(start, end, currency),
                )
            )
            for user in [*scenario.users, "nobody"]:
                cases.append(
                    (
                        "GetUserStats",
                        analytics_pb2.GetUserStatsRequest(
                            user_id=user, time_range=tr, currency_code=currency
                        ),
                        scenario.user_stats(user, start, end, currency),
                    )
                )
            for n, code in enumerate(scenario.codes):
                request = analytics_pb2.GetPromoCodeStatsRequest(
                    time_range=tr, currency_code=currency
                )
                if n % 2:
                    request.code = code.code.lower()
                else:
                    request.promo_code_id = code.id
                cases.append(
                    ("GetPromoCodeStats", request, scenario.code_stats(code, start, end, currency))
                )
            for campaign in scenario.campaigns:
                cases.append(
                    (
                        "GetCampaignStats",
                        analytics_pb2.GetCampaignStatsRequest(
                            campaign_id=campaign.id, time_range=tr, currency_code=currency
                        ),
                        scenario.campaign_stats(campaign, start, end, currency),
                    )
                )
            for name, value in rankings.items():
                for limit in (2, 100):
                    cases.append(
                        (
                            "ListTopPromoCodes",
                            analytics_pb2.ListTopPromoCodesRequest(
                                time_range=tr, order_by=value, limit=limit, currency_code=currency
                            ),
                            scenario.top(start, end, name, limit, currency),
                        )
                    )
    unknown = analytics_pb2.GetCampaignStatsRequest(campaign_id="no-such-campaign")
    cases.append(("GetCampaignStats", unknown, "CAMPAIGN_NOT_FOUND"))
    return cases + _series_plan(scenario)


def _series_plan(scenario: Scenario) -> list[Case]:
    cases: list[Case] = []
    granularities = {
        Granularity.HOUR: analytics_pb2.TIME_GRANULARITY_HOUR,
        Granularity.DAY: analytics_pb2.TIME_GRANULARITY_DAY,
        Granularity.WEEK: analytics_pb2.TIME_GRANULARITY_WEEK,
        Granularity.MONTH: analytics_pb2.TIME_GRANULARITY_MONTH,
    }
    for start, end in SERIES_RANGES:
        for granularity, value in granularities.items():
            for code in (None, scenario.codes[0], scenario.codes[5]):
                for currency in ("", "EUR"):
                    request = analytics_pb2.GetOrdersTimeSeriesRequest(
                        time_range=time_range(start, end), granularity=value, currency_code=currency
                    )
                    if code is not None:
                        request.promo_code_id = code.id
                    cases.append(
                        (
                            "GetOrdersTimeSeries",
                            request,
                            scenario.series(start, end, granularity, code, currency),
                        )
                    )
    return cases


async def compare_everything(call: Call, scenario: Scenario, concurrency: int = 6) -> int:
    """Asks every question of the plan and compares each answer with the truth.

    Returns how many answers were compared; raises AssertionError on the first difference.
    """
    cases = plan(scenario)
    semaphore = asyncio.Semaphore(concurrency)

    async def check(method: str, request: Any, expected: Any) -> None:
        async with semaphore:
            actual = await call(method, request)
        if actual != expected:
            diff = difflib.unified_diff(
                str(expected).splitlines(), str(actual).splitlines(), "truth", "answer", n=8
            )
            raise AssertionError(f"{method}({request})\n" + "\n".join(list(diff)[:80]))

    await asyncio.gather(*(check(*case) for case in cases))
    return len(cases)


def time_range(start: datetime | None, end: datetime | None) -> common_pb2.TimeRange:
    return common_pb2.TimeRange(start_time=timestamp(start), end_time=timestamp(end))


def insert_statements(database: str, scenario: Scenario) -> list[str]:
    """JSONEachRow INSERTs (one per table, as sync-consumer batches them)."""
    statements = []
    for table, rows in scenario.rows().items():
        body = "\n".join(json.dumps(row) for row in rows)
        statements.append(f"INSERT INTO {database}.{table} FORMAT JSONEachRow\n{body}")
    return statements


def _between(start: datetime | None, end: datetime | None) -> Callable[[datetime], bool]:
    return lambda t: (start is None or t >= start) and (end is None or t < end)


def _money(currency: str, amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code=currency, amount_minor=amount)


def _floor(moment: datetime, granularity: Granularity) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity is Granularity.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    if granularity is Granularity.WEEK:
        while day.isoweekday() != 1:
            day -= timedelta(days=1)
    elif granularity is Granularity.MONTH:
        day = day.replace(day=1)
    return day


def _advance(bucket: datetime, granularity: Granularity) -> datetime:
    step = {
        Granularity.HOUR: timedelta(hours=1),
        Granularity.DAY: timedelta(days=1),
        Granularity.WEEK: timedelta(days=7),
    }
    if granularity in step:
        return bucket + step[granularity]
    following = bucket + timedelta(days=32)
    return following.replace(day=1)


assert rules.MAX_BUCKETS == 1000  # the contract's limit, relied on by the bad-input tests


# --- envelopes -------------------------------------------------------------------------------


def _user(user: str) -> events_pb2.UserSnapshot:
    return events_pb2.UserSnapshot(
        id=user, email=f"{user}@example.com", display_name=user, active=True,
        create_time=timestamp(DAY0 - timedelta(days=10)),
    )  # fmt: skip


def _snapshot(code: Code) -> events_pb2.PromoCodeSnapshot:
    snapshot = events_pb2.PromoCodeSnapshot(
        id=code.id,
        code=code.code,
        discount_type=events_pb2.DISCOUNT_TYPE_PERCENTAGE,
        basis_points=code.basis_points,
        currency_code=code.currency,
        active=True,
        create_time=timestamp(DAY0 - timedelta(days=5)),
        campaign_id=code.campaign,
    )
    if code.max_uses is not None:
        snapshot.max_uses = code.max_uses
    if code.budget is not None:
        snapshot.budget_minor = code.budget
    return snapshot


def _campaign_events(campaign: Campaign) -> list[events_pb2.EventEnvelope]:
    """CampaignCreated, and a CampaignUpdated to its final limits when they changed."""
    created = DAY0 - timedelta(days=6)
    versions = [campaign.max_uses]
    if campaign.first_max_uses is not None:
        versions.insert(0, campaign.first_max_uses)
    out = []
    for version, max_uses in enumerate(versions, start=1):
        snapshot = events_pb2.CampaignSnapshot(
            id=campaign.id,
            display_name=campaign.name,
            currency_code="EUR" if campaign.budget is not None else "",
            create_time=timestamp(created),
            update_time=timestamp(created + timedelta(hours=version)),
        )
        if max_uses is not None:
            snapshot.max_uses = max_uses
        if campaign.budget is not None:
            snapshot.budget_minor = campaign.budget
        payload: Any = (
            events_pb2.CampaignCreated(campaign=snapshot)
            if version == 1
            else events_pb2.CampaignUpdated(campaign=snapshot, changed_fields=["max_uses"])
        )
        out.append(
            envelope(
                "campaign_created" if version == 1 else "campaign_updated",
                payload,
                aggregate_type="campaign",
                aggregate_id=campaign.id,
                version=version,
                at=created + timedelta(hours=version),
            )
        )
    return out


def _user_created(user: str) -> events_pb2.EventEnvelope:
    return envelope(
        "user_created",
        events_pb2.UserCreated(user=_user(user)),
        aggregate_type="user",
        aggregate_id=user,
        version=1,
        at=DAY0 - timedelta(days=10),
    )


def _code_created(code: Code) -> events_pb2.EventEnvelope:
    return envelope(
        "promo_code_created",
        events_pb2.PromoCodeCreated(promo_code=_snapshot(code)),
        aggregate_type="promo_code",
        aggregate_id=code.id,
        version=1,
        at=DAY0 - timedelta(days=5),
    )


_STATUS = {
    "created": orders_pb2.ORDER_STATUS_PENDING,
    "confirmed": orders_pb2.ORDER_STATUS_CONFIRMED,
    "rejected": orders_pb2.ORDER_STATUS_REJECTED,
    "cancelled": orders_pb2.ORDER_STATUS_CANCELLED,
}


def _order_event(order: Order, kind: str, version: int) -> events_pb2.EventEnvelope:
    at = order.cancelled_at if kind == "cancelled" else order.created + 2 * SECOND
    assert at is not None
    settled = kind != "created"
    discount = order.discount if kind in ("confirmed", "cancelled") else 0
    snapshot = events_pb2.OrderSnapshot(
        id=order.id,
        user_id=order.user,
        currency_code=order.currency,
        subtotal_minor=order.subtotal,
        discount_minor=discount,
        total_minor=order.subtotal - discount,
        promo_code=order.code.code if order.code else "",
        promo_code_id=order.code.id if order.code and settled else "",
        promo_code_usage_id=order.id if order.redeemed and settled else "",
        campaign_id=order.code.campaign if order.code and settled else "",
        status=_STATUS[kind],
        create_time=timestamp(order.created),
        update_time=timestamp(at),
        confirm_time=timestamp(order.created + 2 * SECOND) if kind != "created" else None,
        cancel_time=timestamp(order.cancelled_at) if kind == "cancelled" else None,
    )
    user = _user(order.user)
    payload: Any
    if kind == "created":
        payload = events_pb2.OrderCreated(order=snapshot, user=user)
    elif kind == "rejected":
        snapshot.rejection_reason = "PROMO_CODE_EXHAUSTED"
        snapshot.ClearField("confirm_time")
        payload = events_pb2.OrderRejected(order=snapshot, user=user)
    else:
        cls = events_pb2.OrderConfirmed if kind == "confirmed" else events_pb2.OrderCancelled
        payload = cls(order=snapshot, user=user)
        if order.code:
            payload.promo_code.CopyFrom(_snapshot(order.code))
    return envelope(
        f"order_{kind}", payload, aggregate_type="order", aggregate_id=order.id,
        version=version, at=at,
    )  # fmt: skip


def _usage_event(order: Order, *, released: bool) -> events_pb2.EventEnvelope:
    assert order.code is not None
    usage = events_pb2.UsageSnapshot(
        id=order.id,
        promo_code_id=order.code.id,
        code=order.code.code,
        user_id=order.user,
        order_id=order.id,
        campaign_id=order.code.campaign,
        currency_code=order.currency,
        order_amount_minor=order.subtotal,
        discount_minor=order.discount,
        status=promo_codes_pb2.PROMO_CODE_USAGE_STATUS_RELEASED
        if released
        else promo_codes_pb2.PROMO_CODE_USAGE_STATUS_ACTIVE,
        release_reason="order cancelled" if released else "",
        create_time=timestamp(order.usage_created),
        release_time=timestamp(order.cancelled_at) if released else None,
    )
    cls = events_pb2.PromoCodeReleased if released else events_pb2.PromoCodeRedeemed
    payload = cls(usage=usage, promo_code=_snapshot(order.code), user=_user(order.user))
    at = order.cancelled_at if released else order.usage_created
    assert at is not None
    return envelope(
        "promo_code_released" if released else "promo_code_redeemed",
        payload,
        aggregate_type="promo_code_usage",
        aggregate_id=order.id,
        version=2 if released else 1,
        at=at,
    )
