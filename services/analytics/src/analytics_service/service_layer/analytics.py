"""The analytics use cases: validate the question, ask the store, apply the contract's rules.

The store returns aggregates per currency; here they become one answer in one currency
(rules.choose_currency), or one per currency where the contract says so
(rules.currencies_to_answer); series are zero-filled and averages computed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TypeVar

from analytics_service.domain import rules
from analytics_service.domain.model import (
    CampaignInfo,
    CampaignStats,
    Consumption,
    DiscountCosts,
    Money,
    OrderTotals,
    Overview,
    PromoCodeInfo,
    PromoCodeStats,
    TimeSeries,
    TimeSeriesPoint,
    TopPromoCodes,
    UsageTotals,
    UserStats,
)
from analytics_service.domain.ports import AnalyticsStore
from analytics_service.domain.queries import (
    GetCampaignStats,
    GetOrdersTimeSeries,
    GetOverview,
    GetPromoCodeStats,
    GetUserStats,
    ListDiscountCosts,
    ListTopPromoCodes,
)
from promo_libs.errors import NotFound, Violations

T = TypeVar("T")


def _currencies(*groups: Mapping[str, object]) -> set[str]:
    return {currency for group in groups for currency in group}


def _confirmed(orders: Mapping[str, OrderTotals]) -> dict[str, OrderTotals]:
    """Orders of a code count only once confirmed; the others select no currency."""
    return {c: t for c, t in orders.items() if t.confirmed}


class PromoCodeNotFound(NotFound):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"no promo code {key!r} in analytics",
            reason="PROMO_CODE_NOT_FOUND",
            metadata={"promo_code": key},
        )


class CampaignNotFound(NotFound):
    def __init__(self, campaign_id: str) -> None:
        super().__init__(
            f"no campaign {campaign_id!r} in analytics",
            reason="CAMPAIGN_NOT_FOUND",
            metadata={"campaign_id": campaign_id},
        )


def campaign_stats(
    info: CampaignInfo,
    currency: str,
    usages: UsageTotals,
    releases: int,
    orders: OrderTotals,
    consumption: Mapping[str, Consumption],
) -> CampaignStats:
    """The limits are the campaign's own, against all of its ACTIVE usages now: the uses in
    every currency, the discount in the budget's currency (a budget is in one currency)."""
    active_uses = sum(c.active_uses for c in consumption.values())
    remaining_budget = None
    if info.budget is not None:
        granted = consumption.get(info.budget.currency, Consumption()).discount_granted
        remaining_budget = Money(info.budget.currency, info.budget.amount - granted)
    return CampaignStats(
        campaign_id=info.campaign_id,
        display_name=info.display_name,
        currency=currency,
        codes=info.codes,
        redemptions=usages.redemptions,
        releases=releases,
        unique_users=usages.users,
        discount_cost=usages.active_discount,
        orders=orders.confirmed,
        revenue=orders.revenue,
        remaining_uses=None if info.max_uses is None else info.max_uses - active_uses,
        remaining_budget=remaining_budget,
    )


def code_stats(
    info: PromoCodeInfo,
    currency: str,
    usages: UsageTotals,
    releases: int,
    orders: OrderTotals,
    consumption: Consumption,
) -> PromoCodeStats:
    remaining_budget = None
    if info.budget is not None:
        remaining_budget = Money(info.currency, info.budget - consumption.discount_granted)
    return PromoCodeStats(
        promo_code_id=info.promo_code_id,
        code=info.code,
        currency=currency,
        redemptions=usages.redemptions,
        releases=releases,
        unique_users=usages.users,
        total_discount=usages.active_discount,
        orders=orders.confirmed,
        revenue=orders.revenue,
        average_order_value=rules.average(orders.revenue, orders.confirmed),
        remaining_uses=(None if info.max_uses is None else info.max_uses - consumption.active_uses),
        remaining_budget=remaining_budget,
    )


class Analytics:
    def __init__(self, store: AnalyticsStore) -> None:
        self._store = store

    async def ready(self) -> bool:
        return await self._store.ready()

    # --- GetPromoCodeStats ------------------------------------------------------------------

    async def get_promo_code_stats(self, query: GetPromoCodeStats) -> PromoCodeStats:
        violations = Violations()
        if query.promo_code_id is None and query.code is None:
            violations.add("promo_code", "set promo_code_id or code")
        elif query.promo_code_id is not None:
            rules.check_identifier(violations, query.promo_code_id, path="promo_code_id")
        elif query.code is not None:
            rules.check_identifier(
                violations, query.code, path="code", max_length=rules.MAX_CODE_LENGTH
            )
        rules.check_range(violations, query.time_range, path="time_range")
        rules.check_currency(violations, query.currency)
        violations.raise_if_any()

        if query.promo_code_id is not None:
            promo_code_id: str | None = query.promo_code_id
        else:
            promo_code_id = await self._store.find_promo_code_id((query.code or "").upper())
        found = await self._store.promo_codes([promo_code_id]) if promo_code_id else {}
        if not promo_code_id or promo_code_id not in found:
            raise PromoCodeNotFound(query.promo_code_id or query.code or "")
        info = found[promo_code_id]

        usages, releases, orders, consumption = await asyncio.gather(
            self._store.usage_totals(query.time_range, promo_code_id=promo_code_id),
            self._store.release_counts(query.time_range, promo_code_id=promo_code_id),
            self._store.order_totals(query.time_range, promo_code_id=promo_code_id),
            self._store.consumption([promo_code_id]),
        )
        orders = _confirmed(orders)
        currency = rules.choose_currency(query.currency, _currencies(usages, releases, orders))
        return code_stats(
            info,
            currency,
            usages.get(currency, UsageTotals()),
            releases.get(currency, 0),
            orders.get(currency, OrderTotals()),
            consumption.get(promo_code_id, Consumption()),
        )

    # --- GetCampaignStats -------------------------------------------------------------------

    async def get_campaign_stats(self, query: GetCampaignStats) -> CampaignStats:
        violations = Violations()
        rules.check_identifier(violations, query.campaign_id, path="campaign_id")
        rules.check_range(violations, query.time_range, path="time_range")
        rules.check_currency(violations, query.currency)
        violations.raise_if_any()

        info = await self._store.campaign(query.campaign_id)
        if info is None:
            raise CampaignNotFound(query.campaign_id)
        usages, releases, orders, consumption = await asyncio.gather(
            self._store.campaign_usage_totals(query.time_range, query.campaign_id),
            self._store.campaign_release_counts(query.time_range, query.campaign_id),
            self._store.campaign_order_totals(query.time_range, query.campaign_id),
            self._store.campaign_consumption(query.campaign_id),
        )
        orders = _confirmed(orders)
        # The currency rule of a code's statistics: the range's rows select it, never the
        # all-time consumption behind the remaining limits.
        currency = rules.choose_currency(query.currency, _currencies(usages, releases, orders))
        return campaign_stats(
            info,
            currency,
            usages.get(currency, UsageTotals()),
            releases.get(currency, 0),
            orders.get(currency, OrderTotals()),
            consumption,
        )

    # --- ListTopPromoCodes ------------------------------------------------------------------

    async def list_top_promo_codes(self, query: ListTopPromoCodes) -> TopPromoCodes:
        violations = Violations()
        rules.check_range(violations, query.time_range, path="time_range")
        rules.check_currency(violations, query.currency)
        limit = rules.top_limit(violations, query.limit)
        if query.ranking is None:
            violations.add("order_by", "unknown ranking")
        violations.raise_if_any()
        assert query.ranking is not None

        # Ranked and cut in the store (SQL): no list of every code ever leaves it.
        top = await self._store.top_promo_codes(query.time_range, query.ranking, limit)
        currency, several = rules.currencies_to_answer(query.currency, set(top))
        chosen = several or [currency]
        ids = sorted({e.promo_code_id for c in chosen for e in top.get(c, [])})
        if not ids:
            return TopPromoCodes()
        infos, consumption = await asyncio.gather(
            self._store.promo_codes(ids), self._store.consumption(ids)
        )

        def entries(of: str) -> tuple[PromoCodeStats, ...]:
            return tuple(
                code_stats(
                    infos.get(entry.promo_code_id, PromoCodeInfo(entry.promo_code_id, entry.code)),
                    of,
                    entry.usages,
                    entry.releases,
                    entry.orders,
                    consumption.get(entry.promo_code_id, Consumption()),
                )
                for entry in top.get(of, [])
            )

        if several:
            return TopPromoCodes(per_currency=tuple((c, entries(c)) for c in several))
        return TopPromoCodes(entries=entries(currency))

    # --- GetUserStats -----------------------------------------------------------------------

    async def get_user_stats(self, query: GetUserStats) -> UserStats:
        violations = Violations()
        rules.check_identifier(violations, query.user_id, path="user_id")
        rules.check_range(violations, query.time_range, path="time_range")
        rules.check_currency(violations, query.currency)
        violations.raise_if_any()

        orders, usages = await asyncio.gather(
            self._store.order_totals(query.time_range, user_id=query.user_id),
            self._store.usage_totals(query.time_range, user_id=query.user_id, with_code_texts=True),
        )
        currency = rules.choose_currency(query.currency, _currencies(orders, usages))
        mine = orders.get(currency, OrderTotals())
        used = usages.get(currency, UsageTotals())
        return UserStats(
            user_id=query.user_id,
            currency=currency,
            orders=mine.orders,
            confirmed_orders=mine.confirmed,
            revenue=mine.revenue,
            discount=mine.discount,
            redemptions=used.redemptions,
            codes_used=used.codes,
            codes=tuple(sorted(set(used.code_texts))),
        )

    # --- GetOrdersTimeSeries ----------------------------------------------------------------

    async def get_orders_time_series(self, query: GetOrdersTimeSeries) -> TimeSeries:
        violations = Violations()
        rules.check_range(violations, query.time_range, path="time_range", required=True)
        rules.check_currency(violations, query.currency)
        if query.granularity is None:
            violations.add("granularity", "unknown granularity")
        if query.promo_code_id is not None:
            rules.check_identifier(violations, query.promo_code_id, path="promo_code_id")
        violations.raise_if_any()
        assert query.granularity is not None
        assert query.time_range.start is not None and query.time_range.end is not None

        # Refused before any query: RANGE_TOO_LARGE costs nothing.
        starts = list(
            rules.buckets(query.time_range.start, query.time_range.end, query.granularity)
        )
        rows = await self._store.order_series(
            query.time_range, query.granularity, query.promo_code_id
        )
        currency, several = rules.currencies_to_answer(query.currency, {c for c, _ in rows})

        def series(of: str) -> TimeSeries:
            points = []
            for start in starts:
                totals = rows.get((of, start), OrderTotals())
                points.append(
                    TimeSeriesPoint(
                        bucket_start=start,
                        orders=totals.orders,
                        confirmed_orders=totals.confirmed,
                        revenue=totals.revenue,
                        discount=totals.discount,
                    )
                )
            return TimeSeries(currency=of, points=tuple(points))

        if several:
            return TimeSeries(currency="", per_currency=tuple(series(c) for c in several))
        return series(currency)

    # --- GetOverview ------------------------------------------------------------------------

    async def get_overview(self, query: GetOverview) -> Overview:
        violations = Violations()
        rules.check_range(violations, query.time_range, path="time_range")
        rules.check_currency(violations, query.currency)
        violations.raise_if_any()

        orders, usages, releases = await asyncio.gather(
            self._store.order_totals(query.time_range),
            self._store.usage_totals(query.time_range),
            self._store.release_counts(query.time_range),
        )
        currency, several = rules.currencies_to_answer(
            query.currency, _currencies(orders, usages, releases)
        )
        if several:
            return Overview(
                currency="",
                per_currency=tuple(_overview(c, orders, usages, releases) for c in several),
            )
        return _overview(currency, orders, usages, releases)

    # --- ListDiscountCosts ------------------------------------------------------------------

    async def list_discount_costs(self, query: ListDiscountCosts) -> DiscountCosts:
        violations = Violations()
        rules.check_range(violations, query.time_range, path="time_range")
        rules.check_currency(violations, query.currency)
        limit = rules.top_limit(violations, query.limit, maximum=rules.MAX_COST_LIMIT)
        if query.grouping is None:
            violations.add("group_by", "unknown grouping")
        if query.campaign_id is not None:
            rules.check_identifier(violations, query.campaign_id, path="campaign_id")
        violations.raise_if_any()
        assert query.grouping is not None

        # Ranked and cut in the store (SQL), per currency; the currency rule applies here.
        costs = await self._store.discount_costs(
            query.time_range, query.grouping, limit, query.campaign_id
        )
        currency, several = rules.currencies_to_answer(query.currency, set(costs))
        if several:
            return DiscountCosts(
                currency="",
                per_currency=tuple(DiscountCosts(c, tuple(costs[c])) for c in several),
            )
        return DiscountCosts(currency, tuple(costs.get(currency, ())))


def _overview(
    currency: str,
    orders: Mapping[str, OrderTotals],
    usages: Mapping[str, UsageTotals],
    releases: Mapping[str, int],
) -> Overview:
    mine = orders.get(currency, OrderTotals())
    used = usages.get(currency, UsageTotals())
    return Overview(
        currency=currency,
        orders=mine.orders,
        confirmed_orders=mine.confirmed,
        rejected_orders=mine.rejected,
        cancelled_orders=mine.cancelled,
        revenue=mine.revenue,
        discount=mine.discount,
        average_order_value=rules.average(mine.revenue, mine.confirmed),
        redemptions=used.redemptions,
        releases=releases.get(currency, 0),
        active_users=mine.users,
        active_codes=used.codes,
    )
