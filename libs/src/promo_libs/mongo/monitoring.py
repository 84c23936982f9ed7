"""PyMongo event listeners that feed the Prometheus metrics (latency per command, pool usage)."""

from __future__ import annotations

from pymongo import monitoring

from promo_libs.metrics import (
    MONGO_COMMAND_LATENCY,
    MONGO_POOL_CHECKED_OUT,
    MONGO_POOL_OPEN,
)


class CommandMetrics(monitoring.CommandListener):
    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        MONGO_COMMAND_LATENCY.labels(event.command_name, "ok").observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        MONGO_COMMAND_LATENCY.labels(event.command_name, "error").observe(
            event.duration_micros / 1e6
        )


class PoolMetrics(monitoring.ConnectionPoolListener):
    def pool_created(self, event: monitoring.PoolCreatedEvent) -> None:
        pass

    def pool_ready(self, event: monitoring.PoolReadyEvent) -> None:
        pass

    def pool_cleared(self, event: monitoring.PoolClearedEvent) -> None:
        pass

    def pool_closed(self, event: monitoring.PoolClosedEvent) -> None:
        pass

    def connection_created(self, event: monitoring.ConnectionCreatedEvent) -> None:
        MONGO_POOL_OPEN.inc()

    def connection_ready(self, event: monitoring.ConnectionReadyEvent) -> None:
        pass

    def connection_closed(self, event: monitoring.ConnectionClosedEvent) -> None:
        MONGO_POOL_OPEN.dec()

    def connection_check_out_started(
        self, event: monitoring.ConnectionCheckOutStartedEvent
    ) -> None:
        pass

    def connection_check_out_failed(self, event: monitoring.ConnectionCheckOutFailedEvent) -> None:
        pass

    def connection_checked_out(self, event: monitoring.ConnectionCheckedOutEvent) -> None:
        MONGO_POOL_CHECKED_OUT.inc()

    def connection_checked_in(self, event: monitoring.ConnectionCheckedInEvent) -> None:
        MONGO_POOL_CHECKED_OUT.dec()
