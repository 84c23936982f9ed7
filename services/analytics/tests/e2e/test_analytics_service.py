"""AnalyticsService over the wire, fed through the real pipeline: events -> Redis streams ->
sync-consumer -> ClickHouse 18.16 -> analytics. Every answer is compared with the truth."""

from __future__ import annotations

import time
import urllib.request
from datetime import timedelta
from typing import Any

import grpc
from analytics_e2e import Pipeline
from analytics_scenario import DAY0, SECOND, compare_everything, time_range

from promo.v1 import analytics_pb2, analytics_pb2_grpc, common_pb2
from promo_libs.grpc.errors import error_info
from promo_libs.grpc.mapping import timestamp


def grpc_call(channel: grpc.aio.Channel) -> Any:
    stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)

    async def call(method: str, request: Any) -> Any:
        try:
            return await getattr(stub, method)(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            return info.reason if info else exc.code().name

    return call


async def test_every_answer_equals_the_truth(pipeline: Pipeline) -> None:
    started = time.monotonic()
    async with pipeline.analytics.channel() as channel:
        compared = await compare_everything(grpc_call(channel), pipeline.scenario)
    print(
        f"drained in {pipeline.drain_seconds:.1f}s; {compared} answers compared "
        f"in {time.monotonic() - started:.1f}s"
    )
    assert compared > 400


async def test_the_history_holds_the_edge_cases_the_comparison_relies_on(
    pipeline: Pipeline,
) -> None:
    orders = pipeline.scenario.orders
    midnight = DAY0 + timedelta(days=1)
    assert {o.created for o in orders} >= {midnight - SECOND, midnight}
    assert any(o.cancelled_at and o.cancelled_at.date() != o.created.date() for o in orders)
    assert any(o.cancelled_at and o.cancelled_at.date() == o.created.date() for o in orders)
    assert {o.currency for o in orders} == {"EUR", "USD"}  # per-currency answers are exercised
    # Several months (October to March): the pipeline's batches span month partitions.
    assert len({(o.created.year, o.created.month) for o in orders}) >= 5


async def test_midnight_belongs_to_the_next_day(pipeline: Pipeline) -> None:
    scenario = pipeline.scenario
    midnight = DAY0 + timedelta(days=1)
    async with pipeline.analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        series = await stub.GetOrdersTimeSeries(
            analytics_pb2.GetOrdersTimeSeriesRequest(
                time_range=time_range(midnight - timedelta(hours=1), midnight + timedelta(hours=1)),
                granularity=analytics_pb2.TIME_GRANULARITY_HOUR,
                currency_code="EUR",
            )
        )
    before, after = series.points
    assert before.bucket_start == timestamp(midnight - timedelta(hours=1))
    assert after.bucket_start == timestamp(midnight)
    eur = [o for o in scenario.orders if o.currency == "EUR"]
    assert before.orders == sum(midnight - timedelta(hours=1) <= o.created < midnight for o in eur)
    assert after.orders == sum(midnight <= o.created < midnight + timedelta(hours=1) for o in eur)
    assert before.orders >= 1 and after.orders >= 1


async def test_a_code_never_used_and_an_empty_range(pipeline: Pipeline) -> None:
    async with pipeline.analytics.channel() as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        never = await stub.GetPromoCodeStats(
            analytics_pb2.GetPromoCodeStatsRequest(code="never-used")
        )
        empty = await stub.GetOverview(
            analytics_pb2.GetOverviewRequest(
                time_range=time_range(DAY0 - timedelta(days=300), DAY0 - timedelta(days=299))
            )
        )
    assert never.promo_code_id == "c6" and never.code == "NEVER-USED"
    assert (never.redemptions, never.releases, never.orders, never.unique_users) == (0, 0, 0, 0)
    assert never.remaining_uses == 5
    assert never.remaining_budget == common_pb2.Money(currency_code="EUR", amount_minor=100)
    assert never.revenue == common_pb2.Money()  # no data: no currency, zero
    assert empty == analytics_pb2.Overview(
        revenue=common_pb2.Money(),
        discount=common_pb2.Money(),
        average_order_value=common_pb2.Money(),
    )


def test_health_reports_clickhouse_and_metrics_count_each_rpc(pipeline: Pipeline) -> None:
    analytics = pipeline.analytics
    assert analytics.health() == "SERVING"
    assert analytics.health(service="clickhouse") == "SERVING"
    assert analytics.health(service="promo.v1.AnalyticsService") == "SERVING"
    port = pipeline.analytics.env["METRICS_PORT"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    handled = [line for line in text.splitlines() if line.startswith("grpc_server_handled_total{")]
    for method in ("GetOverview", "GetUserStats", "GetOrdersTimeSeries", "ListTopPromoCodes"):
        labels = (f'method="{method}"', 'service="promo.v1.AnalyticsService"', 'code="OK"')
        assert any(all(label in line for label in labels) for line in handled), handled
    assert 'dependency_up{dependency="clickhouse"} 1.0' in text, text[-2000:]
