"""The analytics store on ClickHouse: the SQL of adapters.sql run through a SqlRunner.

A SqlRunner takes one SELECT and returns its rows as dicts. The real one speaks HTTP to a
ClickHouse server (aiochclient); tests also run the very same statements in chdb. Failures of the
server itself (unreachable, timed out, tables not created yet) become UNAVAILABLE with reason
DEPENDENCY_UNAVAILABLE; a statement the server rejects for any other reason is a bug (INTERNAL).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiochclient import ChClientError

from analytics_service.adapters import sql
from analytics_service.domain.model import (
    CampaignInfo,
    CodeTotals,
    Consumption,
    CostGrouping,
    DiscountCost,
    Granularity,
    Money,
    OrderTotals,
    PromoCodeInfo,
    Ranking,
    TimeRange,
    UsageTotals,
)
from analytics_service.domain.ports import AnalyticsStore, BucketKey
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.errors import Unavailable

Row = dict[str, Any]

# ClickHouse error codes that mean "not there yet" rather than "wrong SQL".
_MISSING = ("Code: 60", "Code: 81")  # UNKNOWN_TABLE, UNKNOWN_DATABASE


class SqlRunner(abc.ABC):
    @abc.abstractmethod
    async def rows(self, statement: str) -> list[Row]: ...

    @abc.abstractmethod
    async def alive(self) -> bool: ...


def _unavailable(detail: str) -> Unavailable:
    return Unavailable(
        f"the analytics store is unavailable: {detail}",
        reason="DEPENDENCY_UNAVAILABLE",
        metadata={"dependency": "clickhouse"},
    )


class HttpRunner(SqlRunner):
    """One ClickHouse server over HTTP through promo_libs' client."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self._clickhouse = clickhouse

    async def rows(self, statement: str) -> list[Row]:
        try:
            records = await self._clickhouse.client.fetch(statement)
        except ChClientError as exc:
            if any(code in str(exc) for code in _MISSING):
                raise _unavailable("the analytics tables do not exist yet") from exc
            raise
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _unavailable(type(exc).__name__) from exc
        return [dict(record) for record in records]

    async def alive(self) -> bool:
        return await self._clickhouse.ping()


def _int(value: Any) -> int:
    return int(value or 0)


def _order_totals(row: Row) -> OrderTotals:
    return replace(_series_totals(row), users=_int(row["users"]))


def _series_totals(row: Row) -> OrderTotals:
    """A series point's totals: no distinct users (a point has none, the query reads none)."""
    return OrderTotals(
        orders=_int(row["orders"]),
        confirmed=_int(row["confirmed"]),
        rejected=_int(row["rejected"]),
        cancelled=_int(row["cancelled"]),
        revenue=_int(row["revenue"]),
        discount=_int(row["discount"]),
    )


def _usage_totals(row: Row) -> UsageTotals:
    return UsageTotals(
        redemptions=_int(row["redemptions"]),
        users=_int(row["users"]),
        codes=_int(row["codes"]),
        active_discount=_int(row["active_discount"]),
        code_texts=tuple(row.get("code_texts") or ()),
    )


def _bucket(value: Any, granularity: Granularity) -> datetime:
    number = _int(value)
    if granularity is Granularity.MONTH:
        return datetime(number // 100, number % 100, 1, tzinfo=UTC)
    return datetime.fromtimestamp(number, UTC)


def _limit(value: Any) -> int | None:
    """0 is how the snapshot columns say "no limit" (limits are at least 1 when set)."""
    number = _int(value)
    return number if number > 0 else None


class ClickHouseStore(AnalyticsStore):
    def __init__(self, runner: SqlRunner, database: str) -> None:
        self._run = runner.rows
        self._runner = runner
        self._db = database

    async def ready(self) -> bool:
        if not await self._runner.alive():
            return False
        rows = await self._run(sql.tables_present(self._db))
        return bool(rows) and _int(rows[0]["tables"]) == len(sql.REQUIRED_TABLES)

    async def find_promo_code_id(self, code: str) -> str | None:
        rows = await self._run(sql.find_promo_code_id(self._db, code))
        return str(rows[0]["promo_code_id"]) if rows else None

    async def promo_codes(self, ids: Sequence[str]) -> dict[str, PromoCodeInfo]:
        if not ids:
            return {}
        found = {
            str(row["code_id"]): PromoCodeInfo(
                promo_code_id=str(row["code_id"]),
                code=str(row["code_text"]),
                currency=str(row["currency"]),
                max_uses=_limit(row["uses_cap"]),
                budget=_limit(row["budget_cap"]),
            )
            for row in await self._run(sql.promo_codes(self._db, ids))
        }
        missing = [i for i in ids if i not in found]
        if missing:
            for row in await self._run(sql.promo_code_texts(self._db, missing)):
                code_id = str(row["promo_code_id"])
                found[code_id] = PromoCodeInfo(code_id, str(row["code"]))
        return found

    async def consumption(self, ids: Sequence[str]) -> dict[str, Consumption]:
        if not ids:
            return {}
        return {
            str(row["promo_code_id"]): Consumption(
                _int(row["active_uses"]), _int(row["discount_granted"])
            )
            for row in await self._run(sql.consumption(self._db, ids))
        }

    async def order_totals(
        self,
        time_range: TimeRange,
        *,
        user_id: str | None = None,
        promo_code_id: str | None = None,
    ) -> dict[str, OrderTotals]:
        statement = sql.order_totals(
            self._db, time_range, user_id=user_id, promo_code_id=promo_code_id
        )
        return {str(row["currency_code"]): _order_totals(row) for row in await self._run(statement)}

    async def order_series(
        self, time_range: TimeRange, granularity: Granularity, promo_code_id: str | None = None
    ) -> dict[BucketKey, OrderTotals]:
        rows = await self._run(sql.order_series(self._db, time_range, granularity, promo_code_id))
        return {
            (str(row["currency_code"]), _bucket(row["bucket"], granularity)): _series_totals(row)
            for row in rows
        }

    async def usage_totals(
        self,
        time_range: TimeRange,
        *,
        user_id: str | None = None,
        promo_code_id: str | None = None,
        with_code_texts: bool = False,
    ) -> dict[str, UsageTotals]:
        statement = sql.usage_totals(
            self._db,
            time_range,
            user_id=user_id,
            promo_code_id=promo_code_id,
            with_code_texts=with_code_texts,
        )
        return {str(row["currency_code"]): _usage_totals(row) for row in await self._run(statement)}

    async def release_counts(
        self, time_range: TimeRange, *, promo_code_id: str | None = None
    ) -> dict[str, int]:
        rows = await self._run(sql.release_counts(self._db, time_range, promo_code_id))
        return {str(row["currency_code"]): _int(row["releases"]) for row in rows}

    async def top_promo_codes(
        self, time_range: TimeRange, ranking: Ranking, limit: int
    ) -> dict[str, list[CodeTotals]]:
        top: dict[str, list[CodeTotals]] = {}
        for row in await self._run(sql.top_promo_codes(self._db, time_range, ranking, limit)):
            top.setdefault(str(row["currency_code"]), []).append(
                CodeTotals(
                    promo_code_id=str(row["promo_code_id"]),
                    code=str(row["rank_text"]),
                    usages=UsageTotals(
                        redemptions=_int(row["redemptions"]),
                        users=_int(row["users"]),
                        codes=_int(row["codes"]),
                        active_discount=_int(row["active_discount"]),
                    ),
                    releases=_int(row["releases"]),
                    orders=OrderTotals(
                        confirmed=_int(row["confirmed"]), revenue=_int(row["revenue"])
                    ),
                )
            )
        return top

    async def campaign(self, campaign_id: str) -> CampaignInfo | None:
        rows = await self._run(sql.campaign(self._db, campaign_id))
        row = rows[0] if rows else {}
        if not (_int(row.get("rules")) or _int(row.get("named"))):
            return None  # no event names it: neither its own, nor a code's or a usage's
        return CampaignInfo(
            campaign_id=campaign_id,
            display_name=str(row.get("name") or ""),
            codes=_int(row.get("codes")),
            max_uses=_int(row["uses_cap"]) if _int(row.get("has_uses_cap")) else None,
            budget=(
                Money(str(row["currency"]), _int(row["budget_cap"]))
                if _int(row.get("has_budget_cap"))
                else None
            ),
        )

    async def campaign_usage_totals(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, UsageTotals]:
        statement = sql.campaign_usage_totals(self._db, time_range, campaign_id)
        return {str(row["currency_code"]): _usage_totals(row) for row in await self._run(statement)}

    async def campaign_release_counts(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, int]:
        rows = await self._run(sql.campaign_release_counts(self._db, time_range, campaign_id))
        return {str(row["currency_code"]): _int(row["releases"]) for row in rows}

    async def campaign_order_totals(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, OrderTotals]:
        statement = sql.campaign_order_totals(self._db, time_range, campaign_id)
        return {str(row["currency_code"]): _order_totals(row) for row in await self._run(statement)}

    async def campaign_consumption(self, campaign_id: str) -> dict[str, Consumption]:
        return {
            str(row["currency_code"]): Consumption(
                _int(row["active_uses"]), _int(row["discount_granted"])
            )
            for row in await self._run(sql.campaign_consumption(self._db, campaign_id))
        }

    async def discount_costs(
        self,
        time_range: TimeRange,
        grouping: CostGrouping,
        limit: int,
        campaign_id: str | None = None,
    ) -> dict[str, list[DiscountCost]]:
        statement = sql.discount_costs(self._db, time_range, grouping, limit, campaign_id)
        costs: dict[str, list[DiscountCost]] = {}
        for row in await self._run(statement):
            costs.setdefault(str(row["currency_code"]), []).append(
                DiscountCost(
                    key=str(row["cost_key"]),
                    discount=_int(row["discount"]),
                    gross=_int(row["gross"]),
                    units=_int(row["units"]),
                    orders=_int(row["orders"]),
                )
            )
        return costs
