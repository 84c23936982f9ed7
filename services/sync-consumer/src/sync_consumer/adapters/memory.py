"""In-memory fakes of the pipeline's ports, for unit tests."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from sync_consumer.domain.model import ZERO, DeadLetter, Position, Row, RowsRejected, StreamEntry
from sync_consumer.domain.ports import AnalyticsSink, DeadLetterQueue, FailureCounter


@dataclass
class InMemorySink(AnalyticsSink):
    tables: dict[str, list[Row]] = field(default_factory=dict)
    failures_left: int = 0
    inserts: int = 0
    rejects: Callable[[Row], bool] | None = None  # rows the store refuses for what they hold
    rejections: int = 0

    async def max_position(self, table: str, stream: str) -> Position:
        positions = [
            (r["src_ms"], r["src_seq"])
            for r in self.tables.get(table, [])
            if r["src_stream"] == stream
        ]
        return max(positions, default=ZERO)

    async def insert(self, table: str, rows: Sequence[Row]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionError("sink unavailable")
        if self.rejects is not None and any(self.rejects(row) for row in rows):
            self.rejections += 1
            raise RowsRejected("Code: 117. Unknown field found while parsing JSONEachRow")
        self.inserts += 1
        self.tables.setdefault(table, []).extend(rows)

    async def latest_versions(self, table: str, key: str, ids: Collection[str]) -> dict[str, int]:
        latest: dict[str, int] = {}
        for row in self.tables.get(table, []):
            if row[key] in ids:
                latest[row[key]] = max(latest.get(row[key], 0), int(row["version"]))
        return latest


@dataclass
class InMemoryDeadLetters(DeadLetterQueue):
    letters: list[DeadLetter] = field(default_factory=list)

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        self.letters.extend(letters)


@dataclass
class InMemoryFailures(FailureCounter):
    counts: dict[str, int] = field(default_factory=dict)

    async def record(self, entries: Sequence[StreamEntry]) -> dict[str, int]:
        for entry in entries:
            self.counts[entry.entry_id] = self.counts.get(entry.entry_id, 0) + 1
        return {entry.entry_id: self.counts[entry.entry_id] for entry in entries}

    async def forget(self, entries: Sequence[StreamEntry]) -> None:
        for entry in entries:
            self.counts.pop(entry.entry_id, None)
