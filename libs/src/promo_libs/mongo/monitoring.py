"""PyMongo event listeners: the Prometheus metrics (latency per command, pool usage), and a
counter of round trips for tests and benchmarks."""

from __future__ import annotations

import collections
import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class SentCommand:
    database: str
    name: str
    body: Mapping[str, Any]


class CommandCounter(monitoring.CommandListener):
    """Counts the commands a client sends, by name: the MongoDB round trips of a code path, and
    keeps them (for their query plans). (Server monitoring's heartbeats are not commands to a
    CommandListener: not counted.)"""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.commands: list[SentCommand] = []

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        self.counts.clear()
        self.commands.clear()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.counts[event.command_name] += 1
        self.commands.append(
            SentCommand(event.database_name, event.command_name, copy.deepcopy(event.command))
        )

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
