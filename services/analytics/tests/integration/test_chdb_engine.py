"""Every migration and every analytics query on a current ClickHouse engine, embedded by chdb.

The local server is ClickHouse 18.16; production runs a current one. This runs sync-consumer's
migrations (through promo_libs' runner) and the analytics service's SQL in chdb, seeded with the
rows sync-consumer writes for a generated history, and compares every answer with the truth
computed in Python. Needs the `chdb` package (root pyproject, dev extras); no server.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import Iterator
from typing import Any

import chdb.session
import discount_costs_scenario
import pytest
from aiochclient.types import rows2ch
from analytics_inprocess import servicer_call
from analytics_scenario import Scenario, compare_everything, insert_statements

from analytics_service.adapters.clickhouse_store import ClickHouseStore, SqlRunner
from promo_libs import analytics_schema
from promo_libs.analytics_schema import DERIVED_TABLES
from promo_libs.bus import ENVELOPE_FIELD
from promo_libs.clickhouse.migrations import apply_migrations
from sync_consumer.adapters.derived import refresh_statement
from sync_consumer.adapters.event_rows import rows_for
from sync_consumer.domain.model import StreamEntry

DATABASE = "analytics"


class Chdb(SqlRunner):
    """chdb as a SqlRunner, and as much of aiochclient's ChClient as the migrations use."""

    def __init__(self, path: str) -> None:
        self.session = chdb.session.Session(path)
        self.statements: list[str] = []

    def run(self, statement: str, fmt: str = "JSONEachRow") -> str:
        self.statements.append(statement)
        return str(self.session.query(statement, fmt))

    async def rows(self, statement: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.run(statement).splitlines() if line.strip()]

    async def alive(self) -> bool:
        return True

    # ChClient's surface used by promo_libs.clickhouse.migrations
    async def execute(self, query: str, *args: Any) -> None:
        if args:
            query = f"{query} {rows2ch(*args).decode()}"
        self.run(query, "CSV")

    async def fetch(self, query: str) -> list[dict[str, Any]]:
        return await self.rows(query)


@pytest.fixture(scope="module")
def engine() -> Iterator[Chdb]:
    with tempfile.TemporaryDirectory() as path:
        runner = Chdb(path)
        yield runner
        runner.session.close()


def test_the_migrations_apply_and_apply_again(engine: Chdb) -> None:
    migrations = analytics_schema.migrations()
    assert asyncio.run(apply_migrations(engine, DATABASE, migrations)) == [
        m.version for m in migrations
    ]
    assert asyncio.run(apply_migrations(engine, DATABASE, migrations)) == []
    tables = engine.run(f"SELECT name FROM system.tables WHERE database = '{DATABASE}'", "CSV")
    for table in ("orders_analytics", "promo_code_usages_analytics", "users_analytics"):
        assert table in tables


def test_every_query_answers_the_truth(engine: Chdb) -> None:
    scenario = Scenario.generate(seed=11)
    for statement in insert_statements(DATABASE, scenario):
        engine.run(statement)
    # Derived tables are recomputed by sync-consumer's own statements (no materialized views).
    for derived in DERIVED_TABLES:
        engine.run(refresh_statement(derived, DATABASE))
    store = ClickHouseStore(engine, DATABASE)
    before = len(engine.statements)
    compared = asyncio.run(compare_everything(servicer_call(store), scenario, concurrency=1))
    assert compared > 400
    assert asyncio.run(store.ready())
    # The recomputed users_analytics (current engine) agrees with the event tables too.
    confirmed_now = sum(o.status == "CONFIRMED" for o in scenario.orders)
    summed = f"SELECT sum(orders) FROM {DATABASE}.users_analytics FINAL"
    assert engine.run(summed, "CSV").strip() == (str(confirmed_now))
    assert len(engine.statements) - before > 1000  # every kind of statement ran many times


def test_discount_costs_answer_the_truth_on_the_current_engine(engine: Chdb) -> None:
    """ListDiscountCosts' SQL (argMax edges, the line_costs rollups and their recomputation,
    arrayJoin over categories, LIMIT BY) on current ClickHouse, over the order_lines rows
    sync-consumer writes for generated carts."""
    orders = discount_costs_scenario.generate(seed=3)
    rows = []
    for n, event in enumerate(
        (e for order in orders for e in discount_costs_scenario.order_events(order)), start=1
    ):
        entry = StreamEntry("orders", f"{n}-0", {ENVELOPE_FIELD: event.SerializeToString()})
        rows += [r.row for r in rows_for(entry) if r.table == analytics_schema.ORDER_LINES]
    body = "\n".join(json.dumps(row) for row in rows)
    engine.run(f"INSERT INTO {DATABASE}.{analytics_schema.ORDER_LINES} FORMAT JSONEachRow\n{body}")
    # The rollups by sync-consumer's own statements, days before months (DERIVED_TABLES' order).
    for derived in (analytics_schema.LINE_COSTS_DAILY, analytics_schema.LINE_COSTS_MONTHLY):
        engine.run(refresh_statement(derived, DATABASE))
    call = servicer_call(ClickHouseStore(engine, DATABASE))
    cases = discount_costs_scenario.all_cases()
    for case in cases:
        answer = asyncio.run(call("ListDiscountCosts", discount_costs_scenario.request(*case)))
        assert answer == discount_costs_scenario.truth(orders, *case), case
    assert len(cases) > 100
