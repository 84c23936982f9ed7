"""AnalyticsSink on ClickHouse: one JSONEachRow INSERT per table and batch."""

from __future__ import annotations

import re
import time
from collections.abc import Collection, Iterator, Sequence

from aiochclient import ChClient, ChClientError

from sync_consumer.adapters.metrics import INSERT_LATENCY
from sync_consumer.domain.model import ZERO, Position, Row, RowsRejected
from sync_consumer.domain.ports import AnalyticsSink

_HEX_CHARS_PER_QUERY = 100_000

# ClickHouse error codes that refuse the rows themselves, so the same rows fail the same way
# again: parse and conversion errors, and columns the table does not have. Every other error
# (the server down or overloaded, a timeout, TOO_MANY_PARTS, a missing table while a rebuild
# swaps) is transient and retried without counting against the entries.
_REJECTING_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        16,  # NO_SUCH_COLUMN_IN_TABLE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA (e.g. an unknown field in JSONEachRow)
        131,  # TOO_LARGE_STRING_SIZE
    }
)
_CODE = re.compile(r"Code: (\d+)")


def rejects_rows(error: ChClientError) -> bool:
    match = _CODE.search(str(error))
    return match is not None and int(match[1]) in _REJECTING_CODES


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
        try:
            await self._client.execute(
                f"INSERT INTO {self._database}.{table} FORMAT JSONEachRow", *rows, json=True
            )
        except ChClientError as exc:
            if rejects_rows(exc):
                raise RowsRejected(str(exc)) from exc
            raise
        INSERT_LATENCY.labels(table).observe(time.perf_counter() - started)

    async def latest_versions(self, table: str, key: str, ids: Collection[str]) -> dict[str, int]:
        # The ids travel as one string literal of hex-encoded ids: aiochclient tokenizes every
        # query with sqlparse, and an `IN ('a','b',...)` list of thousands of ids cost a third
        # of the consumer's time; one literal is one token. Hex keeps any id intact (no
        # separator can occur in it).
        latest: dict[str, int] = {}
        for chunk in _hex_chunks(sorted(ids)):
            rows = await self._client.fetch(
                f"SELECT {key} AS id, max(version) AS version FROM {self._database}.{table} "
                f"WHERE {key} IN (SELECT arrayJoin(arrayMap(x -> unhex(x), "
                f"splitByChar(',', '{chunk}')))) GROUP BY {key}"
            )
            latest.update({str(row["id"]): int(row["version"]) for row in rows})
        return latest


def _hex_chunks(ids: Sequence[str]) -> Iterator[str]:
    """Comma-separated hex ids, each string well below ClickHouse's max_query_size (256 KiB)."""
    chunk: list[str] = []
    size = 0
    for value in ids:
        encoded = value.encode().hex()
        if chunk and size + len(encoded) > _HEX_CHARS_PER_QUERY:
            yield ",".join(chunk)
            chunk, size = [], 0
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        yield ",".join(chunk)
