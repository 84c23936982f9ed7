"""Helpers of the analytics end-to-end tests: processes, migrations, the drain condition."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from analytics_scenario import Scenario

import sync_consumer
from devstack.ports import free_port
from devstack.probes import clickhouse_query
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.clickhouse.migrations import apply_migrations, load_migrations
from promo_libs.config import ClickHouseSettings

ANALYTICS = [sys.executable, "-m", "analytics_service"]
MIGRATIONS = Path(sync_consumer.__file__).parent / "migrations"


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
        clickhouse_query(
            stack.clickhouse_host, stack.clickhouse_port, f"DROP DATABASE IF EXISTS {database}"
        )


def wait_until_drained(
    stack: Stack, database: str, expected: dict[str, int], timeout: float
) -> None:
    """Every event table holds one row per published event (sync-consumer is exactly-once)."""
    query = " UNION ALL ".join(
        f"SELECT '{table}', count() FROM {database}.{table}" for table in sorted(expected)
    )
    deadline = time.monotonic() + timeout
    seen: object = None
    while time.monotonic() < deadline:
        try:
            text = clickhouse_query(stack.clickhouse_host, stack.clickhouse_port, query)
            seen = {line.split("\t")[0]: int(line.split("\t")[1]) for line in text.splitlines()}
        except OSError as exc:  # tables not created yet
            seen = repr(exc)
        if seen == expected:
            return
        time.sleep(0.1)
    raise AssertionError(f"pipeline not drained after {timeout}s: {seen} != {expected}")


async def _migrate(settings: ClickHouseSettings) -> None:
    clickhouse = ClickHouse(settings)
    try:
        clickhouse.connect()
        await apply_migrations(clickhouse.client, clickhouse.database, load_migrations(MIGRATIONS))
    finally:
        await clickhouse.close()


def migrate(stack: Stack, database: str) -> None:
    """sync-consumer's migrations, applied the way it applies them."""
    asyncio.run(
        _migrate(
            ClickHouseSettings(
                clickhouse_host=stack.clickhouse_host,
                clickhouse_port=stack.clickhouse_port,
                clickhouse_database=database,
            )
        )
    )
