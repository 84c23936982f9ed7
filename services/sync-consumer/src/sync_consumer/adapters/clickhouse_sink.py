"""AnalyticsSink on ClickHouse: one JSONEachRow INSERT per table and batch.

Every write carries a query id of its own. When one fails the server may still be running it
(the client timed out, the connection broke) and commit its parts later. So before the next
write the sink settles every failed one: `KILL QUERY ... SYNC` returns once the query ended,
killed or finished, and system.processes no longer lists it. Only then is what it stored final,
and visible to the version guard of the retry; a server that restarted runs none of them (an
HTTP query does not outlive its server). If the server cannot be asked, the write is refused
(and retried by the caller), never sent beside a query that may still commit.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterator, Mapping, Sequence

from aiochclient import ChClient, ChClientError

from sync_consumer.adapters.derived import INDEPENDENT_SCOPES, refresh_statement
from sync_consumer.adapters.metrics import INSERT_LATENCY
from sync_consumer.domain.model import Row, RowsRejected
from sync_consumer.domain.ports import AnalyticsSink

_HEX_CHARS_PER_QUERY = 100_000
_SETTLE_POLL_SECONDS = 0.05

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
    def __init__(self, client: ChClient, database: str, *, settle_timeout: float = 60.0) -> None:
        self._client = client
        self._database = database
        self._settle_timeout = settle_timeout
        self._unsettled: set[str] = set()

    async def insert(self, table: str, rows: Sequence[Row]) -> None:
        started = time.perf_counter()
        try:
            # A refused insert is a failed write like any other: its query_id stays unsettled
            # and the next write KILLs it and waits for it first (a parse error may come after
            # some blocks were committed), so a halved retry reads versions that are final.
            await self._write(
                lambda query_id: self._client.execute(
                    f"INSERT INTO {self._database}.{table} FORMAT JSONEachRow",
                    *rows,
                    json=True,
                    query_id=query_id,
                )
            )
        except ChClientError as exc:
            if rejects_rows(exc):
                raise RowsRejected(str(exc)) from exc
            raise
        INSERT_LATENCY.labels(table).observe(time.perf_counter() - started)

    async def refresh(self, table: str, scope: Mapping[str, Collection[str]]) -> None:
        started = time.perf_counter()
        # Users in chunks, each statement well below max_query_size: a key belongs to one user,
        # so recomputing the users chunk by chunk recomputes every key exactly as at once.
        users = sorted(scope.get("user_id", ()))
        parts: list[Mapping[str, Collection[str]]]
        if independent := INDEPENDENT_SCOPES.get(table):
            # The code dictionary: each column's ids on their own, chunked like users.
            parts = [
                {column: chunk}
                for column in independent
                for chunk in _chunks(sorted(scope.get(column, ())))
            ]
        elif users:
            parts = [{**scope, "user_id": chunk} for chunk in _chunks(users)]
        else:
            # A scope without users (orders_daily: days only) is one statement.
            parts = [scope]
        for part in parts:
            sql = refresh_statement(table, self._database, scope=part)
            await self._write(functools.partial(self._execute, sql))
        INSERT_LATENCY.labels(table).observe(time.perf_counter() - started)

    async def _execute(self, sql: str, query_id: str) -> None:
        await self._client.execute(sql, query_id=query_id)

    async def _write(self, send: Callable[[str], Awaitable[None]]) -> None:
        await self.settle()
        query_id = f"sync-consumer-{uuid.uuid4().hex}"
        self._unsettled.add(query_id)
        await send(query_id)
        self._unsettled.discard(query_id)

    async def settle(self) -> None:
        """Returns once no failed write of this sink can still commit anything."""
        for query_id in sorted(self._unsettled):
            # SYNC waits until the query ended; the poll covers a kill that answered early.
            await self._client.execute(f"KILL QUERY WHERE query_id = '{query_id}' SYNC")
            deadline = time.monotonic() + self._settle_timeout
            while await self._client.fetchval(
                f"SELECT count() FROM system.processes WHERE query_id = '{query_id}'"
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"query {query_id} still runs after KILL QUERY")
                await asyncio.sleep(_SETTLE_POLL_SECONDS)
            self._unsettled.discard(query_id)

    async def latest_versions(self, table: str, key: str, ids: Collection[str]) -> dict[str, int]:
        # The ids travel as one string literal of hex-encoded ids: aiochclient tokenizes every
        # query with sqlparse, and an `IN ('a','b',...)` list of thousands of ids cost a third
        # of the consumer's time; one literal is one token. Hex keeps any id intact (no
        # separator can occur in it).
        await self.settle()  # a failed INSERT still running could add versions after this read
        latest: dict[str, int] = {}
        for chunk in _hex_chunks(sorted(ids)):
            rows = await self._client.fetch(
                f"SELECT {key} AS id, max(version) AS version FROM {self._database}.{table} "
                f"WHERE {key} IN (SELECT arrayJoin(arrayMap(x -> unhex(x), "
                f"splitByChar(',', '{chunk}')))) GROUP BY {key}"
            )
            latest.update({str(row["id"]): int(row["version"]) for row in rows})
        return latest


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    """The ids in groups whose hex encoding stays below _HEX_CHARS_PER_QUERY."""
    chunk: list[str] = []
    size = 0
    for value in ids:
        encoded = 2 * len(value.encode()) + 1
        if chunk and size + encoded > _HEX_CHARS_PER_QUERY:
            yield chunk
            chunk, size = [], 0
        chunk.append(value)
        size += encoded
    if chunk:
        yield chunk


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
