"""AnalyticsSink on ClickHouse: one JSONEachRow INSERT per table and batch."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

from aiochclient import ChClient

from sync_consumer.adapters.metrics import INSERT_LATENCY
from sync_consumer.domain.model import ZERO, Position, Row
from sync_consumer.domain.ports import AnalyticsSink

_IDS_PER_QUERY = 2000


class ClickHouseSink(AnalyticsSink):
    def __init__(self, client: ChClient, database: str) -> None:
        self._client = client
        self._database = database

    async def max_position(self, table: str, stream: str) -> Position:
        row = await self._client.fetchrow(
            f"SELECT src_ms, src_seq FROM {self._database}.{table} "
            "WHERE src_stream = {stream} ORDER BY src_ms DESC, src_seq DESC LIMIT 1",
            params={"stream": stream},
        )
        return ZERO if row is None else (int(row["src_ms"]), int(row["src_seq"]))

    async def insert(self, table: str, rows: Sequence[Row]) -> None:
        started = time.perf_counter()
        await self._client.execute(
            f"INSERT INTO {self._database}.{table} FORMAT JSONEachRow", *rows, json=True
        )
        INSERT_LATENCY.labels(table).observe(time.perf_counter() - started)

    async def latest_versions(self, table: str, key: str, ids: Collection[str]) -> dict[str, int]:
        # In chunks: a query holds at most 10000 tokens by default (an id and a comma are two).
        wanted, latest = sorted(ids), {}
        for first in range(0, len(wanted), _IDS_PER_QUERY):
            listed = ",".join(quote(value) for value in wanted[first : first + _IDS_PER_QUERY])
            rows = await self._client.fetch(
                f"SELECT {key} AS id, max(version) AS version FROM {self._database}.{table} "
                f"WHERE {key} IN ({listed}) GROUP BY {key}"
            )
            latest.update({str(row["id"]): int(row["version"]) for row in rows})
        return latest


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
