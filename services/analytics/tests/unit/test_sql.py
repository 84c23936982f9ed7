"""The SQL text: literals escaped, datetimes naive UTC, nothing 18.16 lacks, FINAL only where
it is the cheaper way to the latest state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics_service.adapters import sql
from analytics_service.domain.model import CostGrouping, Granularity, Ranking, TimeRange
from promo_libs import analytics_schema as tables


def test_string_literals_are_escaped() -> None:
    assert sql.quote("x' OR '1'='1") == "'x\\' OR \\'1\\'=\\'1'"
    assert sql.quote("back\\slash") == "'back\\\\slash'"


def test_ranges_are_naive_utc_and_half_open() -> None:
    window = TimeRange(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, 3, tzinfo=UTC))
    assert sql.in_range("create_time", window) == (
        "create_time >= toDateTime('2024-01-01 00:00:00', 'UTC')"
        " AND create_time < toDateTime('2024-01-02 03:00:00', 'UTC')"
    )
    assert sql.in_range("create_time", TimeRange()) == "1"


def test_no_statement_uses_what_clickhouse_18_16_lacks() -> None:
    window = TimeRange(datetime(2024, 1, 1, tzinfo=UTC), None)
    statements = [
        sql.order_totals("db", window, user_id="u", promo_code_id="p"),
        sql.order_totals("db", window),
        *(sql.order_series("db", window, g) for g in Granularity),
        sql.order_totals_by_code("db", window),
        *(sql.order_series("db", window, g, "p") for g in Granularity),
        sql.usage_totals("db", window, user_id="u", with_code_texts=True),
        sql.usage_totals_by_code("db", window),
        sql.release_counts("db", window, "p"),
        sql.release_counts_by_code("db", window),
        *(sql.top_promo_codes("db", window, ranking, 100) for ranking in Ranking),
        sql.consumption("db", ["p"]),
        sql.promo_codes("db", ["p"]),
        sql.find_promo_code_id("db", "CODE"),
        sql.tables_present("db"),
    ]
    for statement in statements:
        for missing in ("DateTime64", "toStartOfInterval", "LowCardinality", "+00:00"):
            assert missing not in statement


def test_a_rollups_latest_rows_are_narrowed_before_final_merges_them() -> None:
    # PREWHERE on key columns, never a WHERE after FINAL (sql._latest_rows): 18.16 would merge
    # every row of the granules read first.
    noon = datetime(2024, 1, 1, 12, tzinfo=UTC)
    statements = []
    for window in (TimeRange(noon, noon + timedelta(days=70)), TimeRange()):
        statements += [
            sql.order_totals("db", window, user_id="u"),
            sql.usage_totals("db", window, user_id="u", with_code_texts=True),
            sql.order_totals("db", window, promo_code_id="p"),
            sql.usage_totals("db", window, promo_code_id="p", with_code_texts=True),
            sql.order_series("db", window, Granularity.DAY, "p"),
            sql.release_counts("db", window, "p"),
            sql.campaign_order_totals("db", window, "k"),
            sql.discount_costs("db", window, CostGrouping.CATEGORY, 10, "k"),
        ]
    statements += [sql.consumption("db", ["p"]), sql.campaign_consumption("db", "k")]
    for statement in statements:
        for table in tables.DERIVED_TABLES:
            assert f"db.{table} FINAL WHERE" not in statement
    assert "db.code_orders_daily FINAL PREWHERE promo_code_id = 'p'" in statements[2]


DAY = datetime(2024, 1, 1, tzinfo=UTC)
_WEEK = timedelta(days=7)


@pytest.mark.parametrize(
    ("window", "final"),
    [
        (TimeRange(), True),  # all time
        (TimeRange(DAY, None), True),  # open end
        (TimeRange(None, DAY), True),  # open start
        (TimeRange(DAY, DAY + timedelta(days=90)), True),
        (TimeRange(DAY, DAY + timedelta(days=44)), False),
        (TimeRange(DAY, DAY + timedelta(days=1)), False),
    ],
)
def test_latest_state_by_final_only_where_a_query_keeps_most_rows(
    window: TimeRange, final: bool
) -> None:
    # Raw orders of the whole platform (hourly series, the partial edges of a range).
    statement = sql.latest_orders("db", window)
    assert ("FINAL" in statement) is final
    assert ("argMax" in statement) is not final
    # Unfiltered order and usage totals read the daily rollups
    # (test_whole_days_come_from_the_rollup), one user's users_analytics
    # (test_one_users_whole_days_come_from_users_analytics).
    # A code's raw rows are always read through argMax, whatever the range.
    assert "orders_analytics FINAL" not in sql.order_totals("db", TimeRange(), promo_code_id="p")
    assert "orders_analytics FINAL" not in sql.order_series("db", window, Granularity.HOUR, "p")
    assert "orders_analytics FINAL" not in sql.latest_orders("db", window, user_id="u")


def test_one_users_whole_days_come_from_users_analytics() -> None:
    noon = DAY + timedelta(hours=12)
    for window, edges in (
        (TimeRange(), 0),
        (TimeRange(DAY, DAY + timedelta(days=3)), 0),
        (TimeRange(noon, noon + timedelta(days=3)), 2),
        (TimeRange(noon, noon + timedelta(hours=3)), 1),
    ):
        for statement, raw in (
            (sql.order_totals("db", window, user_id="u"), "db.orders_analytics"),
            (sql.usage_totals("db", window, user_id="u"), "db.promo_code_usages_analytics"),
        ):
            # The user's rows of the rollup (sorted by user) for whole days, if any.
            whole = "FROM db.users_analytics WHERE user_id = 'u'" in statement
            assert "users_analytics FINAL" not in statement  # argMax by state version
            assert whole is (window != TimeRange(noon, noon + timedelta(hours=3)))
            # Raw rows only at the partial edges, latest state by argMax, never FINAL.
            assert statement.count(f"FROM {raw} WHERE") == edges
            assert f"{raw} FINAL" not in statement


def test_a_range_splits_into_whole_utc_days_and_partial_edges() -> None:
    noon = DAY + timedelta(hours=12)
    days, edges = sql.whole_days(TimeRange(noon, noon + timedelta(days=3)))
    assert days == TimeRange(DAY + timedelta(days=1), DAY + timedelta(days=3))
    assert edges == [
        TimeRange(noon, DAY + timedelta(days=1)),
        TimeRange(DAY + timedelta(days=3), noon + timedelta(days=3)),
    ]
    assert sql.whole_days(TimeRange(DAY, DAY + timedelta(days=2))) == (
        TimeRange(DAY, DAY + timedelta(days=2)),
        [],
    )
    assert sql.whole_days(TimeRange()) == (TimeRange(), [])
    within = TimeRange(noon, noon + timedelta(hours=3))
    assert sql.whole_days(within) == (None, [within])
    assert sql.whole_days(TimeRange(None, noon)) == (TimeRange(None, DAY), [TimeRange(DAY, noon)])


@pytest.mark.parametrize("days", [2, 90, 3650])
def test_whole_days_come_from_the_rollup_and_only_edges_from_raw_rows(days: int) -> None:
    noon = DAY + timedelta(hours=12)
    window = TimeRange(noon, noon + timedelta(days=days))
    for statement in (
        sql.order_totals("db", window),
        sql.order_series("db", window, Granularity.DAY),
        sql.order_series("db", window, Granularity.MONTH),
    ):
        assert "db.orders_daily FINAL" in statement
        # Raw rows only for the two partial days, through argMax (never FINAL over history).
        assert statement.count("FROM db.orders_analytics") == 2
        assert "orders_analytics FINAL" not in statement
    for statement in (
        sql.order_totals("db", TimeRange()),
        sql.order_series("db", TimeRange(), Granularity.WEEK),
    ):
        assert "orders_analytics" not in statement
    for statement in (
        sql.usage_totals("db", window),
        sql.usage_totals("db", window, promo_code_id="p", with_code_texts=True),
        sql.usage_totals_by_code("db", window, with_code_text=True),
        sql.release_counts("db", window),
        sql.release_counts_by_code("db", window),
    ):
        assert "db.usages_daily FINAL" in statement
        assert statement.count("FROM db.promo_code_usages_analytics") == 2
        assert "promo_code_usages_analytics FINAL" not in statement
    for statement in (
        sql.usage_totals("db", TimeRange()),
        sql.usage_totals_by_code("db", TimeRange()),
        sql.release_counts("db", TimeRange(), "p"),
        sql.consumption("db", ["p"]),
    ):
        assert "promo_code_usages_analytics" not in statement
    for statement in (
        sql.order_totals("db", window, promo_code_id="p"),
        sql.order_series("db", window, Granularity.WEEK, "p"),
        sql.order_totals_by_code("db", window),
    ):
        assert "db.code_orders_daily FINAL" in statement
        # Per edge, one code's orders are found by a subquery over the same edge.
        by_one_code = "promo_code_id = 'p'" in statement
        assert statement.count("FROM db.orders_analytics") == (4 if by_one_code else 2)
        assert "orders_analytics FINAL" not in statement
    # Hours do not fit in days: the hourly rollups (test_whole_hours_come_from_the_hourly_rollups).
    assert "orders_daily" not in sql.order_series("db", window, Granularity.HOUR)


def test_whole_hours_come_from_the_hourly_rollups_and_only_edges_from_raw_rows() -> None:
    start = DAY + timedelta(hours=13, minutes=7)
    for window, edges in (
        (TimeRange(start, start + timedelta(days=7)), 2),
        (TimeRange(DAY, DAY + timedelta(days=7)), 0),
        (TimeRange(start, start + timedelta(minutes=30)), 1),
    ):
        for code, rollup in ((None, "db.orders_hourly"), ("p", "db.code_orders_hourly")):
            statement = sql.order_series("db", window, Granularity.HOUR, code)
            assert (f"{rollup} FINAL PREWHERE" in statement) is (edges != 1)
            raw = statement.count("FROM db.orders_analytics WHERE")
            # One code's raw orders are found by a subquery over the same edge.
            assert raw == edges * (1 if code is None else 2)
            assert "orders_analytics FINAL" not in statement
    assert sql.whole_hours(TimeRange(start, start + timedelta(hours=2))) == (
        TimeRange(DAY + timedelta(hours=14), DAY + timedelta(hours=15)),
        [
            TimeRange(start, DAY + timedelta(hours=14)),
            TimeRange(DAY + timedelta(hours=15), start + timedelta(hours=2)),
        ],
    )


@pytest.mark.parametrize("granularity", list(Granularity))
@pytest.mark.parametrize("promo_code_id", [None, "p"])
def test_a_series_reads_no_buyers(granularity: Granularity, promo_code_id: str | None) -> None:
    # A point has no distinct users: neither the rollups' buyer arrays nor the raw buyers.
    noon = DAY + timedelta(hours=12)
    for window in (TimeRange(noon, noon + timedelta(days=40)), TimeRange(DAY, DAY + _WEEK)):
        statement = sql.order_series("db", window, granularity, promo_code_id)
        assert "buyers" not in statement
        assert "uniqExact" not in statement
        assert " AS users" not in statement


def test_the_rankings_order_totals_read_no_buyers() -> None:
    # ListTopPromoCodes reports a code's holders (from its usages), never its buyers.
    noon = DAY + timedelta(hours=12)
    for window in (TimeRange(noon, noon + timedelta(days=40)), TimeRange()):
        assert "buyers" not in sql.order_totals_by_code("db", window)
        assert "uniqExactArray(holders)" in sql.top_promo_codes("db", window, Ranking.REVENUE, 10)


def test_whole_days_split_into_whole_months_and_the_days_around() -> None:
    jan15, mar1 = datetime(2024, 1, 15, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
    feb1 = datetime(2024, 2, 1, tzinfo=UTC)
    assert sql.whole_months(TimeRange(jan15, mar1)) == (
        TimeRange(feb1, mar1),
        [TimeRange(jan15, feb1)],
    )
    mar10 = mar1 + timedelta(days=9)
    assert sql.whole_months(TimeRange(jan15, mar10)) == (
        TimeRange(feb1, mar1),
        [TimeRange(jan15, feb1), TimeRange(mar1, mar10)],
    )
    # December to January crosses the year; a range inside one month has no whole month.
    dec, jan = datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)
    assert sql.whole_months(TimeRange(dec, jan)) == (TimeRange(dec, jan), [])
    assert sql.whole_months(TimeRange(jan15, feb1)) == (None, [TimeRange(jan15, feb1)])
    assert sql.whole_months(TimeRange()) == (TimeRange(), [])
    assert sql.whole_months(TimeRange(jan15, None)) == (
        TimeRange(feb1, None),
        [TimeRange(jan15, feb1)],
    )


@pytest.mark.parametrize("days", [90, 3650])
def test_long_ranges_read_whole_months_from_the_monthly_rollups(days: int) -> None:
    noon = DAY + timedelta(hours=12)
    window = TimeRange(noon, noon + timedelta(days=days))
    monthly = {
        "orders_monthly": [
            sql.order_totals("db", window),
            sql.order_series("db", window, Granularity.MONTH),
        ],
        "code_orders_monthly": [
            sql.order_totals("db", window, promo_code_id="p"),
            sql.order_totals_by_code("db", window),
            sql.order_series("db", window, Granularity.MONTH, "p"),
        ],
        "usages_monthly": [
            sql.usage_totals("db", window),
            sql.usage_totals_by_code("db", window),
            sql.release_counts("db", window),
            sql.release_counts_by_code("db", window),
        ],
    }
    for table, statements in monthly.items():
        daily = table.replace("monthly", "daily")
        for statement in statements:
            # One branch of months, at most two of days (before and after them), two raw edges.
            assert statement.count(f"FROM db.{table} FINAL") == 1
            assert 1 <= statement.count(f"FROM db.{daily} FINAL") <= 2
    # All time: months only, neither days nor raw rows.
    for statement in (
        sql.order_totals("db", TimeRange()),
        sql.usage_totals("db", TimeRange(), promo_code_id="p"),
        sql.top_promo_codes("db", TimeRange(), Ranking.REVENUE, 100),
        sql.consumption("db", ["p"]),
    ):
        assert "_daily" not in statement and "_analytics" not in statement
    # Weeks and days do not fit in months: days only.
    for granularity in (Granularity.DAY, Granularity.WEEK):
        assert "monthly" not in sql.order_series("db", window, granularity)


def test_a_code_text_is_looked_up_in_the_dictionary_only() -> None:
    statement = sql.find_promo_code_id("db", "SPRING-10")
    assert "FROM db.code_dictionary WHERE code = 'SPRING-10'" in statement
    assert "_analytics" not in statement and "db.promo_codes" not in statement
