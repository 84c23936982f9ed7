"""The SQL text: literals escaped, datetimes naive UTC, nothing 18.16 lacks, FINAL only where
it is the cheaper way to the latest state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics_service.adapters import sql
from analytics_service.domain.model import Granularity, Ranking, TimeRange


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


DAY = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("window", "user_id", "final"),
    [
        (TimeRange(), None, True),  # all time
        (TimeRange(DAY, None), None, True),  # open end
        (TimeRange(None, DAY), None, True),  # open start
        (TimeRange(DAY, DAY + timedelta(days=90)), None, True),
        (TimeRange(DAY, DAY + timedelta(days=44)), None, False),
        (TimeRange(DAY, DAY + timedelta(days=1)), None, False),
        (TimeRange(), "u", False),  # one user: argMax reads only that user's rows
    ],
)
def test_latest_state_by_final_only_where_a_query_keeps_most_rows(
    window: TimeRange, user_id: str | None, final: bool
) -> None:
    orders = sql.order_totals("db", window, user_id=user_id)
    usages = sql.usage_totals("db", window, user_id=user_id)
    for statement in (orders, usages):
        assert ("FINAL" in statement) is final
        assert ("argMax" in statement) is not final
    if user_id is None:
        for by_code in (
            sql.order_totals_by_code("db", window),
            sql.usage_totals_by_code("db", window),
        ):
            assert ("FINAL" in by_code) is final
    # A code filter always reads through argMax, whatever the range.
    assert "FINAL" not in sql.order_totals("db", TimeRange(), promo_code_id="p")
    assert "FINAL" not in sql.order_series("db", TimeRange(), Granularity.DAY, "p")
