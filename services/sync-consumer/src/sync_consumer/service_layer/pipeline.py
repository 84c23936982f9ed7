"""One stream's way into the analytics tables: exactly once per (entity, version), derived
tables recomputed.

What ClickHouse guarantees, and what it does not (DESIGN.md, "ClickHouse"): an INSERT writes one
part per partition it touches, committed one by one, so an INSERT that fails, or whose client
gave up while the server went on, may have stored any subset of its rows, at any time until the
query ends. No guard based on "the highest position stored" survives that. So:

1. Event tables (users, promo_codes, orders_analytics, promo_code_usages_analytics) are
   ReplacingMergeTree keyed by entity id, and every reader takes the latest version per
   entity. A row is a fact "entity E at version V looked like this": storing it twice changes
   no answer. The version guard stores a row only when its version is above the highest one
   stored for its entity, and each event id once per batch, so in practice each (entity,
   version) is stored once: a part that landed before a failure is found by the retry and not
   sent again; a redelivered or duplicated event, or one a rebuild already replayed, is
   skipped. The guard's read is taken only after the sink settled every failed write
   (AnalyticsSink.insert: killed or finished, never still committing), so it sees the final
   outcome of the failed attempt.
2. Derived tables (users_analytics) are never fed deltas. After a batch's source rows are all
   stored, the pipeline asks the sink to recompute the keys the batch touched from the latest
   state of the sources (adapters.derived: exact and idempotent, whoever computes it and in
   whatever order). A derived write that fails after its source committed is simply redone.
3. The batch is acknowledged only after 1 and 2 succeeded; a crash anywhere before that makes
   Redis deliver it again, and repeating 1 and 2 is harmless.

Within one stream an entity's versions arrive in increasing order; even when they do not (two
consumers, a claim), the guard only ever drops a version lower than one stored, which no reader
of the latest state would see.

Between batches a rebuild may hold the pipeline (RebuildGate).

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
    Row,
    StreamEntry,
    TableRow,
)
from sync_consumer.domain.ports import AnalyticsSink, DeadLetterQueue, RebuildGate

ToRows = Callable[[StreamEntry], list[TableRow]]
Sleep = Callable[[float], Awaitable[None]]
# Source table -> the derived tables it feeds, each with the key values one row touches.
Derived = Mapping[str, Sequence[tuple[str, Callable[[Row], Mapping[str, str]]]]]


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
        derived: Derived | None = None,
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
        self._derived = dict(derived or {})
        self._gate = gate or OpenGate()
        self.lock = asyncio.Lock()

    async def handle(self, entries: Sequence[StreamEntry]) -> list[DeadLetter]:
        """Stores the rows of `entries` (retrying until it can); then they may be acknowledged.

        Returns the entries sent to the dead-letter queue.
        """
        async with self.lock:

            async def enter() -> None:
                # Whether a rebuild swapped the tables needs no reset here: nothing is cached
                # across batches, every guard reads the tables.
                await self._gate.enter()

            await self._retrying("rebuild-gate", enter)
            try:
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
        rows: dict[str, list[Row]] = {}
        for _, table_rows in mapped:
            for table_row in table_rows:
                rows.setdefault(table_row.table, []).append(table_row.row)
        stored: dict[str, dict[str, int]] = {}

        async def read_versions() -> None:
            for table, table_rows_of_table in rows.items():
                stored[table] = await self._stored_versions(table, table_rows_of_table)

        await self._retrying("versions", read_versions)
        rows = {}
        for entry, table_rows in mapped:
            if entry.deliveries > self._max_deliveries and not self._stored(table_rows, stored):
                letters.append(DeadLetter(entry, f"not stored after {entry.deliveries} deliveries"))
                continue
            for table_row in table_rows:
                rows.setdefault(table_row.table, []).append(table_row.row)
        if letters:
            await self._retrying("dead-letters", lambda: self._dead_letters.send(letters))
        for table, table_rows_of_table in rows.items():
            await self._insert(table, table_rows_of_table, stored.get(table, {}))
        await self._refresh(rows)
        return letters

    def _stored(self, table_rows: list[TableRow], stored: dict[str, dict[str, int]]) -> bool:
        """Whether every row of an entry is already stored (its version or a newer one)."""
        for table_row in table_rows:
            key = self._versioned.get(table_row.table)
            if key is None:
                return False
            row = table_row.row
            if int(row["version"]) > stored.get(table_row.table, {}).get(str(row[key]), -1):
                return False
        return True

    async def _stored_versions(self, table: str, rows: list[Row]) -> dict[str, int]:
        key = self._versioned.get(table)
        if key is None:
            return {}
        return await self._sink.latest_versions(table, key, {str(row[key]) for row in rows})

    async def _insert(self, table: str, rows: list[Row], known: dict[str, int]) -> None:
        """Inserts the rows not stored yet; after a failure, reads the stored versions again
        (any part of the failed INSERT may have landed) and sends only what is still missing."""
        versions = known
        first = True

        async def attempt() -> None:
            nonlocal versions, first
            if not first:
                versions = await self._stored_versions(table, rows)
            first = False
            fresh = self._newer(table, rows, versions)
            if fresh:
                await self._sink.insert(table, fresh)

        await self._retrying(table, attempt)

    def _newer(self, table: str, rows: list[Row], stored: dict[str, int]) -> list[Row]:
        """Rows above their entity's stored version, each event id once."""
        key = self._versioned.get(table)
        if key is None:
            return rows
        seen: set[str] = set()
        newer = []
        for row in rows:
            if row["event_id"] in seen or int(row["version"]) <= stored.get(str(row[key]), -1):
                continue
            seen.add(row["event_id"])
            newer.append(row)
        return newer

    async def _refresh(self, rows: dict[str, list[Row]]) -> None:
        """Recomputes every derived key the batch's rows touch (also the rows the guard
        skipped: their source may have landed in an earlier attempt whose refresh never ran)."""
        scopes: dict[str, dict[str, set[str]]] = {}
        for table, table_rows in rows.items():
            for derived, scope_of in self._derived.get(table, ()):
                scope = scopes.setdefault(derived, {})
                for row in table_rows:
                    for column, value in scope_of(row).items():
                        scope.setdefault(column, set()).add(value)
        for derived, scope in scopes.items():

            async def refresh(table: str = derived, keys: dict[str, set[str]] = scope) -> None:
                await self._sink.refresh(table, keys)

            await self._retrying(derived, refresh)

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
