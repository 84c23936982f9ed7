"""The use cases over the in-memory store: currency rule, ranking, zero-filling, not found."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics_service.domain.model import (
    CampaignInfo,
    CostGrouping,
    DiscountCost,
    DiscountCosts,
    Granularity,
    Money,
    PromoCodeInfo,
    Ranking,
    TimeRange,
)
from analytics_service.domain.queries import (
    GetCampaignStats,
    GetOrdersTimeSeries,
    GetOverview,
    GetPromoCodeStats,
    GetUserStats,
    ListDiscountCosts,
    ListTopPromoCodes,
)
from analytics_service.domain.rules import CurrencyRequired, RangeTooLarge
from analytics_service.service_layer.analytics import (
    Analytics,
    CampaignNotFound,
    PromoCodeNotFound,
)
from analytics_testing.memory import LineState, MemoryStore, OrderState, UsageState
from promo_libs.errors import InvalidArgument

T = datetime(2024, 5, 6, tzinfo=UTC)  # a Monday


def order(n: int, user: str, total: int, status: str = "CONFIRMED", **kw: object) -> OrderState:
    fields: dict[str, object] = {
        "currency": "EUR",
        "discount": 0,
        "create_time": T + timedelta(hours=n),
        "promo_code_id": "",
    }
    fields.update(kw)
    return OrderState(f"o{n}", user, status=status, total=total, **fields)  # type: ignore[arg-type]


def usage(n: int, code: str, user: str, discount: int, **kw: object) -> UsageState:
    fields: dict[str, object] = {"currency": "EUR", "create_time": T + timedelta(hours=n)}
    fields.update(kw)
    return UsageState(f"o{n}", f"id-{code}", code, user, discount=discount, **fields)  # type: ignore[arg-type]


@pytest.fixture
def store() -> MemoryStore:
    s = MemoryStore()
    s.add(
        PromoCodeInfo("id-A", "A", "EUR", max_uses=10, budget=1000),
        PromoCodeInfo("id-B", "B", "EUR"),
        PromoCodeInfo("id-Z", "Z", "EUR", max_uses=3),
        order(0, "u1", 900, discount=100, promo_code_id="id-A"),
        usage(0, "A", "u1", 100),
        order(1, "u2", 1900, discount=100, promo_code_id="id-B"),
        usage(1, "B", "u2", 100),
        order(2, "u1", 450, status="CANCELLED", discount=50, promo_code_id="id-A"),
        usage(2, "A", "u1", 50, status="RELEASED", release_time=T + timedelta(days=2)),
        order(3, "u3", 700, status="REJECTED"),
        order(30, "u3", 1000),  # the next day
    )
    return s


async def test_overview_counts_by_current_status(store: MemoryStore) -> None:
    overview = await Analytics(store).get_overview(GetOverview(TimeRange(T, T + timedelta(days=1))))
    assert (overview.orders, overview.confirmed_orders) == (4, 2)
    assert (overview.cancelled_orders, overview.rejected_orders) == (1, 1)
    assert (overview.revenue, overview.discount, overview.average_order_value) == (2800, 200, 1400)
    assert (overview.redemptions, overview.releases) == (3, 0)  # released on day 3
    assert (overview.active_users, overview.active_codes, overview.currency) == (3, 2, "EUR")


async def test_several_currencies_are_answered_per_currency_or_need_a_choice(
    store: MemoryStore,
) -> None:
    store.add(order(5, "u9", 5000, currency="USD"), order(6, "u1", 700, currency="USD"))
    analytics = Analytics(store)
    both = await analytics.get_overview(GetOverview())
    assert (both.currency, both.orders) == ("", 0)
    assert [(o.currency, o.orders, o.revenue) for o in both.per_currency] == [
        ("EUR", 5, 3800),
        ("USD", 2, 5700),
    ]
    series = await analytics.get_orders_time_series(
        GetOrdersTimeSeries(TimeRange(T, T + timedelta(days=2)))
    )
    assert series.points == () and [s.currency for s in series.per_currency] == ["EUR", "USD"]
    assert [sum(p.orders for p in s.points) for s in series.per_currency] == [5, 2]
    # USD orders without a code: the top list's selected data holds one currency only.
    top = await analytics.list_top_promo_codes(ListTopPromoCodes())
    assert top.per_currency == () and [e.code for e in top.entries] == ["A", "B"]
    store.add(usage(50, "Z", "u9", 30, currency="USD"))
    top = await analytics.list_top_promo_codes(ListTopPromoCodes())
    assert top.entries == ()
    assert [(c, [e.code for e in entries]) for c, entries in top.per_currency] == [
        ("EUR", ["A", "B"]),
        ("USD", ["Z"]),
    ]
    # A user's statistics still need a choice.
    with pytest.raises(CurrencyRequired):
        await analytics.get_user_stats(GetUserStats("u1"))
    usd = await analytics.get_overview(GetOverview(currency="USD"))
    assert (usd.orders, usd.revenue, usd.currency, usd.redemptions) == (2, 5700, "USD", 1)
    # A user with one currency needs no choice; an unknown user gets zeros and no currency.
    assert (await analytics.get_user_stats(GetUserStats("u9"))).revenue == 5000
    ghost = await analytics.get_user_stats(GetUserStats("ghost"))
    assert (ghost.orders, ghost.currency) == (0, "")


async def test_code_stats_and_what_remains(store: MemoryStore) -> None:
    analytics = Analytics(store)
    stats = await analytics.get_promo_code_stats(GetPromoCodeStats(code="a"))
    assert (stats.promo_code_id, stats.redemptions, stats.releases, stats.unique_users) == (
        "id-A",
        2,
        1,
        1,
    )
    assert (stats.total_discount, stats.orders, stats.revenue) == (100, 1, 900)
    assert stats.remaining_uses == 9
    assert stats.remaining_budget == Money("EUR", 900)
    plain = await analytics.get_promo_code_stats(GetPromoCodeStats(promo_code_id="id-B"))
    assert plain.remaining_uses is None and plain.remaining_budget is None
    unused = await analytics.get_promo_code_stats(GetPromoCodeStats(promo_code_id="id-Z"))
    assert (unused.redemptions, unused.remaining_uses, unused.currency) == (0, 3, "")
    with pytest.raises(PromoCodeNotFound):
        await analytics.get_promo_code_stats(GetPromoCodeStats(promo_code_id="nope"))
    with pytest.raises(InvalidArgument):
        await analytics.get_promo_code_stats(GetPromoCodeStats())


async def test_top_codes_ties_go_to_the_smaller_code(store: MemoryStore) -> None:
    analytics = Analytics(store)
    day_one = TimeRange(T, T + timedelta(days=1))
    by_redemptions = (await analytics.list_top_promo_codes(ListTopPromoCodes(day_one))).entries
    assert [e.code for e in by_redemptions] == ["A", "B"]
    by_discount = (
        await analytics.list_top_promo_codes(ListTopPromoCodes(day_one, Ranking.DISCOUNT))
    ).entries
    assert [(e.code, e.total_discount) for e in by_discount] == [("A", 100), ("B", 100)]
    by_revenue = (
        await analytics.list_top_promo_codes(ListTopPromoCodes(day_one, Ranking.REVENUE, limit=1))
    ).entries
    assert [(e.code, e.revenue) for e in by_revenue] == [("B", 1900)]
    # Codes without activity in the range are left out.
    later = TimeRange(T + timedelta(days=5), None)
    assert (await analytics.list_top_promo_codes(ListTopPromoCodes(later))).entries == ()


async def test_series_are_zero_filled_and_bounded(store: MemoryStore) -> None:
    analytics = Analytics(store)
    series = await analytics.get_orders_time_series(
        GetOrdersTimeSeries(TimeRange(T - timedelta(days=1), T + timedelta(days=3)))
    )
    assert [p.bucket_start for p in series.points] == [T + timedelta(days=d) for d in range(-1, 3)]
    assert [p.orders for p in series.points] == [0, 4, 1, 0]
    assert [p.revenue for p in series.points] == [0, 2800, 1000, 0]
    weekly = await analytics.get_orders_time_series(
        GetOrdersTimeSeries(TimeRange(T, T + timedelta(days=3)), Granularity.WEEK, "id-A")
    )
    assert [(p.bucket_start, p.orders, p.confirmed_orders) for p in weekly.points] == [(T, 2, 1)]
    with pytest.raises(RangeTooLarge):
        await analytics.get_orders_time_series(
            GetOrdersTimeSeries(TimeRange(T, T + timedelta(days=3650)), Granularity.HOUR)
        )
    with pytest.raises(InvalidArgument):
        await analytics.get_orders_time_series(GetOrdersTimeSeries(TimeRange(T, None)))


async def test_user_stats_list_codes_in_order(store: MemoryStore) -> None:
    stats = await Analytics(store).get_user_stats(GetUserStats("u1"))
    assert (stats.orders, stats.confirmed_orders, stats.revenue, stats.discount) == (2, 1, 900, 100)
    assert (stats.redemptions, stats.codes_used, stats.codes) == (2, 1, ("A",))


# --- GetCampaignStats -------------------------------------------------------------------------


@pytest.fixture
def campaigns() -> MemoryStore:
    s = MemoryStore()
    s.add(
        CampaignInfo("k1", "Spring", codes=2, max_uses=5, budget=Money("EUR", 1000)),
        order(0, "u1", 900, discount=100, promo_code_id="id-A", campaign_id="k1"),
        usage(0, "A", "u1", 100, campaign_id="k1"),
        order(1, "u2", 1800, discount=200, promo_code_id="id-B", campaign_id="k1"),
        usage(1, "B", "u2", 200, campaign_id="k1"),
        order(
            2, "u1", 450, status="CANCELLED", discount=50, promo_code_id="id-A", campaign_id="k1"
        ),
        usage(
            2,
            "A",
            "u1",
            50,
            status="RELEASED",
            release_time=T + timedelta(days=2),
            campaign_id="k1",
        ),
        usage(3, "A", "u3", 70, campaign_id="k1", currency="USD"),
        usage(4, "C", "u4", 10),  # a code outside campaigns
    )
    return s


def line(
    order_id: str,
    index: int,
    product: str,
    categories: tuple[str, ...],
    discount: int,
    *,
    currency: str = "EUR",
    status: str = "CONFIRMED",
    campaign: str = "",
) -> LineState:
    return LineState(
        order_id, index, currency, status, T, product, categories, quantity=2, unit_price=500,
        discount=discount, campaign_id=campaign,
    )  # fmt: skip


@pytest.fixture
def carts() -> MemoryStore:
    s = MemoryStore()
    s.add(
        line("o1", 0, "shoe", ("shoes", "sale"), 100, campaign="k1"),
        line("o1", 1, "sock", ("kids",), 30, campaign="k1"),
        line("o2", 0, "shoe", ("shoes",), 50),
        line("o3", 0, "shoe", ("shoes",), 999, status="CANCELLED"),
        line("o4", 0, "hat", ("sale",), 0),
        line("o5", 0, "shoe", ("shoes",), 70, currency="USD"),
    )
    return s


async def test_campaign_stats_over_its_codes_and_limits_against_all_active_uses(
    campaigns: MemoryStore,
) -> None:
    analytics = Analytics(campaigns)
    stats = await analytics.get_campaign_stats(
        GetCampaignStats("k1", TimeRange(T, T + timedelta(hours=3)), "EUR")
    )
    assert (stats.display_name, stats.codes, stats.currency) == ("Spring", 2, "EUR")
    assert (stats.redemptions, stats.unique_users, stats.discount_cost) == (3, 2, 300)
    assert (stats.orders, stats.revenue, stats.releases) == (2, 2700, 0)
    # Limits from all time: three active uses (one in USD), 300 EUR of budget granted.
    assert stats.remaining_uses == 2 and stats.remaining_budget == Money("EUR", 700)
    # Without a currency, the range's EUR and USD usages need one.
    with pytest.raises(CurrencyRequired):
        await analytics.get_campaign_stats(GetCampaignStats("k1"))


async def test_campaign_stats_refuse_bad_input_and_unknown_campaigns(
    campaigns: MemoryStore,
) -> None:
    analytics = Analytics(campaigns)
    for bad, field in (
        (GetCampaignStats(""), "campaign_id"),
        (GetCampaignStats("k" * 129), "campaign_id"),
        (GetCampaignStats("k1", TimeRange(T, T)), "time_range.end_time"),
        (GetCampaignStats("k1", currency="eur"), "currency_code"),
    ):
        with pytest.raises(InvalidArgument) as raised:
            await analytics.get_campaign_stats(bad)
        assert field in [v.field for v in raised.value.violations]
    with pytest.raises(CampaignNotFound):
        await analytics.get_campaign_stats(GetCampaignStats("nope"))


async def test_discount_costs_per_currency_and_for_one(carts: MemoryStore) -> None:
    analytics = Analytics(carts)
    both = await analytics.list_discount_costs(ListDiscountCosts())
    assert both.currency == "" and [c.currency for c in both.per_currency] == ["EUR", "USD"]
    eur = await analytics.list_discount_costs(ListDiscountCosts(currency="EUR"))
    assert eur == DiscountCosts(
        "EUR", (DiscountCost("shoe", 150, 2000, 4, 2), DiscountCost("sock", 30, 1000, 2, 1))
    )
    by_category = await analytics.list_discount_costs(
        ListDiscountCosts(grouping=CostGrouping.CATEGORY, currency="EUR", limit=2)
    )
    assert [(e.key, e.discount) for e in by_category.entries] == [("shoes", 150), ("sale", 100)]
    campaign = await analytics.list_discount_costs(
        ListDiscountCosts(campaign_id="k1", grouping=CostGrouping.CATEGORY)
    )
    assert campaign.currency == "EUR"  # one currency in the campaign's lines: no per-currency
    assert [(e.key, e.discount) for e in campaign.entries] == [
        ("sale", 100), ("shoes", 100), ("kids", 30)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (ListDiscountCosts(limit=1001), "limit"),
        (ListDiscountCosts(limit=-5), "limit"),
        (ListDiscountCosts(grouping=None), "group_by"),
        (ListDiscountCosts(campaign_id=""), "campaign_id"),
        (ListDiscountCosts(time_range=TimeRange(T, T)), "time_range.end_time"),
        (ListDiscountCosts(currency="euro"), "currency_code"),
    ],
)
async def test_discount_costs_refuse_bad_input(
    carts: MemoryStore, query: ListDiscountCosts, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await Analytics(carts).list_discount_costs(query)
    assert field in [v.field for v in raised.value.violations]
