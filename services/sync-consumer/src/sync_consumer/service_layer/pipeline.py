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

Dead letters, by failures and never by deliveries:
- an entry whose mapping raises anything (MalformedEvent or any other error) goes to the
  dead-letter queue at once: mapping is deterministic, and an escaping error would leave the
  batch pending, to be claimed later and skipped as "already stored";
- a store that is down, overloaded or slow is retried for as long as it takes and counts nothing
  (a restart meanwhile claims the pending entries again, which raises their delivery count but
  is no failure of theirs);
- rows the store refuses for what they hold (RowsRejected) count one failure for every entry in
  the refused insert, in a FailureCounter that outlives the process. Below `max_failures` the
  insert is retried after a backoff; from there on the entries are split in halves until each
  refused entry stands alone, and an entry refused alone is dead-lettered with the store's
  reason, while its neighbours are stored. One bad entry costs O(log n) extra inserts.
The queue stores a letter and acknowledges its entry in one step, so a crash neither loses an
entry nor dead-letters it twice; `python -m sync_consumer replay-dead-letters` puts letters back
on their stream once their cause is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

from sync_consumer.domain.model import (
    DeadLetter,
    MalformedEvent,
    Position,
    Row,
    RowsRejected,
    StreamEntry,
    TableRow,
)
from sync_consumer.domain.ports import AnalyticsSink, DeadLetterQueue, FailureCounter, RebuildGate

ToRows = Callable[[StreamEntry], list[TableRow]]
Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")
_REASON_CHARS = 2000


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
        failures: FailureCounter,
        *,
        max_failures: int = 5,
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
        self._failures = failures
        self._max_failures = max_failures
        self._retry_min = retry_min_seconds
        self._retry_max = retry_max_seconds
        self._sleep = sleep
        self._on_retry = on_retry
        self._versioned = dict(versioned or {})  # table -> its entity key column
        self._gate = gate or OpenGate()
        self._positions: dict[str, Position] = {}
        self._counted: set[str] = set()  # entry ids with a failure count this process recorded
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
        rows: dict[str, list[tuple[StreamEntry, Row]]] = {}
        for entry, table_rows in mapped:
            for table_row in table_rows:
                rows.setdefault(table_row.table, []).append((entry, table_row.row))
        if letters:
            await self._send(letters)
        for table, items in rows.items():
            letters += await self._store(table, items)
        return letters

    async def _send(self, letters: list[DeadLetter]) -> None:
        await self._retrying("dead-letters", lambda: self._dead_letters.send(letters))

    async def _store(self, table: str, items: list[tuple[StreamEntry, Row]]) -> list[DeadLetter]:
        """Inserts the rows; on a refusal counts failures, retries, then isolates (module doc)."""
        delay = self._retry_min
        while True:
            try:
                await self._insert(table, [row for _, row in items])
                break
            except RowsRejected as exc:
                rejected = exc
            if self._on_retry is not None:
                self._on_retry(f"{table} (rejected)", rejected)
            entries = list({entry.entry_id: entry for entry, _ in items}.values())
            counts = await self._retried("failures", partial(self._failures.record, entries))
            self._counted.update(counts)
            if min(counts.values()) < self._max_failures:
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            if len(entries) == 1:
                reason = f"rejected {counts[entries[0].entry_id]} times: {rejected}"
                letter = DeadLetter(entries[0], reason[:_REASON_CHARS])
                await self._send([letter])
                await self._retrying("failures", partial(self._failures.forget, entries))
                self._counted.discard(entries[0].entry_id)
                return [letter]
            half = {e.entry_id for e in entries[: len(entries) // 2]}
            first = [item for item in items if item[0].entry_id in half]
            rest = [item for item in items if item[0].entry_id not in half]
            return await self._store(table, first) + await self._store(table, rest)
        if any(entry.entry_id in self._counted for entry, _ in items):
            stored = list({entry.entry_id: entry for entry, _ in items}.values())
            await self._retrying("failures", lambda: self._failures.forget(stored))
            self._counted.difference_update(e.entry_id for e in stored)
        return []

    async def _load_positions(self, tables: set[str]) -> None:
        for table in tables:
            await self._position_of(table)

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

    async def _retried(self, what: str, action: Callable[[], Awaitable[T]]) -> T:
        result: list[T] = []

        async def keep() -> None:
            result.append(await action())

        await self._retrying(what, keep)
        return result[0]

    async def _retrying(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        delay = self._retry_min
        while True:
            try:
                await action()
                return
            except RowsRejected:
                raise  # not transient: the caller counts it (_store)
            except Exception as exc:
                if self._on_retry is not None:
                    self._on_retry(what, exc)
                await self._sleep(delay)
                delay = min(delay * 2, self._retry_max)
