"""One stream's way into the analytics tables: exactly once per (entity, version), derived
tables recomputed.

What ClickHouse guarantees, and what it does not (DESIGN.md, "ClickHouse"): an INSERT writes one
part per partition it touches, committed one by one, so an INSERT that fails, or whose client
gave up while the server went on, may have stored any subset of its rows, at any time until the
query ends. No guard based on "the highest position stored" survives that. So:

1. Event tables (users, promo_codes, orders_analytics, promo_code_usages_analytics,
   order_lines) are ReplacingMergeTree keyed by entity id, and every reader takes the latest
   version per entity. A row is a fact "entity E at version V looked like this": storing it
   twice changes no answer. The version guard stores a row only when its version is above the
   highest one stored for its entity, and each (event id, entity) once per batch, so in
   practice each (entity, version) is stored once: a part that landed before a failure is
   found by the retry and not sent again; a redelivered or duplicated event, or one a rebuild
   already replayed, is skipped. The guard's read is taken only after the sink settled every
   failed write (AnalyticsSink.insert: killed or finished, never still committing), so it sees
   the final outcome of the failed attempt.
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
    Row,
    RowsRejected,
    StreamEntry,
    TableRow,
)
from sync_consumer.domain.ports import AnalyticsSink, DeadLetterQueue, FailureCounter, RebuildGate

ToRows = Callable[[StreamEntry], list[TableRow]]
Sleep = Callable[[float], Awaitable[None]]
# Source table -> the derived tables it feeds, each with the key values one row touches.
Derived = Mapping[str, Sequence[tuple[str, Callable[[Row], Mapping[str, str]]]]]
T = TypeVar("T")
_REASON_CHARS = 2000


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
        derived: Derived | None = None,
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
        self._derived = dict(derived or {})
        self._gate = gate or OpenGate()
        self._counted: set[str] = set()  # entry ids with a failure count this process recorded
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
            except Exception as exc:
                # Any other mapping error is a bug or an input the mapping never foresaw; it is
                # as deterministic as a malformed entry, and escaping would leave the whole
                # batch pending, to be claimed later and skipped as "already stored".
                letters.append(DeadLetter(entry, f"mapping failed: {type(exc).__name__}: {exc}"))
        rows: dict[str, list[tuple[StreamEntry, Row]]] = {}
        for entry, table_rows in mapped:
            for table_row in table_rows:
                rows.setdefault(table_row.table, []).append((entry, table_row.row))
        if letters:
            await self._send(letters)
        stored: dict[str, list[Row]] = {}
        for table, items in rows.items():
            refused = await self._store(table, items)
            letters += refused
            gone = {letter.entry.entry_id for letter in refused}
            # A row refused alone was never stored: its keys are not recomputed (its values may
            # be what the store cannot parse). Its entry's rows of other tables still are.
            stored[table] = [row for entry, row in items if entry.entry_id not in gone]
        await self._refresh(stored)
        return letters

    async def _send(self, letters: list[DeadLetter]) -> None:
        await self._retrying("dead-letters", lambda: self._dead_letters.send(letters))

    async def _store(self, table: str, items: list[tuple[StreamEntry, Row]]) -> list[DeadLetter]:
        """Inserts the rows; on a refusal counts failures, retries, then isolates (module doc).

        Every attempt, whole or halved, goes through `_insert`: the version guard reads what is
        stored after the sink settled the refused write, so a part of it that landed is not sent
        again, and each insert has its own query id."""
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
            done = list({entry.entry_id: entry for entry, _ in items}.values())
            await self._retrying("failures", lambda: self._failures.forget(done))
            self._counted.difference_update(e.entry_id for e in done)
        return []

    async def _stored_versions(self, table: str, rows: list[Row]) -> dict[str, int]:
        key = self._versioned.get(table)
        if key is None:
            return {}
        return await self._sink.latest_versions(table, key, {str(row[key]) for row in rows})

    async def _insert(self, table: str, rows: list[Row]) -> None:
        """Inserts the rows not stored yet. Every attempt first reads the stored versions (after
        a failure any part of the failed INSERT may have landed; the sink settled it first), so
        only what is still missing is sent. RowsRejected leaves to `_store`."""

        async def attempt() -> None:
            fresh = self._newer(table, rows, await self._stored_versions(table, rows))
            if fresh:
                await self._sink.insert(table, fresh)

        await self._retrying(table, attempt)

    def _newer(self, table: str, rows: list[Row], stored: dict[str, int]) -> list[Row]:
        """Rows above their entity's stored version, each (event id, entity) once: one event
        gives one row per entity, and order_lines one entity per line of the order."""
        key = self._versioned.get(table)
        if key is None:
            return rows
        seen: set[tuple[str, str]] = set()
        newer = []
        for row in rows:
            entity = str(row[key])
            if (row["event_id"], entity) in seen or int(row["version"]) <= stored.get(entity, -1):
                continue
            seen.add((row["event_id"], entity))
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
