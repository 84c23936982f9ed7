"""Composition root: the one place where the analytics service's concrete adapters are wired.

The ClickHouse schema is promo_libs.analytics_schema, applied by sync-consumer at start (and by
the Kubernetes migrations Job in production). This service only reads: until the analytics tables
exist its health reports NOT_SERVING ("clickhouse" probe), and calls answer UNAVAILABLE.
"""

from __future__ import annotations

from analytics_service.adapters.clickhouse_store import ClickHouseStore, HttpRunner
from analytics_service.config import AnalyticsSettings
from analytics_service.entrypoints.grpc_servicer import AnalyticsServicer
from analytics_service.entrypoints.policy import POLICY
from analytics_service.service_layer.analytics import Analytics
from promo.v1 import analytics_pb2, analytics_pb2_grpc
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.grpc.server import GrpcApp
from promo_libs.kit import ServiceKit

SERVICE_NAME = analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name


async def build(settings: AnalyticsSettings) -> GrpcApp:
    """Assembles the service; connecting is lazy, so it starts while ClickHouse is down."""
    kit = ServiceKit(settings, serving=True)
    clickhouse = ClickHouse(settings, timeout_seconds=settings.clickhouse_query_timeout_seconds)
    clickhouse.connect()
    kit.on_close(clickhouse.close)
    analytics = Analytics(ClickHouseStore(HttpRunner(clickhouse), settings.clickhouse_database))
    servicer = AnalyticsServicer(analytics)

    async def ready() -> bool:
        try:
            return await analytics.ready()
        except Exception:
            return False

    return kit.app(
        GrpcApp(
            name="analytics",
            service_names=[SERVICE_NAME],
            policies=[POLICY],
            register=lambda server: analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(
                servicer, server
            ),
            probes={"clickhouse": ready},
        )
    )
