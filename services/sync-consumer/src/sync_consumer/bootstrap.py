"""Composition root: the one place where sync-consumer's concrete adapters are wired."""

from __future__ import annotations

from promo_libs import analytics_schema
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.grpc.server import GrpcApp
from promo_libs.kit import ServiceKit
from promo_libs.logging import get_logger
from sync_consumer.adapters.clickhouse_sink import ClickHouseSink
from sync_consumer.adapters.event_rows import DERIVED, rows_for
from sync_consumer.adapters.metrics import INSERT_FAILURES
from sync_consumer.adapters.rebuild_gate import RedisRebuildGate
from sync_consumer.adapters.redis_streams import (
    RedisConsumerGroup,
    RedisDeadLetters,
    RedisFailureCounter,
)
from sync_consumer.config import SyncConsumerSettings
from sync_consumer.entrypoints.stream_consumer import StreamConsumer
from sync_consumer.service_layer.pipeline import StreamPipeline

log = get_logger(__name__)


def _on_retry(what: str, exc: Exception) -> None:
    INSERT_FAILURES.labels(what).inc()
    log.warning("storing a batch failed; retrying", target=what, error=str(exc))


async def build(settings: SyncConsumerSettings) -> GrpcApp:
    """Checks the ClickHouse schema, recovers pending entries and assembles the consumer."""
    kit = ServiceKit(settings, serving=True)
    clickhouse = ClickHouse(settings)
    client = clickhouse.connect()
    kit.on_close(clickhouse.close)
    # It writes without DDL rights: `sync_consumer migrate` (the promo-migrations Job) applies
    # the schema, as the migrations user; this process refuses to run on an older one.
    await analytics_schema.require_current(client, settings.clickhouse_database)
    # One client for every Redis command of the consumer (adapters.redis_streams says why not
    # FastStream). A blocking read waits up to batch_wait_ms: the socket must outlast it.
    redis = kit.redis(settings, timeout_seconds=max(10.0, settings.batch_wait_ms / 1000 + 5))
    sink = ClickHouseSink(client, settings.clickhouse_database)
    dead_letters = RedisDeadLetters(redis, settings.consumer_group)
    failures = RedisFailureCounter(redis)
    consumers = [
        StreamConsumer(
            RedisConsumerGroup(redis, stream, settings.consumer_group, settings.consumer_name),
            StreamPipeline(
                stream,
                sink,
                dead_letters,
                rows_for,
                failures,
                max_failures=settings.max_failures,
                on_retry=_on_retry,
                versioned=analytics_schema.ENTITY_KEYS,
                derived=DERIVED,
                gate=RedisRebuildGate(
                    redis, settings.consumer_group, stream, settings.consumer_name
                ),
            ),
            batch_size=settings.batch_size,
            poll_ms=settings.batch_wait_ms,
            claim_idle_ms=settings.claim_idle_ms,
            retention_ms=settings.stream_retention_ms,
        )
        for stream in settings.stream_names
    ]
    for consumer in consumers:
        await consumer.prepare()

    async def redis_up() -> bool:
        return bool(await redis.ping())

    return kit.app(
        GrpcApp(
            name="sync-consumer",
            service_names=[],
            register=lambda server: None,
            probes={"redis": redis_up, "clickhouse": clickhouse.ping},
            background=[
                *(c.read_loop for c in consumers),
                *(c.claim_loop for c in consumers),
                *(c.maintenance_loop for c in consumers),
            ],
        )
    )
