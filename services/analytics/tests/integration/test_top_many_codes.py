"""ListTopPromoCodes over more than 10,000 codes on the local ClickHouse 18.16: ranked and cut in
SQL. Listing every code id in an `IN (...)` list exceeded max_query_size past about 9,000 codes
and answered INTERNAL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest_asyncio

from analytics_service.adapters.clickhouse_store import ClickHouseStore, HttpRunner
from analytics_service.domain.model import ALL_TIME, Ranking, TimeRange
from analytics_service.domain.queries import ListTopPromoCodes
from analytics_service.service_layer.analytics import Analytics
from devstack.stack import Stack
from promo_libs import analytics_schema
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD
from promo_libs.clickhouse.client import ClickHouse
from sync_consumer.adapters.derived import refresh_statement
from sync_consumer.adapters.event_rows import rows_for
from sync_consumer.domain.model import StreamEntry
from sync_consumer_testing import synthetic

CODES = 12_000
AT = datetime(2024, 5, 1, tzinfo=UTC)


@pytest_asyncio.fixture(loop_scope="session")
async def clickhouse(stack: Stack) -> AsyncIterator[ClickHouse]:
    settings = stack.clickhouse_settings(f"it_top_{uuid.uuid4().hex[:10]}")
    clickhouse = ClickHouse(settings)
    clickhouse.connect()
    await analytics_schema.migrate(clickhouse.client, clickhouse.database)
    yield clickhouse
    await clickhouse.client.execute(f"DROP DATABASE IF EXISTS {clickhouse.database}")
    await clickhouse.close()


def _rows(messages: list[object]) -> dict[str, list[dict[str, object]]]:
    """The rows sync-consumer's own mapping makes of these events."""
    tables: dict[str, list[dict[str, object]]] = {}
    for n, message in enumerate(messages):
        fields = {EVENT_ID_FIELD: b"x", ENVELOPE_FIELD: message.SerializeToString()}  # type: ignore[attr-defined]
        for table_row in rows_for(StreamEntry("s", f"1-{n}", fields)):
            tables.setdefault(table_row.table, []).append(table_row.row)
    return tables


async def test_top_codes_over_twelve_thousand_codes(clickhouse: ClickHouse) -> None:
    messages: list[object] = []
    for n in range(CODES):
        code_id = f"c{n:05}"
        created = synthetic.events_pb2.PromoCodeCreated(
            promo_code=synthetic.promo_code(code_id, AT)
        )
        messages.append(
            synthetic.envelope(
                "promo_code_created",
                created,
                aggregate_type="promo_code",
                aggregate_id=code_id,
                version=1,
                at=AT,
            )
        )
        for k in range(n % 5 + 1):  # code n has n % 5 + 1 redemptions, 10 off each
            messages.append(
                synthetic.usage_event(
                    "redeemed",
                    f"{code_id}-{k}",
                    code_id,
                    f"u{k}",
                    AT + timedelta(minutes=n % 600),
                    amount=1000,
                    discount=10,
                    version=1,
                )
            )
    for table, rows in _rows(messages).items():
        await clickhouse.client.execute(
            f"INSERT INTO {clickhouse.database}.{table} FORMAT JSONEachRow", *rows, json=True
        )
    # The rollups, by sync-consumer's own recomputation (as live and in a rebuild).
    for derived in analytics_schema.DERIVED_TABLES:
        await clickhouse.client.execute(refresh_statement(derived, clickhouse.database))
    analytics = Analytics(ClickHouseStore(HttpRunner(clickhouse), clickhouse.database))
    top = (await analytics.list_top_promo_codes(ListTopPromoCodes(ALL_TIME, limit=100))).entries
    # Five redemptions each (n % 5 == 4), ties by ascending code text.
    assert [e.code for e in top] == [f"CODE-C{n:05}" for n in range(4, 500, 5)]
    assert {(e.redemptions, e.total_discount, e.unique_users) for e in top} == {(5, 50, 5)}
    first_hour = TimeRange(AT, AT + timedelta(hours=1))
    by_discount = (
        await analytics.list_top_promo_codes(
            ListTopPromoCodes(first_hour, Ranking.DISCOUNT, limit=3)
        )
    ).entries
    # Within the first hour only codes n % 600 < 60 count: 4, 9, 14 lead.
    assert [(e.code, e.total_discount) for e in by_discount] == [
        ("CODE-C00004", 50),
        ("CODE-C00009", 50),
        ("CODE-C00014", 50),
    ]
