"""The SQL text: literals escaped, datetimes naive UTC, nothing 18.16 lacks."""

from __future__ import annotations

from datetime import UTC, datetime

from analytics_service.adapters import sql
from analytics_service.domain.model import Granularity, TimeRange


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
        sql.consumption("db", ["p"]),
        sql.promo_codes("db", ["p"]),
        sql.find_promo_code_id("db", "CODE"),
        sql.tables_present("db"),
    ]
    for statement in statements:
        for missing in ("DateTime64", "toStartOfInterval", "LowCardinality", "FINAL", "+00:00"):
            assert missing not in statement
