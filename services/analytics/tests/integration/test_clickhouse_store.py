"""The analytics SQL on the local ClickHouse 18.16, with the schema sync-consumer migrates.

Seeded with the rows sync-consumer's own mapper writes for a generated history (one JSONEachRow
INSERT per table, as the consumer batches), then every answer is compared with the truth, read
as the user analytics runs as on the local stack (read-only, time-limited: devstack's users.xml).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiochclient import ChClientError
from analytics_inprocess import servicer_call
from analytics_scenario import Scenario, compare_everything

from analytics_service.adapters.clickhouse_store import ClickHouseStore, HttpRunner
from analytics_service.domain.model import ALL_TIME
from devstack.servers import ClickHouseServer
from devstack.stack import Stack
from promo_libs import analytics_schema
from promo_libs.analytics_schema import DERIVED_TABLES
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.errors import Unavailable
from sync_consumer.adapters.derived import refresh_statement


@pytest_asyncio.fixture(loop_scope="session")
async def clickhouse(stack: Stack) -> AsyncIterator[ClickHouse]:
    settings = stack.clickhouse_settings(f"it_analytics_{uuid.uuid4().hex[:10]}")
    clickhouse = ClickHouse(settings)
    clickhouse.connect()
    yield clickhouse
    await clickhouse.client.execute(f"DROP DATABASE IF EXISTS {clickhouse.database}")
    await clickhouse.close()


@pytest_asyncio.fixture(loop_scope="session")
async def reader(stack: Stack, clickhouse: ClickHouse) -> AsyncIterator[ClickHouse]:
    """The same database, as analytics' own user (on a ClickHouse from the environment: as
    its variables say)."""
    user = ClickHouseServer.USERS["analytics"] if stack.is_managed("clickhouse") else None
    as_analytics = ClickHouse(stack.clickhouse_settings(clickhouse.database, user))
    as_analytics.connect()
    yield as_analytics
    await as_analytics.close()


async def test_before_the_migrations_the_store_is_not_ready(clickhouse: ClickHouse) -> None:
    store = ClickHouseStore(HttpRunner(clickhouse), clickhouse.database)
    assert not await store.ready()
    with pytest.raises(Unavailable) as error:
        await store.order_totals(ALL_TIME)
    assert error.value.reason == "DEPENDENCY_UNAVAILABLE"


async def test_every_answer_equals_the_truth_on_clickhouse_18(
    clickhouse: ClickHouse, reader: ClickHouse
) -> None:
    await analytics_schema.migrate(clickhouse.client, clickhouse.database)
    scenario = Scenario.generate(seed=5)
    for table, rows in scenario.rows().items():
        await clickhouse.client.execute(
            f"INSERT INTO {clickhouse.database}.{table} FORMAT JSONEachRow", *rows, json=True
        )
    # The rollups, by sync-consumer's own recomputation (as live and in a rebuild).
    for derived in DERIVED_TABLES:
        await clickhouse.client.execute(refresh_statement(derived, clickhouse.database))
    store = ClickHouseStore(HttpRunner(reader), reader.database)
    assert await store.ready()
    assert await compare_everything(servicer_call(store), scenario) > 400


async def test_analytics_user_reads_only_and_within_a_time_limit(
    stack: Stack, clickhouse: ClickHouse, reader: ClickHouse
) -> None:
    """readonly=1: no write, no DDL, and no lifting its own limits with SET; every query of the
    user is cut at max_execution_time."""
    if not stack.is_managed("clickhouse"):
        pytest.skip("the users are devstack's; a ClickHouse from the environment has its own")
    await analytics_schema.migrate(clickhouse.client, clickhouse.database)
    rows = await reader.client.fetch(
        "SELECT name, value FROM system.settings "
        "WHERE name IN ('readonly', 'max_execution_time', 'timeout_overflow_mode')"
    )
    assert {row["name"]: row["value"] for row in rows} == {
        "readonly": "1",
        "max_execution_time": "30",
        "timeout_overflow_mode": "throw",
    }
    table = f"{reader.database}.{analytics_schema.ORDERS}"
    for statement in (
        f"INSERT INTO {table} SELECT * FROM {table} LIMIT 0",
        f"CREATE TABLE {reader.database}.intruder (x UInt8) ENGINE = Memory",
        f"DROP TABLE {table}",
        "SET max_execution_time = 0",
    ):
        with pytest.raises(ChClientError, match=r"(?i)readonly"):
            await reader.client.execute(statement)
    assert await clickhouse.client.fetchval(f"EXISTS TABLE {table}") == 1
