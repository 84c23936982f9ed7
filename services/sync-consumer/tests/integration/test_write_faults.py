"""The real sink and the pipeline against ClickHouse 18.16 (or CLICKHOUSE_HOST), with faults cut
inside one INSERT: its source parts committed and then the statement failed, a derived write
failing after its source committed, and a client that timed out while the server went on.

The faults are ClickHouse's own: a materialized view that throws or sleeps runs inside the INSERT
after the source part was committed (DESIGN.md, "ClickHouse"), exactly as a view that hit
TOO_MANY_PARTS would.
"""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from aiochclient import ChClient

from devstack.stack import Stack
from promo_libs import analytics_schema
from promo_libs.analytics_schema import ENTITY_KEYS
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD
from promo_libs.clickhouse.client import ClickHouse
from sync_consumer.adapters.clickhouse_sink import ClickHouseSink
from sync_consumer.adapters.event_rows import DERIVED, rows_for
from sync_consumer.domain.model import Row, StreamEntry
from sync_consumer.service_layer.pipeline import StreamPipeline
from sync_consumer_testing import synthetic
from sync_consumer_testing.memory import InMemoryDeadLetters, InMemoryFailures

JAN = datetime(2024, 1, 31, 23, 0, tzinfo=UTC)
FEB = JAN + timedelta(hours=2)
STREAM = "it.orders"


@pytest.fixture
async def clickhouse(stack: Stack) -> AsyncIterator[ClickHouse]:
    settings = stack.clickhouse_settings(f"it_{uuid.uuid4().hex[:12]}")
    connection = ClickHouse(settings)
    connection.connect()
    await analytics_schema.migrate(connection.client, connection.database)
    yield connection
    await connection.client.execute(f"DROP DATABASE IF EXISTS {connection.database}")
    await connection.close()


def batch() -> list[StreamEntry]:
    """One batch across two months: January's order confirmed then cancelled, February's
    confirmed, and their usages."""
    messages = [
        synthetic.order_event(
            "confirmed", "jan", "u1", JAN, subtotal=1000, discount=100, version=2
        ),
        synthetic.order_event("confirmed", "feb", "u1", FEB, subtotal=2000, version=2),
        synthetic.order_event(
            "cancelled", "jan", "u1", JAN, subtotal=1000, discount=100, version=3
        ),
        synthetic.order_event("confirmed", "feb2", "u1", FEB, subtotal=500, version=2),
        synthetic.usage_event(
            "redeemed", "jan", "p1", "u1", JAN, amount=1000, discount=100, version=1
        ),
        synthetic.usage_event(
            "released", "jan", "p1", "u1", JAN, amount=1000, discount=100, version=2
        ),
        synthetic.usage_event(
            "redeemed", "feb", "p1", "u1", FEB, amount=2000, discount=0, version=1
        ),
    ]
    return [
        StreamEntry(
            STREAM, f"5000-{n}", {EVENT_ID_FIELD: b"x", ENVELOPE_FIELD: m.SerializeToString()}
        )
        for n, m in enumerate(messages)
    ]


SUMMARY = [["2024-01-31", "0", "0", "0", "0"], ["2024-02-01", "2", "2500", "0", "1"]]


def pipeline(sink: ClickHouseSink, on_retry: Callable[[str, Exception], None]) -> StreamPipeline:
    return StreamPipeline(
        STREAM,
        sink,
        InMemoryDeadLetters(),
        rows_for,
        InMemoryFailures(),
        retry_min_seconds=0.05,
        retry_max_seconds=0.2,
        on_retry=on_retry,
        versioned=ENTITY_KEYS,
        derived=DERIVED,
    )


async def rows(clickhouse: ClickHouse, sql: str) -> list[list[str]]:
    text = await clickhouse.client.fetch(sql.format(db=clickhouse.database))
    return [[str(v) for v in row.values()] for row in text]


async def assert_exact(clickhouse: ClickHouse) -> None:
    # Each (entity, version) stored once, not merely deduplicated by FINAL.
    assert await rows(
        clickhouse,
        "SELECT order_id, version, count() FROM {db}.orders_analytics"
        " GROUP BY order_id, version ORDER BY order_id, version",
    ) == [["feb", "2", "1"], ["feb2", "2", "1"], ["jan", "2", "1"], ["jan", "3", "1"]]
    assert await rows(
        clickhouse,
        "SELECT usage_id, version, count() FROM {db}.promo_code_usages_analytics"
        " GROUP BY usage_id, version ORDER BY usage_id, version",
    ) == [["feb", "1", "1"], ["jan", "1", "1"], ["jan", "2", "1"]]
    assert (
        await rows(
            clickhouse,
            "SELECT toString(day), orders, revenue_minor, discounts_minor, redemptions"
            " FROM {db}.users_analytics FINAL ORDER BY day",
        )
        == SUMMARY
    )


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30.0
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def run_with_fault(clickhouse: ClickHouse, fault: str, table: str) -> list[str]:
    """Handles the batch while the view `fault` on `table` throws; drops it after a failure."""
    db = clickhouse.database
    await clickhouse.client.execute(f"CREATE TABLE {db}.sink (x UInt8) ENGINE = Null")
    await clickhouse.client.execute(
        f"CREATE MATERIALIZED VIEW {db}.fault TO {db}.sink AS SELECT {fault} AS x FROM {db}.{table}"
    )
    failures: list[str] = []
    task = asyncio.create_task(
        pipeline(
            ClickHouseSink(clickhouse.client, db), lambda what, _: failures.append(what)
        ).handle(batch())
    )
    await until(lambda: len(failures) >= 1)
    await clickhouse.client.execute(f"DROP TABLE {db}.fault")
    await asyncio.wait_for(task, 30)
    return failures


async def test_an_insert_failing_after_its_parts_of_two_months_committed_lands_once(
    clickhouse: ClickHouse,
) -> None:
    # The view throws on the February rows only: January's part and February's are committed
    # before it runs (one part per partition), the INSERT answers with an error.
    failures = await run_with_fault(
        clickhouse, "toUInt8(throwIf(order_date >= '2024-02-01'))", "orders_analytics"
    )
    assert set(failures) == {"orders_analytics"}
    await assert_exact(clickhouse)


async def test_a_derived_write_failing_after_its_source_committed_is_exact(
    clickhouse: ClickHouse,
) -> None:
    failures = await run_with_fault(
        clickhouse, "toUInt8(throwIf(state_version > 0))", "users_analytics"
    )
    assert set(failures) == {"users_analytics"}
    await assert_exact(clickhouse)


async def test_an_insert_the_client_gave_up_on_while_the_server_committed_is_counted_once(
    clickhouse: ClickHouse, stack: Stack
) -> None:
    db = clickhouse.database
    # One source block (one part) per row, each followed by a 0.4 s view: the INSERT of four
    # orders takes 1.6 s on the server, its client gives up after 0.7 s.
    await clickhouse.client.execute(f"CREATE TABLE {db}.sink (x UInt8) ENGINE = Null")
    await clickhouse.client.execute(
        f"CREATE MATERIALIZED VIEW {db}.slow TO {db}.sink AS SELECT toUInt8(sleep(0.4)) AS x"
        f" FROM {db}.orders_analytics"
    )
    stored_at_timeout: list[int] = []

    def on_retry(what: str, exc: Exception) -> None:
        if what == "orders_analytics" and not stored_at_timeout:
            # Read at once, before the retry settles the query: how far the server had got.
            counted = stack.clickhouse_query(
                f"SELECT count() FROM {db}.orders_analytics",
            )
            stored_at_timeout.append(int(counted))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.7)) as session:
        client = ChClient(
            session,
            url=clickhouse.url,
            user=clickhouse.settings.clickhouse_user,
            password=clickhouse.settings.clickhouse_password.get_secret_value(),
            database="default",
            # One block, hence one part, per row: nothing squashes them together.
            max_insert_block_size=1,
            min_insert_block_size_rows=0,
            min_insert_block_size_bytes=0,
        )
        task = asyncio.create_task(pipeline(ClickHouseSink(client, db), on_retry).handle(batch()))
        await until(lambda: bool(stored_at_timeout))
        await clickhouse.client.execute(f"DROP TABLE {db}.slow")
        await asyncio.wait_for(task, 30)
    # The server was still inserting when the client gave up.
    assert stored_at_timeout[0] < 4
    await assert_exact(clickhouse)


class CountingSink(ClickHouseSink):
    """The real sink, remembering how many rows each INSERT sent per table."""

    def __init__(self, client: ChClient, database: str) -> None:
        super().__init__(client, database)
        self.sent: dict[str, list[int]] = {}

    async def insert(self, table: str, rows: Sequence[Row]) -> None:
        self.sent.setdefault(table, []).append(len(rows))
        await super().insert(table, rows)


async def test_an_order_whose_lines_insert_failed_between_its_parts_gets_every_line_once(
    clickhouse: ClickHouse, stack: Stack
) -> None:
    """Issue 14: one order of four lines, one part per line, and a view that throws after the
    third line's part committed: the INSERT stops there, the fourth line never lands. The
    guard, keyed by line, sends exactly that line again; one keyed by order would find the
    order's version stored and skip it for good."""
    db = clickhouse.database
    message = synthetic.order_event("confirmed", "cart", "u1", FEB, subtotal=800, version=2)
    for n in range(4):
        message.order_confirmed.order.lines.add(
            sku=f"s{n}", product_id="p", quantity=1, unit_price_minor=200, discount_minor=n
        )
    cart = [
        StreamEntry(
            STREAM, "6000-0", {EVENT_ID_FIELD: b"x", ENVELOPE_FIELD: message.SerializeToString()}
        )
    ]
    await clickhouse.client.execute(f"CREATE TABLE {db}.sink (x UInt8) ENGINE = Null")
    await clickhouse.client.execute(
        f"CREATE MATERIALIZED VIEW {db}.fault TO {db}.sink AS"
        f" SELECT toUInt8(throwIf(line_index = 2)) AS x FROM {db}.order_lines"
    )
    stored_at_failure: list[int] = []

    def on_retry(what: str, exc: Exception) -> None:
        if what == "order_lines" and not stored_at_failure:
            counted = stack.clickhouse_query(
                f"SELECT count() FROM {db}.order_lines",
            )
            stored_at_failure.append(int(counted))

    async with aiohttp.ClientSession() as session:
        client = ChClient(
            session,
            url=clickhouse.url,
            user=clickhouse.settings.clickhouse_user,
            password=clickhouse.settings.clickhouse_password.get_secret_value(),
            database="default",
            # One block, hence one part, per row: nothing squashes them together.
            max_insert_block_size=1,
            min_insert_block_size_rows=0,
            min_insert_block_size_bytes=0,
        )
        sink = CountingSink(client, db)
        task = asyncio.create_task(pipeline(sink, on_retry).handle(cart))
        await until(lambda: bool(stored_at_failure))
        await clickhouse.client.execute(f"DROP TABLE {db}.fault")
        await asyncio.wait_for(task, 30)
    assert stored_at_failure == [3]  # lines 0-2 committed, the fourth never sent to a part
    # The retries sent the missing line only, once (a guard keyed by order would send none).
    assert sink.sent["order_lines"][0] == 4 and sum(sink.sent["order_lines"][1:]) == 1, sink.sent
    assert await rows(
        clickhouse,
        "SELECT line_id, version, discount_minor, count() FROM {db}.order_lines"
        " GROUP BY line_id, version, discount_minor ORDER BY line_id",
    ) == [[f"cart#{n}", "2", str(n), "1"] for n in range(4)]


async def test_a_cart_delivered_again_after_a_crash_before_its_line_refresh_is_exact(
    clickhouse: ClickHouse,
) -> None:
    """A cart's rows all stored, then the process died before recomputing the line costs: the
    redelivered batch has every row skipped by the guard, and its refresh scope still holds
    their day and month (the pipeline scopes the whole batch, skipped rows included)."""
    db = clickhouse.database
    message = synthetic.order_event(
        "confirmed", "cart", "u1", FEB, subtotal=900, discount=30, code_id="p1",
        campaign_id="k1", version=2,
    )  # fmt: skip
    for n in range(3):
        message.order_confirmed.order.lines.add(
            sku=f"s{n}", product_id=f"p{n % 2}", category_ids=["spring"], quantity=1,
            unit_price_minor=300, discount_minor=10,
        )  # fmt: skip
    cart = [
        StreamEntry(
            STREAM, "7000-0", {EVENT_ID_FIELD: b"x", ENVELOPE_FIELD: message.SerializeToString()}
        )
    ]
    sink = ClickHouseSink(clickhouse.client, db)
    by_table: dict[str, list[Row]] = {}
    for table_row in rows_for(cart[0]):
        by_table.setdefault(table_row.table, []).append(table_row.row)
    for table, stored in by_table.items():  # stored; no recomputation ran
        await sink.insert(table, stored)
    costs = (
        "SELECT kind, cost_key, campaign_id, discount_minor, gross_minor, units, orders"
        " FROM {db}.%s FINAL WHERE orders > 0 ORDER BY kind, cost_key"
    )
    assert await rows(clickhouse, costs % "line_costs_daily") == []
    sent = CountingSink(clickhouse.client, db)
    await pipeline(sent, lambda what, exc: None).handle(cart)
    assert sent.sent == {}  # every row skipped as stored
    expected = [
        ["category", "spring", "k1", "30", "900", "3", "1"],
        ["product", "p0", "k1", "20", "600", "2", "1"],
        ["product", "p1", "k1", "10", "300", "1", "1"],
    ]
    assert await rows(clickhouse, costs % "line_costs_daily") == expected
    assert await rows(clickhouse, costs % "line_costs_monthly") == expected
