"""The analytics service's settings: the shared ones plus ClickHouse."""

from __future__ import annotations

from pydantic import Field

from promo_libs.config import ClickHouseSettings, ServiceSettings


class AnalyticsSettings(ServiceSettings, ClickHouseSettings):
    grpc_port: int = Field(50054, ge=1, le=65535)
    metrics_port: int = Field(9104, ge=0, le=65535)
    # Upper bound of one ClickHouse request when the caller sets no deadline.
    clickhouse_query_timeout_seconds: float = Field(30.0, gt=0, le=600)
