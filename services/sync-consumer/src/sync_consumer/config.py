"""sync-consumer's settings: the shared ones plus batching, claiming and dead-lettering."""

from __future__ import annotations

import socket

from pydantic import Field

from promo_libs.config import ClickHouseSettings, RedisSettings, ServiceSettings


class SyncConsumerSettings(ServiceSettings, RedisSettings, ClickHouseSettings):
    grpc_port: int = Field(50055, ge=1, le=65535)
    metrics_port: int = Field(9105, ge=0, le=65535)
    consumer_group: str = Field("sync-consumer", min_length=1)
    # One ordered consumer per stream: a stable name lets a restarted process find its batch.
    consumer_name: str = Field(default_factory=socket.gethostname, min_length=1)
    batch_size: int = Field(5000, ge=1, le=100_000, description="Most entries per INSERT")
    batch_wait_ms: int = Field(1000, ge=10, le=60_000, description="Longest wait for a batch")
    claim_idle_ms: int = Field(30_000, ge=100, description="Claim entries idle this long")
    max_failures: int = Field(
        5, ge=1, description="Dead-letter an entry whose rows were refused this many times"
    )
    stream_retention_ms: int = Field(
        3_600_000, ge=0, description="Keep acknowledged history this long before trimming"
    )
    streams: str = Field(
        "promo.events.users,promo.events.promo_codes,promo.events.orders",
        description="Comma-separated streams to consume",
    )

    @property
    def stream_names(self) -> list[str]:
        return [name.strip() for name in self.streams.split(",") if name.strip()]
