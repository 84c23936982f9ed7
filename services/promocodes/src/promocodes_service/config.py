"""The promo-code service's settings: the shared ones, UserService's address and the sweep."""

from __future__ import annotations

from pydantic import Field

from promo_libs.config import MongoServiceSettings


class PromocodesSettings(MongoServiceSettings):
    grpc_port: int = Field(50052, ge=1, le=65535)
    metrics_port: int = Field(9102, ge=0, le=65535)
    mongodb_db_name: str = Field("promo_promocodes", min_length=1, max_length=63)
    # The largest legitimate requests: a PromoCode with 1000 eligible user ids of up to 64
    # characters and a 1000-character description (about 70 KB), and a cart of 1000 lines
    # (promo_libs.carts) with 64-character skus and product ids and three categories (about
    # 250 KB). A cart of 1000 lines at every field's maximum (about 2.8 MB) is refused by the
    # transport, RESOURCE_EXHAUSTED, before any of it is read.
    grpc_max_receive_bytes: int = Field(1024 * 1024, ge=4096, le=16 * 1024 * 1024)
    users_addr: str = Field("127.0.0.1:50051", min_length=3, description="UserService host:port")
    users_timeout_seconds: float = Field(2.0, gt=0, le=60)
    # A reservation older than this is settled by the sweep (its request is assumed dead).
    sweep_interval_seconds: float = Field(10.0, gt=0, le=3600)
    sweep_stale_seconds: float = Field(30.0, ge=0, le=86400)
