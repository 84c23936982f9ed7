"""The local stack's ClickHouse users (tools/devstack/clickhouse/users.xml), on the real 18.16
server: the migrator applies the schema, sync-consumer's writer inserts and recomputes but is
refused every DDL statement, analytics' reader reads but is refused writes and DDL. Each refusal
is checked by its effect too (the table or row is not there). The deploy manifests define the
same three users (tests/deploy)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiochclient import ChClientError
from pydantic import SecretStr

from devstack.servers import ClickHouseServer
from devstack.stack import Stack
from promo_libs import analytics_schema
from promo_libs.clickhouse.client import ClickHouse
from sync_consumer.adapters.derived import refresh_statement

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def as_user(stack: Stack) -> AsyncIterator[dict[str, ClickHouse]]:
    """One migrated database, a client for each of the three users."""
    if not stack.is_managed("clickhouse"):
        pytest.skip("the users are the local stack's (users.xml); deploy/ is tested offline")
    database = f"it_users_{uuid.uuid4().hex[:10]}"
    clients = {}
    for role, user in (
        ("migrator", ClickHouseServer.MIGRATOR),
        ("writer", ClickHouseServer.USERS["sync-consumer"]),
        ("reader", ClickHouseServer.USERS["analytics"]),
    ):
        settings = stack.clickhouse_settings(database, user)
        clients[role] = ClickHouse(settings)
        clients[role].connect()
    await analytics_schema.migrate(clients["migrator"].client, database)
    yield clients
    await clients["migrator"].client.execute(f"DROP DATABASE IF EXISTS {database}")
    for client in clients.values():
        await client.close()


async def _tables(clickhouse: ClickHouse) -> set[str]:
    rows = await clickhouse.client.fetch(
        f"SELECT name FROM system.tables WHERE database = '{clickhouse.database}'"
    )
    return {row["name"] for row in rows}


async def _refused(clickhouse: ClickHouse, sql: str, message: str) -> None:
    with pytest.raises(ChClientError) as error:
        await clickhouse.client.execute(sql)
    assert message in str(error.value), str(error.value)


async def test_the_writer_inserts_and_recomputes_but_changes_no_schema(
    as_user: dict[str, ClickHouse],
) -> None:
    writer = as_user["writer"]
    db = writer.database
    await writer.client.execute(
        f"INSERT INTO {db}.schema_migrations (version, name, checksum, applied_at) VALUES",
        (999, "written", "x", "2026-01-01 00:00:00"),
    )
    for derived in analytics_schema.DERIVED_TABLES:
        await writer.client.execute(refresh_statement(derived, db))
    await analytics_schema.require_current(writer.client, db)  # as the consumer starts
    before = await _tables(writer)
    prohibited = "DDL queries are prohibited"
    await _refused(writer, f"CREATE TABLE {db}.intruder (x UInt8) ENGINE = Memory", prohibited)
    await _refused(writer, f"ALTER TABLE {db}.schema_migrations ADD COLUMN y UInt8", prohibited)
    await _refused(writer, f"DROP TABLE {db}.schema_migrations", prohibited)
    await _refused(writer, f"TRUNCATE TABLE {db}.schema_migrations", prohibited)
    await _refused(writer, f"RENAME TABLE {db}.schema_migrations TO {db}.moved", prohibited)
    await _refused(writer, f"CREATE DATABASE {db}_intruder", prohibited)
    # allow_ddl=0 cannot be lifted by the query itself.
    await _refused(writer, "SET allow_ddl = 1", "allow_ddl")
    assert await _tables(writer) == before
    columns = await writer.client.fetch(f"DESCRIBE TABLE {db}.schema_migrations")
    assert "y" not in {row["name"] for row in columns}
    rows = await writer.client.fetch(f"SELECT count() AS n FROM {db}.schema_migrations")
    assert rows[0]["n"] == len(analytics_schema.migrations()) + 1


async def test_the_reader_reads_but_writes_nothing(as_user: dict[str, ClickHouse]) -> None:
    reader = as_user["reader"]
    db = reader.database
    readonly = "readonly mode"
    await _refused(
        reader,
        f"INSERT INTO {db}.schema_migrations (version, name, checksum, applied_at) "
        "VALUES (998, 'read', 'x', '2026-01-01 00:00:00')",
        readonly,
    )
    await _refused(reader, f"CREATE TABLE {db}.intruder (x UInt8) ENGINE = Memory", readonly)
    await _refused(reader, f"DROP TABLE {db}.schema_migrations", readonly)
    await _refused(reader, "SET max_execution_time = 0", readonly)
    rows = await reader.client.fetch(
        f"SELECT count() AS n FROM {db}.schema_migrations WHERE version = 998"
    )
    assert rows[0]["n"] == 0
    assert "intruder" not in await _tables(reader)
    settings = await reader.client.fetch(
        "SELECT name, value FROM system.settings "
        "WHERE name IN ('readonly', 'max_execution_time', 'allow_ddl')"
    )
    assert {row["name"]: row["value"] for row in settings}["max_execution_time"] == "30"


async def test_the_consumer_refuses_a_schema_not_migrated(stack: Stack) -> None:
    """sync-consumer's start (as the writer) on a database no migration reached."""
    if not stack.is_managed("clickhouse"):
        pytest.skip("the users are the local stack's")
    settings = stack.clickhouse_settings(
        f"it_none_{uuid.uuid4().hex[:10]}", ClickHouseServer.USERS["sync-consumer"]
    )
    writer = ClickHouse(settings)
    writer.connect()
    try:
        with pytest.raises(RuntimeError, match="sync_consumer migrate"):
            await analytics_schema.require_current(writer.client, settings.clickhouse_database)
        with pytest.raises(ChClientError, match="DDL queries are prohibited"):
            await analytics_schema.migrate(writer.client, settings.clickhouse_database)
    finally:
        await writer.close()


@pytest.mark.parametrize(
    "user",
    [
        ClickHouseServer.ADMIN,
        ClickHouseServer.MIGRATOR,
        *ClickHouseServer.USERS.values(),
    ],
)
async def test_every_local_user_needs_its_own_password(stack: Stack, user: str) -> None:
    """Issue 13: no user of the local ClickHouse logs in without a password, nor with
    another user's; its own answers."""
    if not stack.is_managed("clickhouse"):
        pytest.skip("the users are the local stack's")
    own = stack.clickhouse_settings(stack.env["CLICKHOUSE_DATABASE"], user)
    other = ClickHouseServer.MIGRATOR if user != ClickHouseServer.MIGRATOR else "default"
    others = stack.clickhouse_settings(stack.env["CLICKHOUSE_DATABASE"], other)
    attempts = {
        "none": own.model_copy(update={"clickhouse_password": SecretStr("")}),
        "another user's": own.model_copy(
            update={"clickhouse_password": others.clickhouse_password}
        ),
    }
    for what, settings in attempts.items():
        client = ClickHouse(settings)
        client.connect()
        try:
            with pytest.raises(ChClientError) as refused:
                await client.client.fetchval("SELECT 1")
            assert re.search("Password required|Wrong password", str(refused.value)), what
        finally:
            await client.close()
    client = ClickHouse(own)
    client.connect()
    try:
        assert await client.client.fetchval("SELECT 1") == 1
    finally:
        await client.close()
