"""Every bad request gets a clear status (INVALID_ARGUMENT with the field, or NOT_FOUND with a
reason), never INTERNAL; and health follows the analytics tables."""

from __future__ import annotations

import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from analytics_e2e import drop, migrate, service
from google.protobuf.timestamp_pb2 import Timestamp

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import analytics_pb2 as pb
from promo.v1 import analytics_pb2_grpc, common_pb2
from promo_libs.grpc.errors import bad_request, error_info
from promo_libs.grpc.mapping import timestamp

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def span(start: datetime | None, end: datetime | None) -> common_pb2.TimeRange:
    return common_pb2.TimeRange(start_time=timestamp(start), end_time=timestamp(end))


DAY = span(T0, T0 + timedelta(days=1))
BAD_NANOS = common_pb2.TimeRange(start_time=Timestamp(seconds=1, nanos=2_000_000_000))

CASES: list[tuple[str, str, Any, str, str]] = [
    # id, method, request, status, reason or field
    (
        "ten-years-hourly",
        "GetOrdersTimeSeries",
        pb.GetOrdersTimeSeriesRequest(
            time_range=span(T0, T0 + timedelta(days=3650)), granularity=pb.TIME_GRANULARITY_HOUR
        ),
        "INVALID_ARGUMENT",
        "RANGE_TOO_LARGE",
    ),
    (
        "1001-days",
        "GetOrdersTimeSeries",
        pb.GetOrdersTimeSeriesRequest(time_range=span(T0, T0 + timedelta(days=1001))),
        "INVALID_ARGUMENT",
        "RANGE_TOO_LARGE",
    ),
    (
        "series-open-end",
        "GetOrdersTimeSeries",
        pb.GetOrdersTimeSeriesRequest(time_range=span(T0, None)),
        "INVALID_ARGUMENT",
        "time_range.end_time",
    ),
    (
        "series-no-range",
        "GetOrdersTimeSeries",
        pb.GetOrdersTimeSeriesRequest(),
        "INVALID_ARGUMENT",
        "time_range.start_time",
    ),
    (
        "unknown-granularity",
        "GetOrdersTimeSeries",
        pb.GetOrdersTimeSeriesRequest(time_range=DAY, granularity=42),  # type: ignore[arg-type]
        "INVALID_ARGUMENT",
        "granularity",
    ),
    (
        "series-empty-code-id",
        "GetOrdersTimeSeries",
        pb.GetOrdersTimeSeriesRequest(time_range=DAY, promo_code_id=""),
        "INVALID_ARGUMENT",
        "promo_code_id",
    ),
    (
        "end-before-start",
        "GetOverview",
        pb.GetOverviewRequest(time_range=span(T0, T0 - timedelta(seconds=1))),
        "INVALID_ARGUMENT",
        "time_range.end_time",
    ),
    (
        "empty-range",
        "GetOverview",
        pb.GetOverviewRequest(time_range=span(T0, T0)),
        "INVALID_ARGUMENT",
        "time_range.end_time",
    ),
    (
        "before-1970",
        "GetOverview",
        pb.GetOverviewRequest(time_range=span(datetime(1960, 1, 1, tzinfo=UTC), T0)),
        "INVALID_ARGUMENT",
        "time_range.start_time",
    ),
    (
        "after-2106",
        "GetUserStats",
        pb.GetUserStatsRequest(
            user_id="u1", time_range=span(None, datetime(2200, 1, 1, tzinfo=UTC))
        ),
        "INVALID_ARGUMENT",
        "time_range.end_time",
    ),
    (
        "invalid-timestamp",
        "GetOverview",
        pb.GetOverviewRequest(time_range=BAD_NANOS),
        "INVALID_ARGUMENT",
        "time_range.start_time",
    ),
    (
        "lower-case-currency",
        "GetOverview",
        pb.GetOverviewRequest(currency_code="eur"),
        "INVALID_ARGUMENT",
        "currency_code",
    ),
    (
        "unassigned-currency",
        "GetOrdersTimeSeries",
        pb.GetOrdersTimeSeriesRequest(currency_code="ABC"),
        "INVALID_ARGUMENT",
        "currency_code",
    ),
    (
        "no-currency-code-XXX",
        "GetUserStats",
        pb.GetUserStatsRequest(user_id="u1", currency_code="XXX"),
        "INVALID_ARGUMENT",
        "currency_code",
    ),
    (
        "four-letter-currency",
        "ListTopPromoCodes",
        pb.ListTopPromoCodesRequest(currency_code="EURO"),
        "INVALID_ARGUMENT",
        "currency_code",
    ),
    (
        "limit-too-large",
        "ListTopPromoCodes",
        pb.ListTopPromoCodesRequest(limit=101),
        "INVALID_ARGUMENT",
        "limit",
    ),
    (
        "negative-limit",
        "ListTopPromoCodes",
        pb.ListTopPromoCodesRequest(limit=-1),
        "INVALID_ARGUMENT",
        "limit",
    ),
    (
        "unknown-ranking",
        "ListTopPromoCodes",
        pb.ListTopPromoCodesRequest(order_by=99),  # type: ignore[arg-type]
        "INVALID_ARGUMENT",
        "order_by",
    ),
    ("no-user", "GetUserStats", pb.GetUserStatsRequest(), "INVALID_ARGUMENT", "user_id"),
    (
        "long-user",
        "GetUserStats",
        pb.GetUserStatsRequest(user_id="u" * 500),
        "INVALID_ARGUMENT",
        "user_id",
    ),
    (
        "no-code",
        "GetPromoCodeStats",
        pb.GetPromoCodeStatsRequest(),
        "INVALID_ARGUMENT",
        "promo_code",
    ),
    (
        "control-character-code",
        "GetPromoCodeStats",
        pb.GetPromoCodeStatsRequest(code="A\x00B"),
        "INVALID_ARGUMENT",
        "code",
    ),
    (
        "quote-in-code",
        "GetPromoCodeStats",
        pb.GetPromoCodeStatsRequest(code="x' OR '1'='1"),
        "NOT_FOUND",
        "PROMO_CODE_NOT_FOUND",
    ),
    (
        "costs-limit-1001",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(limit=1001),
        "INVALID_ARGUMENT",
        "limit",
    ),
    (
        "costs-negative-limit",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(limit=-1),
        "INVALID_ARGUMENT",
        "limit",
    ),
    (
        "costs-end-before-start",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(time_range=span(T0, T0 - timedelta(seconds=1))),
        "INVALID_ARGUMENT",
        "time_range.end_time",
    ),
    (
        "costs-empty-range",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(time_range=span(T0, T0)),
        "INVALID_ARGUMENT",
        "time_range.end_time",
    ),
    (
        "costs-before-1970",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(time_range=span(datetime(1969, 12, 31, tzinfo=UTC), None)),
        "INVALID_ARGUMENT",
        "time_range.start_time",
    ),
    (
        "costs-unknown-grouping",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(group_by=7),  # type: ignore[arg-type]
        "INVALID_ARGUMENT",
        "group_by",
    ),
    (
        "costs-bad-currency",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(currency_code="eu"),
        "INVALID_ARGUMENT",
        "currency_code",
    ),
    (
        "costs-campaign-too-long",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(campaign_id="k" * 129),
        "INVALID_ARGUMENT",
        "campaign_id",
    ),
    (
        "costs-control-character-campaign",
        "ListDiscountCosts",
        pb.ListDiscountCostsRequest(campaign_id="k\x00"),
        "INVALID_ARGUMENT",
        "campaign_id",
    ),
    (
        "unknown-code-id",
        "GetPromoCodeStats",
        pb.GetPromoCodeStatsRequest(promo_code_id="nope"),
        "NOT_FOUND",
        "PROMO_CODE_NOT_FOUND",
    ),
    (
        "campaign-without-id",
        "GetCampaignStats",
        pb.GetCampaignStatsRequest(),
        "INVALID_ARGUMENT",
        "campaign_id",
    ),
    (
        "campaign-id-too-long",
        "GetCampaignStats",
        pb.GetCampaignStatsRequest(campaign_id="c" * 129),
        "INVALID_ARGUMENT",
        "campaign_id",
    ),
    (
        "campaign-control-character",
        "GetCampaignStats",
        pb.GetCampaignStatsRequest(campaign_id="c\x00"),
        "INVALID_ARGUMENT",
        "campaign_id",
    ),
    (
        "campaign-reversed-range",
        "GetCampaignStats",
        pb.GetCampaignStatsRequest(campaign_id="c1", time_range=span(T0, T0)),
        "INVALID_ARGUMENT",
        "time_range.end_time",
    ),
    (
        "campaign-range-before-1970",
        "GetCampaignStats",
        pb.GetCampaignStatsRequest(
            campaign_id="c1", time_range=span(datetime(1969, 1, 1, tzinfo=UTC), None)
        ),
        "INVALID_ARGUMENT",
        "time_range.start_time",
    ),
    (
        "campaign-bad-currency",
        "GetCampaignStats",
        pb.GetCampaignStatsRequest(campaign_id="c1", currency_code="euro"),
        "INVALID_ARGUMENT",
        "currency_code",
    ),
    (
        "quote-in-campaign-id",
        "GetCampaignStats",
        pb.GetCampaignStatsRequest(campaign_id="x' OR '1'='1"),
        "NOT_FOUND",
        "CAMPAIGN_NOT_FOUND",
    ),
    (
        "unknown-campaign",
        "GetCampaignStats",
        pb.GetCampaignStatsRequest(campaign_id="nope"),
        "NOT_FOUND",
        "CAMPAIGN_NOT_FOUND",
    ),
]


@pytest.mark.parametrize(
    ("method", "request_", "status", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_bad_input_gets_a_clear_status(
    empty_analytics: ServiceProcess, method: str, request_: Any, status: str, detail: str
) -> None:
    async with empty_analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await getattr(stub, method)(request_, timeout=10)
    error = raised.value
    assert error.code().name == status, error.details()
    info = error_info(error)
    violations = bad_request(error)
    fields = [v.field for v in violations.field_violations] if violations else []
    assert detail in fields or (info is not None and info.reason == detail), (fields, info)


async def test_valid_requests_on_an_empty_store_answer_zeros(
    empty_analytics: ServiceProcess,
) -> None:
    async with empty_analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        top = await stub.ListTopPromoCodes(pb.ListTopPromoCodesRequest(limit=100))
        costs = await stub.ListDiscountCosts(  # exactly the maximum limit is allowed
            pb.ListDiscountCostsRequest(
                limit=1000, group_by=pb.DISCOUNT_COST_GROUPING_CATEGORY, campaign_id="k1"
            )
        )
        user = await stub.GetUserStats(pb.GetUserStatsRequest(user_id="ghost", currency_code="EUR"))
        series = await stub.GetOrdersTimeSeries(
            pb.GetOrdersTimeSeriesRequest(
                time_range=span(T0, T0 + timedelta(days=1000)), granularity=pb.TIME_GRANULARITY_DAY
            )
        )
    assert list(top.entries) == []
    assert costs == pb.ListDiscountCostsResponse()
    assert user.user_id == "ghost" and user.orders == 0
    assert user.revenue == common_pb2.Money(currency_code="EUR", amount_minor=0)
    assert len(series.points) == 1000  # exactly the limit is allowed


async def test_a_deadline_shorter_than_the_work_is_reported_as_such(
    empty_analytics: ServiceProcess,
) -> None:
    async with empty_analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetOverview(pb.GetOverviewRequest(), timeout=0.0005)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_not_serving_until_the_analytics_tables_exist(stack: Stack) -> None:
    database = f"e2e_analytics_late_{uuid.uuid4().hex[:10]}"
    analytics = service(
        stack, "analytics-late", [sys.executable, "-m", "analytics_service"],
        {"CLICKHOUSE_DATABASE": database},
    )  # fmt: skip
    analytics.start()
    try:
        analytics.wait_status("NOT_SERVING")
        assert analytics.health(timeout=1.0) == "NOT_SERVING"
        migrate(stack, database)
        analytics.wait_status("SERVING")
    finally:
        analytics.terminate()
        drop(stack, database)
