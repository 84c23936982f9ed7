"""The promo-code service's settings: the shared ones, UserService's address and recovery."""

from __future__ import annotations

from pydantic import Field

from promo_libs.config import MongoSettings, OutboxSettings, ServiceSettings


class PromocodesSettings(ServiceSettings, MongoSettings, OutboxSettings):
    grpc_port: int = Field(50052, ge=1, le=65535)
    metrics_port: int = Field(9102, ge=0, le=65535)
    mongodb_db_name: str = Field("promo_promocodes", min_length=1, max_length=63)
    users_addr: str = Field("127.0.0.1:50051", min_length=3, description="UserService host:port")
    users_timeout_seconds: float = Field(2.0, gt=0, le=60)
    # A reservation older than this is settled by the sweep (its request is assumed dead).
    recovery_interval_seconds: float = Field(10.0, gt=0, le=3600)
    recovery_stale_seconds: float = Field(30.0, ge=0, le=86400)
