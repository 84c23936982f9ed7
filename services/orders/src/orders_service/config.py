"""The order service's settings: the shared ones, the services it calls, and the sweep."""

from __future__ import annotations

from pydantic import Field, model_validator

from promo_libs.config import MongoServiceSettings


class OrdersSettings(MongoServiceSettings):
    grpc_port: int = Field(50053, ge=1, le=65535)
    metrics_port: int = Field(9103, ge=0, le=65535)
    mongodb_db_name: str = Field("promo_orders", min_length=1, max_length=63)
    # A CreateOrder with a cart of 1000 lines (promo_libs.carts) of 64-character skus and
    # product ids and three categories is about 250 KB; the same bound as promocodes, which
    # receives that cart again in RedeemPromoCode.
    grpc_max_receive_bytes: int = Field(1024 * 1024, ge=4096, le=16 * 1024 * 1024)
    users_addr: str = Field("127.0.0.1:50051", min_length=3, description="UserService host:port")
    promocodes_addr: str = Field(
        "127.0.0.1:50052", min_length=3, description="PromoCodeService host:port"
    )
    users_timeout_seconds: float = Field(2.0, gt=0, le=60)
    # Redeem may wait for in-flight reservations of the same code before it answers.
    promocodes_timeout_seconds: float = Field(6.0, gt=0, le=60)
    # Calls to PromoCodeService in flight at once; more wait their turn (within their deadline).
    promocodes_max_in_flight: int = Field(32, ge=1, le=10_000)
    # How often the sweep runs, and how old an unsettled order must be before it is resumed (a
    # live request has given up by then: longer than any call's deadline).
    sweep_interval_seconds: float = Field(10.0, gt=0, le=3600)
    sweep_stale_seconds: float = Field(30.0, gt=0, le=86400)
    sweep_batch_size: int = Field(200, ge=1, le=10_000)

    @model_validator(mode="after")
    def _stale_outlives_calls(self) -> OrdersSettings:
        if self.sweep_stale_seconds <= self.promocodes_timeout_seconds:
            raise ValueError("SWEEP_STALE_SECONDS must be longer than PROMOCODES_TIMEOUT_SECONDS")
        return self
