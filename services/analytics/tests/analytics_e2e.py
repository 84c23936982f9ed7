"""Helpers of the analytics end-to-end tests: processes, migrations, the drain condition."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass

import redis
from analytics_scenario import Scenario

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo_libs import analytics_schema
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import ClickHouseSettings

ANALYTICS = [sys.executable, "-m", "analytics_service"]


@dataclass
class Pipeline:
    scenario: Scenario
    analytics: ServiceProcess
    database: str
    drain_seconds: float


def service(stack: Stack, name: str, argv: list[str], env: dict[str, str]) -> ServiceProcess:
    return stack.service(
        name,
        argv,
        free_port(),
        {"METRICS_PORT": str(free_port()), "HEALTH_CHECK_INTERVAL_SECONDS": "0.2", **env},
    )


def drop(stack: Stack, database: str) -> None:
    with contextlib.suppress(OSError):
        stack.clickhouse_query(f"DROP DATABASE IF EXISTS {database}")


def wait_until_drained(
    client: redis.Redis, streams: Collection[str], group: str, timeout: float
) -> None:
    """sync-consumer's group has acknowledged every entry of every stream, and it acknowledges
    an entry only once its rows are stored.

    Not a count of rows: the event tables are ReplacingMergeTree, and a background merge may
    fold an entity's older versions away at any moment (it did, under load)."""
    deadline = time.monotonic() + timeout
    behind: dict[str, object] = {}
    while time.monotonic() < deadline:
        behind = {}
        for stream in streams:
            last = client.xinfo_stream(stream)["last-generated-id"]
            ours = [g for g in client.xinfo_groups(stream) if g["name"] == group.encode()]
            if not ours or ours[0]["last-delivered-id"] != last or ours[0]["pending"]:
                behind[stream] = ours[0] if ours else "no consumer group yet"
        if not behind:
            return
        time.sleep(0.1)
    raise AssertionError(f"pipeline not drained after {timeout}s: {behind}")


def assert_summed_once(stack: Stack, database: str, scenario: Scenario) -> None:
    """users_analytics (latest row per key) equals the latest state of the event tables."""
    text = stack.clickhouse_query(
        f"SELECT sum(orders), sum(redemptions) FROM {database}.users_analytics FINAL",
    )
    orders, redemptions = (int(value) for value in text.split())
    confirmed = sum(o.status == "CONFIRMED" for o in scenario.orders)
    active = sum(o.cancelled_at is None for o in scenario.usages())
    assert (orders, redemptions) == (confirmed, active)


async def _migrate(settings: ClickHouseSettings) -> None:
    clickhouse = ClickHouse(settings)
    try:
        clickhouse.connect()
        await analytics_schema.migrate(clickhouse.client, clickhouse.database)
    finally:
        await clickhouse.close()


def migrate(stack: Stack, database: str) -> None:
    """sync-consumer's migrations, applied the way it applies them."""
    asyncio.run(_migrate(stack.clickhouse_settings(database)))
