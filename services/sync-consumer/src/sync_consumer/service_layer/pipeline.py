"""One stream's way into the analytics tables, exactly once per table.

Entries of a stream are handled by one ordered consumer, one batch at a time (a lock makes the
reader and the claim loop take turns). For each table, the pipeline knows the highest source
position already stored (read from the table at start, and again after any failed INSERT,
which may have landed after all); a batch's rows at or below it are dropped, the rest go in as
one INSERT, which ClickHouse stores as one part or not at all. So a batch delivered again after
a crash, a claim or a retry adds nothing twice, and since a batch is retried until it is stored
before the next is taken, nothing above the position is ever skipped.

Tables whose rows feed a summing table through materialized views (orders, usages) have a
second guard, by entity version: a row is stored only when its `version` is above the highest
version stored for its entity, and an event id only once per batch. The same event reaching the
stream twice (at two positions), or an event whose effect a rebuild already replayed from
MongoDB's current state, then adds nothing, where a duplicate would otherwise be summed for good.
Within one stream an entity's versions arrive in increasing order, so nothing new is dropped.

Between batches a rebuild may hold the pipeline (RebuildGate); when it swapped the tables in,
the cached positions are dropped and read again from the new tables.

An entry that can never become rows goes to the dead-letter queue at once; one delivered more
than `max_deliveries` times without being stored goes there too. Letters are stored before the
caller acknowledges the batch, so a crash duplicates a letter rather than loses an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence

from sync_consumer.domain.model import (
    DeadLetter,
    MalformedEvent,
    Position,
    Row,
    StreamEntry,
    TableRow,
)
from sync_consumer.domain.ports import AnalyticsSink, DeadLetterQueue, RebuildGate

ToRows = Callable[[StreamEntry], list[TableRow]]
Sleep = Callable[[float], Awaitable[None]]


def _position(row: Row) -> Position:
    return int(row["src_ms"]), int(row["src_seq"])


class OpenGate(RebuildGate):
    """No rebuild ever holds this pipeline (unit tests, the benchmark)."""

    async def enter(self) -> bool:
        return False

    async def leave(self) -> None:
        return None


class StreamPipeline:
    def __init__(
        self,
        stream: str,
        sink: AnalyticsSink,
        dead_letters: DeadLetterQueue,
        to_rows: ToRows,
        *,
        max_deliveries: int = 5,
        retry_min_seconds: float = 0.2,
        retry_max_seconds: float = 5.0,
        sleep: Sleep = asyncio.sleep,
        on_retry: Callable[[str, Exception], None] | None = None,
        versioned: Mapping[str, str] | None = None,
        gate: RebuildGate | None = None,
    ) -> None:
        self.stream = stream
        self._sink = sink
        self._dead_letters = dead_letters
        self._to_rows = to_rows
        self._max_deliveries = max_deliveries
        self._retry_min = retry_min_seconds
        self._retry_max = retry_max_seconds
        self._sleep = sleep
        self._on_retry = on_retry
        self._versioned = dict(versioned or {})  # table -> its entity key column
        self._gate = gate or OpenGate()
        self._positions: dict[str, Position] = {}
        self.lock = asyncio.Lock()

    async def handle(self, entries: Sequence[StreamEntry]) -> list[DeadLetter]:
        """Stores the rows of `entries` (retrying until it can); then they may be acknowledged.

        Returns the entries sent to the dead-letter queue.
        """
        async with self.lock:
            changed = False

            async def enter() -> None:
                nonlocal changed
                changed = await self._gate.enter()

            await self._retrying("rebuild-gate", enter)
            try:
                if changed:
                    self._positions.clear()
                return await self._handle(entries)
            finally:
                with contextlib.suppress(Exception):  # the busy mark expires by itself
                    await self._gate.leave()

    async def _handle(self, entries: Sequence[StreamEntry]) -> list[DeadLetter]:
        mapped: list[tuple[StreamEntry, list[TableRow]]] = []
        letters: list[DeadLetter] = []
        for entry in sorted(entries, key=lambda e: e.position):
            try:
                mapped.append((entry, self._to_rows(entry)))
            except MalformedEvent as exc:
                letters.append(DeadLetter(entry, f"malformed: {exc}"))
            except Exception as exc:
                # Any other mapping error is a bug or an input the mapping never foresaw; it is
                # as deterministic as a malformed entry, and escaping would leave the whole
                # batch pending, to be claimed later and skipped as "already stored".
                letters.append(DeadLetter(entry, f"mapping failed: {type(exc).__name__}: {exc}"))
        tables = {table_row.table for _, table_rows in mapped for table_row in table_rows}
        await self._retrying("positions", lambda: self._load_positions(tables))
        rows: dict[str, list[Row]] = {}
        for entry, table_rows in mapped:
            if entry.deliveries > self._max_deliveries and not self._stored(entry, table_rows):
                letters.append(DeadLetter(entry, f"not stored after {entry.deliveries} deliveries"))
                continue
            for table_row in table_rows:
                rows.setdefault(table_row.table, []).append(table_row.row)
        if letters:
            await self._retrying("dead-letters", lambda: self._dead_letters.send(letters))
        for table, table_rows_of_table in rows.items():
            await self._insert(table, table_rows_of_table)
        return letters

    async def _load_positions(self, tables: set[str]) -> None:
        for table in tables:
            await self._position_of(table)

    def _stored(self, entry: StreamEntry, table_rows: list[TableRow]) -> bool:
        return all(entry.position <= self._positions[t.table] for t in table_rows)

    async def _position_of(self, table: str) -> Position:
        position = self._positions.get(table)
        if position is None:
            position = await self._sink.max_position(table, self.stream)
            self._positions[table] = position
        return position

    async def _insert(self, table: str, rows: list[Row]) -> None:
        async def attempt() -> None:
            stored = await self._position_of(table)
            fresh = [row for row in rows if _position(row) > stored]
            key = self._versioned.get(table)
            if key is not None and fresh:
                fresh = await self._newer(table, key, fresh)
            if not fresh:
                return
            try:
                await self._sink.insert(table, fresh)
            except BaseException:
                # It may have landed anyway (a timeout after the commit): read the table again.
                self._positions.pop(table, None)
                raise
            self._positions[table] = max(_position(row) for row in fresh)

        await self._retrying(table, attempt)

    async def _newer(self, table: str, key: str, rows: list[Row]) -> list[Row]:
        """Rows above their entity's stored version, each event id once."""
        stored = await self._sink.latest_versions(table, key, {str(row[key]) for row in rows})
        seen: set[str] = set()
        newer = []
        for row in rows:
            if row["event_id"] in seen or int(row["version"]) <= stored.get(str(row[key]), 0):
                continue
            seen.add(row["event_id"])
            newer.append(row)
        return newer

    async def _retrying(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        delay = self._retry_min
        while True:
            try:
                await action()
                return
            except Exception as exc:
                if self._on_retry is not None:
                    self._on_retry(what, exc)
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max)
