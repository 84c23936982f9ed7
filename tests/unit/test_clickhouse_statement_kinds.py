"""The ClickHouse client's shortcut past sqlparse (promo_libs.clickhouse.client._ChClient) gives
every statement the project builds the kind and format aiochclient's own parse gives it."""

from datetime import UTC, datetime

import pytest
from aiochclient import ChClient

from analytics_service.adapters import sql
from analytics_service.domain.model import CostGrouping, Granularity, Ranking, TimeRange
from promo_libs import analytics_schema
from promo_libs.clickhouse.client import _ChClient
from sync_consumer.adapters.derived import REFRESH, refresh_statement

pytestmark = pytest.mark.unit

DAY = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)
SCOPE = {
    "user_id": {"u1", "u2"},
    "day": {"2026-03-04"},
    "month": {"2026-03-01"},
    "promo_code_id": {"p1"},
    "usage_id": {"x1"},
    "order_id": {"o1"},
}
RANGES = (TimeRange(), TimeRange(DAY, datetime(2026, 6, 1, tzinfo=UTC)))

STATEMENTS = [
    *(s for m in analytics_schema.migrations() for s in m.statements("db")),
    *(refresh_statement(table, "db", scope=scope) for table in REFRESH for scope in (None, SCOPE)),
    *(sql.order_totals("db", r) for r in RANGES),
    sql.order_totals("db", RANGES[1], user_id="u1"),
    *(sql.order_series("db", r, g) for r in RANGES for g in Granularity),
    *(sql.usage_totals("db", r) for r in RANGES),
    *(sql.top_promo_codes("db", r, k, 10) for r in RANGES for k in Ranking),
    *(
        sql.discount_costs("db", r, g, 10, c)
        for r in RANGES
        for g in CostGrouping
        for c in (None, "k1")
    ),
    sql.consumption("db", ["p1", "p2"]),
    sql.find_promo_code_id("db", "SPRING"),
    sql.campaign("db", "c1"),
    *(sql.campaign_usage_totals("db", r, "c1") for r in RANGES),
    *(sql.campaign_release_counts("db", r, "c1") for r in RANGES),
    *(sql.campaign_order_totals("db", r, "c1") for r in RANGES),
    sql.campaign_consumption("db", "c1"),
    # What the sink and the benchmarks send, and shapes the shortcut must leave to sqlparse.
    "INSERT INTO db.orders_analytics FORMAT JSONEachRow",
    "SELECT 1 FORMAT JSONEachRow",
    "select\n  count() from db.t",
    "  INSERT\tINTO db.t SELECT * FROM db.u",
    "WITH 1 AS x SELECT x",
    "-- a comment\nSELECT 1",
    "SHOW TABLES FROM db",
    "EXISTS TABLE db.t",
    "KILL QUERY WHERE query_id = 'q' SYNC",
    "SELECTED",
]


@pytest.mark.parametrize("statement", STATEMENTS)
def test_the_shortcut_agrees_with_sqlparse(statement: str) -> None:
    need_fetch, is_json, kind = _ChClient._parse_squery(statement)
    expected_fetch, expected_json, expected_kind = ChClient._parse_squery(statement)
    assert (need_fetch, bool(is_json), kind) == (
        expected_fetch,
        bool(expected_json),
        expected_kind,
    )
