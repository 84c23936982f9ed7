"""Migrations and the sink against the local ClickHouse (18.16) or the one CLICKHOUSE_HOST names."""

import uuid
from collections.abc import AsyncIterator

import pytest

from devstack.stack import Stack
from promo_libs import analytics_schema
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.clickhouse.migrations import apply_migrations
from sync_consumer import rebuild
from sync_consumer.adapters.clickhouse_sink import ClickHouseSink
from sync_consumer.adapters.derived import refresh_statement, refresh_users_analytics
from sync_consumer.adapters.event_rows import DERIVED
from sync_consumer.rebuild import REBUILD


@pytest.fixture
async def clickhouse(stack: Stack) -> AsyncIterator[ClickHouse]:
    settings = stack.clickhouse_settings(f"it_{uuid.uuid4().hex[:12]}")
    connection = ClickHouse(settings)
    connection.connect()
    yield connection
    await connection.client.execute(f"DROP DATABASE IF EXISTS {connection.database}")
    await connection.close()


async def test_migrations_create_everything_once_and_are_recorded(clickhouse: ClickHouse) -> None:
    migrations = analytics_schema.migrations()
    db = clickhouse.database
    every = list(range(1, len(migrations) + 1))
    assert [m.version for m in migrations] == every
    assert await apply_migrations(clickhouse.client, db, migrations) == every
    assert await apply_migrations(clickhouse.client, db, migrations) == []
    # A process that died after the statements but before recording them applies them again.
    await clickhouse.client.execute(f"DROP TABLE {db}.schema_migrations")
    assert await apply_migrations(clickhouse.client, db, migrations) == every
    tables = {
        row["name"]
        for row in await clickhouse.client.fetch(
            "SELECT name FROM system.tables WHERE database = {db}", params={"db": db}
        )
    }
    assert {
        "users",
        "promo_codes",
        "promo_code_usages_analytics",
        "orders_analytics",
        "users_analytics",
        "orders_daily",
        "usages_daily",
        "code_orders_daily",
        "orders_monthly",
        "usages_monthly",
        "code_orders_monthly",
        "code_dictionary",
        "campaigns",
        "order_lines",
        "line_costs_daily",
        "line_costs_monthly",
        "orders_hourly",
        "code_orders_hourly",
        "schema_migrations",
    } <= tables
    # 011's ADD COLUMNs ran twice above (18.16 has no IF NOT EXISTS there): once each; 012's
    # order_lines has the column from its CREATE.
    with_campaign = [
        row["table"]
        for row in await clickhouse.client.fetch(
            "SELECT table FROM system.columns WHERE database = {db} AND name = 'campaign_id'"
            " ORDER BY table",
            params={"db": db},
        )
    ]
    assert with_campaign == [
        "campaigns",
        "line_costs_daily",  # 013 and 014: the campaign is part of the rollups' key
        "line_costs_monthly",
        "order_lines",
        "orders_analytics",
        "promo_code_usages_analytics",
        "promo_codes",
    ]
    # No materialized view is left to feed users_analytics: it is recomputed (adapters.derived).
    assert not {"users_analytics_from_orders", "users_analytics_from_usages"} & tables
    engine = await clickhouse.client.fetchval(
        "SELECT engine FROM system.tables WHERE database = {db} AND name = 'users_analytics'",
        params={"db": db},
    )
    assert engine == "ReplacingMergeTree"


async def test_refresh_recomputes_latest_state_and_repeating_it_changes_nothing(
    clickhouse: ClickHouse,
) -> None:
    db = clickhouse.database
    await analytics_schema.migrate(clickhouse.client, db)
    sink = ClickHouseSink(clickhouse.client, db)

    def order(n: int, status: str, version: int, day: str) -> dict[str, object]:
        return {
            "order_id": f"o{n}",
            "version": version,
            "order_date": day,
            "user_id": "u1",
            "currency_code": "EUR",
            "total_minor": 900,
            "discount_minor": 100,
            "status": status,
            "create_time": f"{day} 23:59:59",
        }

    # Two months in one INSERT (two parts), one order cancelled afterwards.
    await sink.insert(
        "orders_analytics",
        [order(1, "CONFIRMED", 2, "2024-02-29"), order(2, "CONFIRMED", 2, "2024-03-01")],
    )
    await sink.insert("orders_analytics", [order(1, "CANCELLED", 3, "2024-02-29")])
    scope = {"user_id": {"u1"}, "day": {"2024-02-29", "2024-03-01"}}
    totals = (
        f"SELECT toString(day) AS day, orders, revenue_minor, discounts_minor"
        f" FROM {db}.users_analytics FINAL ORDER BY day"
    )
    for _ in range(3):  # a retry, a redelivery: the same answer, never a sum of attempts
        await sink.refresh("users_analytics", scope)
        rows = [tuple(r.values()) for r in await clickhouse.client.fetch(totals)]
        assert rows == [("2024-02-29", 0, 0, 0), ("2024-03-01", 1, 900, 100)]
    # A refresh narrowed to other users or days leaves these keys alone.
    await sink.refresh("users_analytics", {"user_id": {"u2"}, "day": {"2024-02-29"}})
    assert len(await clickhouse.client.fetch(totals)) == 2


async def _store_and_refresh(
    sink: ClickHouseSink, table: str, derived: str, rows: list[dict[str, object]]
) -> None:
    """Stores rows and refreshes `derived` with the scope the pipeline builds for them."""
    (scope_of,) = [f for name, f in DERIVED[table] if name == derived]
    scope: dict[str, set[str]] = {}
    for row in rows:
        for column, value in scope_of(row).items():
            scope.setdefault(column, set()).add(value)
    await sink.insert(table, rows)
    await sink.refresh(derived, scope)


async def test_usages_daily_follows_a_release_after_it_was_computed(
    clickhouse: ClickHouse,
) -> None:
    db = clickhouse.database
    await analytics_schema.migrate(clickhouse.client, db)
    sink = ClickHouseSink(clickhouse.client, db)
    table = "promo_code_usages_analytics"

    def usage(n: int, user: str, created: str, **state: object) -> dict[str, object]:
        return {
            "usage_id": f"u{n}",
            "version": 1,
            "usage_date": created[:10],
            "promo_code_id": "p1",
            "code": "SPRING",
            "user_id": user,
            "currency_code": "EUR",
            "order_amount_minor": 1000,
            "discount_minor": 100,
            "status": "ACTIVE",
            "create_time": created,
            **state,
        }

    async def store_and_refresh(rows: list[dict[str, object]]) -> None:
        await _store_and_refresh(sink, table, "usages_daily", rows)

    # Two months in one INSERT, two holders on the first day, one of them twice.
    await store_and_refresh(
        [
            usage(1, "a", "2024-02-29 23:00:00"),
            usage(2, "a", "2024-02-29 23:30:00"),
            usage(3, "b", "2024-02-29 23:40:00"),
            usage(4, "a", "2024-03-01 00:10:00"),
        ]
    )
    # Released two days later, after the rollup of its creation day was computed.
    released = usage(
        1, "a", "2024-02-29 23:00:00", version=2, status="RELEASED",
        release_time="2024-03-02 08:00:00",
    )  # fmt: skip
    rollup = (
        "SELECT toString(day) AS d, redemptions, active, active_discount_minor,"
        " active_order_amount_minor, releases, holders, code_texts"
        f" FROM {db}.usages_daily FINAL ORDER BY d"
    )
    for _ in range(3):  # a retry, a redelivery: the same answer, never a sum of attempts
        await store_and_refresh([released])
        rows = [tuple(r.values()) for r in await clickhouse.client.fetch(rollup)]
        assert rows == [
            ("2024-02-29", 3, 2, 200, 2000, 0, ["a", "b"], ["SPRING"]),
            ("2024-03-01", 1, 1, 100, 1000, 0, ["a"], ["SPRING"]),
            ("2024-03-02", 0, 0, 0, 0, 1, [], []),
        ]


@pytest.mark.parametrize(
    ("derived", "period"),
    [("code_orders_daily", "2024-02-29"), ("code_orders_hourly", "2024-02-29 12:00:00")],
)
async def test_code_orders_rollups_follow_an_order_that_gains_a_code_then_is_cancelled(
    clickhouse: ClickHouse, derived: str, period: str
) -> None:
    db = clickhouse.database
    await analytics_schema.migrate(clickhouse.client, db)
    sink = ClickHouseSink(clickhouse.client, db)
    table = "orders_analytics"

    def order(n: int, version: int, status: str, code: str) -> dict[str, object]:
        return {
            "order_id": f"o{n}",
            "version": version,
            "order_date": "2024-02-29",
            "user_id": f"u{n}",
            "currency_code": "EUR",
            "total_minor": 900,
            "discount_minor": 100,
            "status": status,
            "promo_code_id": code,
            "create_time": f"2024-02-29 12:{n:02}:00",
        }

    async def store_and_refresh(rows: list[dict[str, object]]) -> None:
        await _store_and_refresh(sink, table, derived, rows)

    # The hourly rollup holds no buyers (a series reports none).
    daily = derived == "code_orders_daily"
    rollup = (
        f"SELECT toString({'day' if daily else 'hour'}), promo_code_id, orders, confirmed,"
        f" cancelled, revenue_minor{', buyers' if daily else ''}"
        f" FROM {db}.{derived} FINAL ORDER BY promo_code_id"
    )

    def expected(*values: object) -> list[tuple[object, ...]]:
        return [(period, *values[: None if daily else -1])]

    # Pending without a code (no key), then confirmed with one; a second order of p1 too.
    await store_and_refresh([order(1, 1, "PENDING", ""), order(2, 2, "CONFIRMED", "p1")])
    assert [tuple(r.values()) for r in await clickhouse.client.fetch(rollup)] == expected(
        "p1", 1, 1, 0, 900, ["u2"]
    )
    await store_and_refresh([order(1, 2, "CONFIRMED", "p1")])
    for _ in range(3):  # cancelled after the rollup was computed; repeated: the same answer
        await store_and_refresh([order(1, 3, "CANCELLED", "p1")])
        rows = [tuple(r.values()) for r in await clickhouse.client.fetch(rollup)]
        assert rows == expected("p1", 2, 1, 1, 900, ["u1", "u2"])


async def test_line_costs_follow_lines_after_a_merge_dropped_their_pending_versions(
    clickhouse: ClickHouse,
) -> None:
    """A line is PENDING without a campaign, then CONFIRMED with one: a background merge of
    order_lines keeps only its latest version, so "the campaigns a line ever named" loses ''.
    The '' key (lines without a campaign) must still follow a later order without one: its
    state version may not drop with the merge, or the earlier, higher one wins for good."""
    db = clickhouse.database
    await analytics_schema.migrate(clickhouse.client, db)
    sink = ClickHouseSink(clickhouse.client, db)

    def line(order: str, version: int, status: str, campaign: str, off: int) -> dict[str, object]:
        return {
            "line_id": f"{order}#0",
            "version": version,
            "order_id": order,
            "line_index": 0,
            "order_date": "2024-02-29",
            "product_id": "shoe",
            "category_ids": ["spring"],
            "quantity": 2,
            "unit_price_minor": 3000,
            "discount_minor": off,
            "currency_code": "EUR",
            "campaign_id": campaign,
            "status": status,
            "create_time": "2024-02-29 12:00:00",
        }

    async def store_and_refresh(rows: list[dict[str, object]]) -> None:
        # As the pipeline does: the rows stored, then each rollup they feed, days first.
        await sink.insert("order_lines", rows)
        for derived, scope_of in DERIVED["order_lines"]:
            scope: dict[str, set[str]] = {}
            for row in rows:
                for column, value in scope_of(row).items():
                    scope.setdefault(column, set()).add(value)
            await sink.refresh(derived, scope)

    async def costs(table: str) -> list[tuple[object, ...]]:
        return [
            tuple(r.values())
            for r in await clickhouse.client.fetch(
                "SELECT kind, campaign_id, discount_minor, gross_minor, units, orders"
                f" FROM {db}.{table} FINAL WHERE orders > 0 ORDER BY kind, campaign_id"
            )
        ]

    # o1: pending without a campaign, confirmed with k1, cancelled (its version skips one: a
    # cancellation request bumps it without an event).
    await store_and_refresh([line("o1", 1, "PENDING", "", 0)])
    await store_and_refresh([line("o1", 2, "CONFIRMED", "k1", 600)])
    await store_and_refresh([line("o1", 4, "CANCELLED", "k1", 600)])
    await clickhouse.client.execute(f"OPTIMIZE TABLE {db}.order_lines FINAL")
    # o2: pending, then confirmed without a campaign, after the merge.
    await store_and_refresh([line("o2", 1, "PENDING", "", 0), line("o2", 2, "CONFIRMED", "", 0)])
    for table in ("line_costs_daily", "line_costs_monthly"):
        assert await costs(table) == [
            ("category", "", 0, 6000, 2, 1),
            ("product", "", 0, 6000, 2, 1),
        ], table


async def test_latest_versions_of_many_ids_with_any_characters(clickhouse: ClickHouse) -> None:
    db = clickhouse.database
    await analytics_schema.migrate(clickhouse.client, db)
    sink = ClickHouseSink(clickhouse.client, db)
    # More ids than one query holds, and ids that would break a naive literal or separator.
    odd = ["it's", "a,b", "back\\slash", "tab\there", "ünï", "x" * 200]
    ids = [*odd, *(f"usage-{n:05}-{'u' * 50}" for n in range(2500))]  # several queries' worth

    def usage(usage_id: str, version: int, seq: int) -> dict[str, object]:
        return {
            "usage_id": usage_id,
            "version": version,
            "usage_date": "2024-03-01",
            "src_stream": "s",
            "src_ms": 1,
            "src_seq": seq,
        }

    table = "promo_code_usages_analytics"
    await sink.insert(table, [usage(i, 1, n) for n, i in enumerate(ids)])
    await sink.insert(table, [usage(i, 4, 10_000 + n) for n, i in enumerate(ids[::7])])
    latest = await sink.latest_versions(table, "usage_id", [*ids, "never-stored"])
    assert latest == {i: 4 if n % 7 == 0 else 1 for n, i in enumerate(ids)}


async def test_refresh_of_a_batch_with_more_user_ids_than_one_query_holds(
    clickhouse: ClickHouse,
) -> None:
    db = clickhouse.database
    await analytics_schema.migrate(clickhouse.client, db)
    sink = ClickHouseSink(clickhouse.client, db)
    # 3,000 users of 64-character ids: about 390 KB hex-encoded, past max_query_size (256 KiB).
    users = [f"user-{n:05}-{'x' * 53}" for n in range(3000)]
    await sink.insert(
        "orders_analytics",
        [
            {
                "order_id": f"o{n}",
                "version": 2,
                "order_date": "2024-03-01",
                "user_id": user,
                "currency_code": "EUR",
                "total_minor": 100,
                "status": "CONFIRMED",
            }
            for n, user in enumerate(users)
        ],
    )
    await sink.refresh("users_analytics", {"user_id": set(users), "day": {"2024-03-01"}})
    row = await clickhouse.client.fetchrow(
        f"SELECT count() AS keys, sum(orders) AS o FROM {db}.users_analytics FINAL"
    )
    assert row is not None and (row["keys"], row["o"]) == (3000, 3000)


async def test_the_rebuild_fills_derived_tables_in_several_chunks_equal_to_live(
    clickhouse: ClickHouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """users_analytics by user chunks and the daily rollups by day chunks (a release one day
    after its creation included) equal the single statements' tables, and so the months."""
    db = clickhouse.database
    await analytics_schema.migrate(clickhouse.client, db)
    sink = ClickHouseSink(clickhouse.client, db)

    def day(n: int) -> str:
        return f"2024-0{1 + n % 2}-0{1 + n % 5}"

    await sink.insert(
        "orders_analytics",
        [
            {
                "order_id": f"o{n}",
                "version": 1 + n % 2,
                "order_date": day(n),
                "user_id": f"u{n % 9}",
                "currency_code": "EUR",
                "promo_code_id": f"c{n % 3}" if n % 2 else "",
                "total_minor": 50 + n,
                "discount_minor": 5,
                "status": "CONFIRMED" if n % 3 else "CANCELLED",
                "create_time": f"{day(n)} 08:00:00",
            }
            for n in range(40)
        ],
    )
    await sink.insert(
        "promo_code_usages_analytics",
        [
            {
                "usage_id": f"s{n}",
                "version": 1 + n % 2,
                "usage_date": day(n),
                "promo_code_id": f"c{n % 3}",
                "code": f"CODE-{n % 3}",
                "user_id": f"u{n % 9}",
                "order_id": f"o{n}",
                "currency_code": "EUR",
                "order_amount_minor": 50 + n,
                "discount_minor": 5,
                "status": "RELEASED" if n % 2 else "ACTIVE",
                "release_time": f"{day(n)[:-1]}{2 + n % 5} 09:00:00"
                if n % 2
                else "1970-01-01 00:00:00",
                "create_time": f"{day(n)} 08:00:00",
            }
            for n in range(30)
        ],
    )
    # Two lines per order: PENDING without a campaign, and for odd orders a second version
    # with the order's status and a campaign (line_costs_daily's keys move between campaigns).
    await sink.insert(
        "order_lines",
        [
            {
                "line_id": f"o{n}#{i}",
                "version": version,
                "order_id": f"o{n}",
                "line_index": i,
                "order_date": day(n),
                "product_id": f"p{(n + i) % 4}",
                "category_ids": [f"g{n % 3}", "all"],
                "quantity": 1 + i,
                "unit_price_minor": 100 + n,
                "discount_minor": 3 * version,
                "currency_code": "EUR",
                "campaign_id": f"k{n % 4}" if version == 2 else "",
                "status": ("CONFIRMED" if n % 3 else "CANCELLED") if version == 2 else "PENDING",
                "create_time": f"{day(n)} 08:00:00",
            }
            for n in range(40)
            for i in range(2)
            for version in ((1, 2) if n % 2 else (1,))
        ],
    )
    for derived in analytics_schema.DERIVED_TABLES:
        await clickhouse.client.execute(refresh_statement(derived, db))
    for table in analytics_schema.TABLES:
        await clickhouse.client.execute(f"CREATE TABLE {db}.{table}{REBUILD} AS {db}.{table}")
    for table in ("orders_analytics", "promo_code_usages_analytics", "order_lines"):
        await clickhouse.client.execute(
            f"INSERT INTO {db}.{table}{REBUILD} SELECT * FROM {db}.{table}"
        )
    monkeypatch.setattr(rebuild, "CHUNK_ROWS", 11)
    # 40 orders, 30 usages and 120 line rows in chunks of 11 rows.
    assert await rebuild.chunk_count(clickhouse.client, db) == 18
    # One user chunk alone is a strict part of the table: the hash does split the users.
    await clickhouse.client.execute(refresh_users_analytics(db, suffix=REBUILD, chunk=(0, 7)))
    count = f"SELECT count() FROM {db}.users_analytics{{}} FINAL"
    part = await clickhouse.client.fetchval(count.format(REBUILD))
    assert 0 < part < await clickhouse.client.fetchval(count.format(""))
    await rebuild.fill_derived(clickhouse.client, db)

    for derived in analytics_schema.DERIVED_TABLES:
        columns = await clickhouse.client.fetch(
            "SELECT name FROM system.columns WHERE database = {db} AND table = {t}",
            params={"db": db, "t": derived},
        )
        names = ", ".join(f"toString({r['name']})" for r in columns)

        async def rows(suffix: str, names: str = names, derived: str = derived) -> list[tuple]:
            found = await clickhouse.client.fetch(
                f"SELECT {names} FROM {db}.{derived}{suffix} FINAL ORDER BY {names}"
            )
            return [tuple(r.values()) for r in found]

        live = await rows("")
        assert live, derived
        assert await rows(REBUILD) == live, derived
