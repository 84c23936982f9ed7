"""promo.v1.AnalyticsService over gRPC: translate the request, call the use case, translate back.

Errors are not handled here: promo_libs' interceptor maps them to statuses with details. Each
call runs within the caller's deadline, so an abandoned query stops using ClickHouse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc

from analytics_service.domain import model
from analytics_service.domain.queries import (
    GetCampaignStats,
    GetOrdersTimeSeries,
    GetOverview,
    GetPromoCodeStats,
    GetUserStats,
    ListDiscountCosts,
    ListTopPromoCodes,
)
from analytics_service.service_layer.analytics import Analytics
from promo.v1 import analytics_pb2, analytics_pb2_grpc
from promo_libs.grpc.mapping import moment, money, timestamp

Context = grpc.aio.ServicerContext[Any, Any]
T = TypeVar("T")

_RANKINGS = {
    analytics_pb2.PROMO_CODE_RANKING_UNSPECIFIED: model.Ranking.REDEMPTIONS,
    analytics_pb2.PROMO_CODE_RANKING_REDEMPTIONS: model.Ranking.REDEMPTIONS,
    analytics_pb2.PROMO_CODE_RANKING_DISCOUNT: model.Ranking.DISCOUNT,
    analytics_pb2.PROMO_CODE_RANKING_REVENUE: model.Ranking.REVENUE,
}
_GRANULARITIES = {
    analytics_pb2.TIME_GRANULARITY_UNSPECIFIED: model.Granularity.DAY,
    analytics_pb2.TIME_GRANULARITY_HOUR: model.Granularity.HOUR,
    analytics_pb2.TIME_GRANULARITY_DAY: model.Granularity.DAY,
    analytics_pb2.TIME_GRANULARITY_WEEK: model.Granularity.WEEK,
    analytics_pb2.TIME_GRANULARITY_MONTH: model.Granularity.MONTH,
}

_GROUPINGS = {
    analytics_pb2.DISCOUNT_COST_GROUPING_UNSPECIFIED: model.CostGrouping.PRODUCT,
    analytics_pb2.DISCOUNT_COST_GROUPING_PRODUCT: model.CostGrouping.PRODUCT,
    analytics_pb2.DISCOUNT_COST_GROUPING_CATEGORY: model.CostGrouping.CATEGORY,
}


def time_range(request: Any, field: str = "time_range") -> model.TimeRange:
    if not request.HasField(field):
        return model.ALL_TIME
    message = getattr(request, field)
    return model.TimeRange(
        moment(message, "start_time"),
        moment(message, "end_time"),
    )


def _set_remaining(
    message: analytics_pb2.PromoCodeStats | analytics_pb2.CampaignStats,
    uses: int | None,
    budget: model.Money | None,
) -> None:
    """The optional limits left, set only where the code or campaign has them."""
    if uses is not None:
        message.remaining_uses = uses
    if budget is not None:
        message.remaining_budget.CopyFrom(money(budget.currency, budget.amount))


def code_stats_message(stats: model.PromoCodeStats) -> analytics_pb2.PromoCodeStats:
    message = analytics_pb2.PromoCodeStats(
        promo_code_id=stats.promo_code_id,
        code=stats.code,
        redemptions=stats.redemptions,
        releases=stats.releases,
        unique_users=stats.unique_users,
        total_discount=money(stats.currency, stats.total_discount),
        orders=stats.orders,
        revenue=money(stats.currency, stats.revenue),
        average_order_value=money(stats.currency, stats.average_order_value),
    )
    _set_remaining(message, stats.remaining_uses, stats.remaining_budget)
    return message


def campaign_stats_message(stats: model.CampaignStats) -> analytics_pb2.CampaignStats:
    message = analytics_pb2.CampaignStats(
        campaign_id=stats.campaign_id,
        display_name=stats.display_name,
        codes=stats.codes,
        redemptions=stats.redemptions,
        releases=stats.releases,
        unique_users=stats.unique_users,
        discount_cost=money(stats.currency, stats.discount_cost),
        orders=stats.orders,
        revenue=money(stats.currency, stats.revenue),
    )
    _set_remaining(message, stats.remaining_uses, stats.remaining_budget)
    return message


def points_message(series: model.TimeSeries) -> list[analytics_pb2.TimeSeriesPoint]:
    return [
        analytics_pb2.TimeSeriesPoint(
            bucket_start=timestamp(p.bucket_start),
            orders=p.orders,
            confirmed_orders=p.confirmed_orders,
            revenue=money(series.currency, p.revenue),
            discount=money(series.currency, p.discount),
        )
        for p in series.points
    ]


def overview_message(o: model.Overview) -> analytics_pb2.Overview:
    if o.per_currency:  # several currencies and none asked for: the top level stays empty
        return analytics_pb2.Overview(per_currency=[overview_message(c) for c in o.per_currency])
    return analytics_pb2.Overview(
        orders=o.orders,
        confirmed_orders=o.confirmed_orders,
        rejected_orders=o.rejected_orders,
        cancelled_orders=o.cancelled_orders,
        revenue=money(o.currency, o.revenue),
        discount=money(o.currency, o.discount),
        average_order_value=money(o.currency, o.average_order_value),
        redemptions=o.redemptions,
        releases=o.releases,
        active_users=o.active_users,
        active_codes=o.active_codes,
    )


def cost_messages(costs: model.DiscountCosts) -> list[analytics_pb2.DiscountCost]:
    return [
        analytics_pb2.DiscountCost(
            key=entry.key,
            discount=money(costs.currency, entry.discount),
            gross=money(costs.currency, entry.gross),
            units=entry.units,
            orders=entry.orders,
        )
        for entry in costs.entries
    ]


async def _within_deadline(context: Context, call: Awaitable[T]) -> T:
    return await asyncio.wait_for(call, context.time_remaining())


class AnalyticsServicer(analytics_pb2_grpc.AnalyticsServiceServicer):
    def __init__(self, analytics: Analytics) -> None:
        self._analytics = analytics

    async def GetPromoCodeStats(
        self, request: analytics_pb2.GetPromoCodeStatsRequest, context: Context
    ) -> analytics_pb2.PromoCodeStats:
        which = request.WhichOneof("promo_code")
        query = GetPromoCodeStats(
            promo_code_id=request.promo_code_id if which == "promo_code_id" else None,
            code=request.code if which == "code" else None,
            time_range=time_range(request),
            currency=request.currency_code,
        )
        stats = await _within_deadline(context, self._analytics.get_promo_code_stats(query))
        return code_stats_message(stats)

    async def GetCampaignStats(
        self, request: analytics_pb2.GetCampaignStatsRequest, context: Context
    ) -> analytics_pb2.CampaignStats:
        query = GetCampaignStats(request.campaign_id, time_range(request), request.currency_code)
        stats = await _within_deadline(context, self._analytics.get_campaign_stats(query))
        return campaign_stats_message(stats)

    async def ListTopPromoCodes(
        self, request: analytics_pb2.ListTopPromoCodesRequest, context: Context
    ) -> analytics_pb2.ListTopPromoCodesResponse:
        query = ListTopPromoCodes(
            time_range=time_range(request),
            ranking=_RANKINGS.get(request.order_by),
            limit=request.limit,
            currency=request.currency_code,
        )
        top = await _within_deadline(context, self._analytics.list_top_promo_codes(query))
        return analytics_pb2.ListTopPromoCodesResponse(
            entries=[code_stats_message(e) for e in top.entries],
            per_currency=[
                analytics_pb2.CurrencyTopPromoCodes(
                    currency_code=currency, entries=[code_stats_message(e) for e in entries]
                )
                for currency, entries in top.per_currency
            ],
        )

    async def GetUserStats(
        self, request: analytics_pb2.GetUserStatsRequest, context: Context
    ) -> analytics_pb2.UserStats:
        query = GetUserStats(request.user_id, time_range(request), request.currency_code)
        stats = await _within_deadline(context, self._analytics.get_user_stats(query))
        return analytics_pb2.UserStats(
            user_id=stats.user_id,
            orders=stats.orders,
            confirmed_orders=stats.confirmed_orders,
            revenue=money(stats.currency, stats.revenue),
            discount=money(stats.currency, stats.discount),
            redemptions=stats.redemptions,
            codes_used=stats.codes_used,
            codes=stats.codes,
        )

    async def GetOrdersTimeSeries(
        self, request: analytics_pb2.GetOrdersTimeSeriesRequest, context: Context
    ) -> analytics_pb2.GetOrdersTimeSeriesResponse:
        query = GetOrdersTimeSeries(
            time_range=time_range(request),
            granularity=_GRANULARITIES.get(request.granularity),
            promo_code_id=request.promo_code_id if request.HasField("promo_code_id") else None,
            currency=request.currency_code,
        )
        series = await _within_deadline(context, self._analytics.get_orders_time_series(query))
        return analytics_pb2.GetOrdersTimeSeriesResponse(
            points=points_message(series),
            per_currency=[
                analytics_pb2.CurrencyTimeSeries(
                    currency_code=one.currency, points=points_message(one)
                )
                for one in series.per_currency
            ],
        )

    async def GetOverview(
        self, request: analytics_pb2.GetOverviewRequest, context: Context
    ) -> analytics_pb2.Overview:
        query = GetOverview(time_range(request), request.currency_code)
        return overview_message(
            await _within_deadline(context, self._analytics.get_overview(query))
        )

    async def ListDiscountCosts(
        self, request: analytics_pb2.ListDiscountCostsRequest, context: Context
    ) -> analytics_pb2.ListDiscountCostsResponse:
        query = ListDiscountCosts(
            time_range=time_range(request),
            grouping=_GROUPINGS.get(request.group_by),
            limit=request.limit,
            currency=request.currency_code,
            # Optional in the contract: an empty one filters nothing.
            campaign_id=request.campaign_id or None,
        )
        costs = await _within_deadline(context, self._analytics.list_discount_costs(query))
        return analytics_pb2.ListDiscountCostsResponse(
            entries=cost_messages(costs),
            per_currency=[
                analytics_pb2.CurrencyDiscountCosts(
                    currency_code=one.currency, entries=cost_messages(one)
                )
                for one in costs.per_currency
            ],
        )
