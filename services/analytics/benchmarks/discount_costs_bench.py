"""ListDiscountCosts' SQL over a large history: the rollups against the raw lines, and what the
rollups add to a consumer batch.

    .venv/bin/python services/analytics/benchmarks/discount_costs_bench.py --orders 300000

Starts ClickHouse 18.16 through devstack (or uses CLICKHOUSE_HOST etc.), applies the migrations
to a fresh database and loads `--orders` orders of three lines over 180 days straight into
order_lines with INSERT ... SELECT (every line at version 1, PENDING without a campaign, and
version 2, its final state: 70% CONFIRMED, 20% CANCELLED, 10% still PENDING; 500 products,
40 categories, 8 campaigns, two currencies; order ids begin with their creation second in hex,
as the orders service's ObjectIds do, so order_lines' sort by line is about a sort by time),
then fills the rollups with sync-consumer's own
recomputation over every key, as a rebuild does. Then:
1. each query `--calls` times, one at a time: the statement ListDiscountCosts builds now
   (rollups for whole months and days, raw lines at the partial edges) against the one it
   built before the rollups (the lines of the whole range, `raw`); p50 in ms, and both
   answers compared;
2. a consumer batch of 5,000 confirmed orders with three lines (15,000 rows) on one day: the
   time of the line_costs_daily and line_costs_monthly recomputations for its day and month,
   on a day of the generated size and on a day grown to 50,000 orders.
Not a test: it asserts nothing but equal answers; numbers go to the sync-consumer README.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from analytics_service.adapters import sql
from analytics_service.domain.model import CostGrouping, TimeRange
from devstack.stack import Stack
from promo_libs import analytics_schema
from promo_libs.analytics_schema import LINE_COSTS_DAILY, LINE_COSTS_MONTHLY
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import ClickHouseSettings
from sync_consumer.adapters.derived import refresh_statement

START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 180
LOAD_SETTINGS = {"max_memory_usage": str(8_000_000_000)}
_COLUMNS = (
    "line_id, version, order_id, line_index, order_date, sku, product_id, category_ids,"
    " quantity, unit_price_minor, discount_minor, currency_code, user_id, promo_code_id,"
    " campaign_id, status, create_time, event_id, event_type, event_time, src_stream, src_ms,"
    " src_seq"
)


def _lines(db: str, first: int, count: int, at: str | None = None, final_only: bool = False) -> str:
    """Orders first..first+count with three lines each, at versions 1 and 2 (`final_only`:
    version 2 only); created at a pseudo-random second of the 180 days, or at `at`."""
    created = (
        f"toDateTime('{at}', 'UTC') + toUInt32(n % 3600)"
        if at
        else f"toDateTime('2024-01-01 00:00:00', 'UTC') + toUInt32(n * 7919 % {DAYS * 86400})"
    )
    versions = "[2]" if final_only else "[1, 2]"
    final = (
        "if(n % 10 < 7, 'CONFIRMED', if(n % 10 < 9, 'CANCELLED', 'PENDING'))"
        if not final_only
        else "'CONFIRMED'"
    )
    return (
        f"INSERT INTO {db}.{analytics_schema.ORDER_LINES} ({_COLUMNS})"
        " SELECT concat(oid, '#', toString(i)), toUInt64(ver), oid, toUInt32(i), toDate(t),"
        " concat('s', toString(i)), concat('p', toString((n * 3 + i) * 31 % 500)),"
        " [concat('c', toString((n + i) % 40)), concat('c', toString((n * 7 + i) % 40))],"
        " toInt64(1 + (n + i) % 3), toInt64(100 + (n * 13 + i) % 5000),"
        " if(ver = 2, toInt64((1 + (n + i) % 3) * (100 + (n * 13 + i) % 5000) * (n % 5) / 10),"
        " toInt64(0)), if(n % 4 = 0, 'USD', 'EUR'), concat('u', toString(n % 50000)),"
        " if(ver = 2, concat('code', toString(n % 1000)), ''),"
        " if(ver = 2 AND n % 9 != 0, concat('k', toString(n % 8)), ''),"
        f" if(ver = 2, {final}, 'PENDING'), t, concat(oid, '-', toString(ver)), 'OrderEvent',"
        " t, 'orders', toUInt64(n), toUInt64(ver)"
        " FROM (SELECT n, concat(lower(hex(toUInt32(t))), lower(hex(toUInt64(n)))) AS oid,"
        f" {created} AS t, arrayJoin([0, 1, 2]) AS i, arrayJoin({versions}) AS ver"
        f" FROM (SELECT number AS n FROM system.numbers LIMIT {count} OFFSET {first}))"
    )


def run(stack: Stack, statement: str, timeout: float = 1800) -> str:
    return stack.clickhouse_query(statement, timeout, LOAD_SETTINGS)


def timed(stack: Stack, statement: str, calls: int = 1) -> tuple[float, str]:
    """Median ms over `calls` runs (after one warm-up when calls > 1), and the last answer."""
    times, answer = [], ""
    for n in range(calls + (1 if calls > 1 else 0)):
        started = time.perf_counter()
        answer = run(stack, statement)
        if calls == 1 or n > 0:
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), answer


def raw_discount_costs(
    db: str, time_range: TimeRange, grouping: CostGrouping, limit: int, campaign: str | None
) -> str:
    """The statement ListDiscountCosts built before the rollups: every line of the range."""
    kept = ["state = 'CONFIRMED'"] + ([f"campaign = {sql.quote(campaign)}"] if campaign else [])
    key = "product" if grouping is CostGrouping.PRODUCT else "arrayJoin(arrayDistinct(categories))"
    return (
        f"SELECT currency AS currency_code, {key} AS cost_key,"
        " toInt64(sum(share)) AS discount, toInt64(sum(qty * price)) AS gross,"
        " toInt64(sum(qty)) AS units, toInt64(uniqExact(oid)) AS orders"
        f" FROM ({sql.latest_lines(db, time_range, campaign)}) WHERE {' AND '.join(kept)}"
        " GROUP BY currency_code, cost_key HAVING discount > 0 AND cost_key != ''"
        " ORDER BY currency_code, discount DESC, cost_key"
        f" LIMIT {int(limit)} BY currency_code"
    )


def cases() -> dict[str, tuple[TimeRange, CostGrouping, str | None]]:
    edge = timedelta(hours=7, minutes=13)
    middle = START + timedelta(days=100)
    return {
        "all time, by product": (TimeRange(), CostGrouping.PRODUCT, None),
        "all time, by category": (TimeRange(), CostGrouping.CATEGORY, None),
        "90 days + edges, by product": (
            TimeRange(middle - timedelta(days=90) + edge, middle + edge),
            CostGrouping.PRODUCT,
            None,
        ),
        "7 days + edges, by category": (
            TimeRange(middle - timedelta(days=7) + edge, middle + edge),
            CostGrouping.CATEGORY,
            None,
        ),
        "90 days + edges, one campaign": (
            TimeRange(middle - timedelta(days=90) + edge, middle + edge),
            CostGrouping.PRODUCT,
            "k3",
        ),
        "all time, one campaign, by category": (TimeRange(), CostGrouping.CATEGORY, "k5"),
    }


async def _migrate(settings: ClickHouseSettings, database: str) -> None:
    clickhouse = ClickHouse(settings)
    clickhouse.connect()
    try:
        await analytics_schema.migrate(clickhouse.client, database)
    finally:
        await clickhouse.close()


def refresh_batch(stack: Stack, db: str, day: str) -> tuple[float, float]:
    """ms of the daily and the monthly recomputation of a batch's one day."""
    daily, _ = timed(stack, refresh_statement(LINE_COSTS_DAILY, db, scope={"day": {day}}))
    monthly, _ = timed(stack, refresh_statement(LINE_COSTS_MONTHLY, db, scope={"month": {day}}))
    return daily, monthly


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=300_000, help="orders of three lines")
    parser.add_argument("--calls", type=int, default=5, help="calls per query")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="discount-costs-bench-") as state,
        Stack.from_environ(Path(state)) as stack,
    ):
        db = f"bench_costs_{uuid.uuid4().hex[:8]}"
        try:
            asyncio.run(_migrate(stack.clickhouse_settings(db), db))
            started = time.perf_counter()
            step = 100_000
            for first in range(0, args.orders, step):
                run(stack, _lines(db, first, min(step, args.orders - first)))
            loaded = time.perf_counter() - started
            started = time.perf_counter()
            for table in (LINE_COSTS_DAILY, LINE_COSTS_MONTHLY):
                run(stack, refresh_statement(table, db))
            filled = time.perf_counter() - started
            counts = run(
                stack,
                f"SELECT (SELECT count() FROM {db}.order_lines),"
                f" (SELECT count() FROM {db}.line_costs_daily),"
                f" (SELECT count() FROM {db}.line_costs_monthly)",
            ).split()
            print(
                f"{counts[0]} order_lines rows loaded in {loaded:.1f}s; rollups filled in"
                f" {filled:.1f}s ({counts[1]} daily rows, {counts[2]} monthly rows)"
            )
            print(f"{'query':40} {'rollups ms':>11} {'raw ms':>8}")
            for label, (time_range, grouping, campaign) in cases().items():
                now, answer = timed(
                    stack, sql.discount_costs(db, time_range, grouping, 10, campaign), args.calls
                )
                before, expected = timed(
                    stack, raw_discount_costs(db, time_range, grouping, 10, campaign), args.calls
                )
                same = "" if answer == expected else "  DIFFERENT ANSWERS"
                print(f"{label:40} {now:11.1f} {before:8.1f}{same}")
            # A consumer batch: 5,000 confirmed orders, three lines each, on one day.
            day = "2024-03-15"
            base = 10_000_000
            run(stack, _lines(db, base, 5000, f"{day} 10:00:00", final_only=True))
            daily, monthly = refresh_batch(stack, db, day)
            rows = run(stack, f"SELECT count() FROM {db}.order_lines WHERE order_date = '{day}'")
            print(
                f"batch of 5,000 orders x 3 lines, day of {rows.strip()} rows:"
                f" daily {daily:.0f} ms, monthly {monthly:.0f} ms"
            )
            for n in range(1, 10):
                run(stack, _lines(db, base + n * 5000, 5000, f"{day} 11:00:00", final_only=True))
            daily, monthly = refresh_batch(stack, db, day)
            rows = run(stack, f"SELECT count() FROM {db}.order_lines WHERE order_date = '{day}'")
            print(
                f"batch of 5,000 orders x 3 lines, day of {rows.strip()} rows:"
                f" daily {daily:.0f} ms, monthly {monthly:.0f} ms"
            )
        finally:
            run(stack, f"DROP DATABASE IF EXISTS {db}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
