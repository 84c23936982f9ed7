"""In-memory fakes of the pipeline's ports, for unit tests."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from promo_libs.analytics_schema import (
    CODE_DICTIONARY,
    CODE_ORDERS_DAILY,
    CODE_ORDERS_HOURLY,
    LINE_COSTS_DAILY,
    MONTHLY_TABLES,
    ORDERS,
    ORDERS_DAILY,
    ORDERS_HOURLY,
    USAGES,
    USAGES_DAILY,
    USERS_ANALYTICS,
)
from sync_consumer.domain.model import (
    DeadLetter,
    GroupLost,
    GroupStatus,
    Row,
    RowsRejected,
    StreamEntry,
    parse_position,
)
from sync_consumer.domain.ports import AnalyticsSink, ConsumerGroup, DeadLetterQueue, FailureCounter

# The sources of users_analytics: table -> (entity key, date column, counted status).
_SUMMARY_SOURCES = {
    ORDERS: ("order_id", "order_date", "CONFIRMED"),
    USAGES: ("usage_id", "usage_date", "ACTIVE"),
}


@dataclass
class InMemorySink(AnalyticsSink):
    """Stores rows in lists; `failures_left` failed inserts store `partial` of their rows first
    (a part that landed before the error), `refresh_failures_left` failed refreshes store
    nothing."""

    tables: dict[str, list[Row]] = field(default_factory=dict)
    failures_left: int = 0
    partial: int = 0
    refresh_failures_left: int = 0
    inserts: int = 0
    refreshes: int = 0
    rejects: Callable[[Row], bool] | None = None  # rows the store refuses for what they hold
    rejections: int = 0

    async def insert(self, table: str, rows: Sequence[Row]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            self.tables.setdefault(table, []).extend(rows[: self.partial])
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

    async def refresh(self, table: str, scope: Mapping[str, Collection[str]]) -> None:
        if self.refresh_failures_left:
            self.refresh_failures_left -= 1
            raise ConnectionError("derived insert failed")
        self.refreshes += 1
        if table == ORDERS_DAILY:
            self._refresh_orders_daily(set(scope.get("day", ())))
            return
        if table in (
            USAGES_DAILY,
            CODE_ORDERS_DAILY,
            ORDERS_HOURLY,
            CODE_ORDERS_HOURLY,
            CODE_DICTIONARY,
            LINE_COSTS_DAILY,
            *MONTHLY_TABLES,
        ):
            # Not modelled here: its values are checked against ClickHouse itself
            # (tests/integration); the unit tests count and fail refreshes only.
            return
        assert table == USERS_ANALYTICS, table
        users, days = set(scope.get("user_id", ())), set(scope.get("day", ()))
        summary: dict[tuple[str, str, str], list[int]] = {}
        for source, (key, day_column, counted) in _SUMMARY_SOURCES.items():
            latest: dict[str, Row] = {}
            for row in self.tables.get(source, []):
                if row["user_id"] in users and row[day_column] in days:
                    held = latest.get(row[key])
                    if held is None or int(row["version"]) >= int(held["version"]):
                        latest[row[key]] = row
            for row in latest.values():
                group = (row["user_id"], row[day_column], row["currency_code"])
                values = summary.setdefault(group, [0, 0, 0, 0, 0])
                hit = int(row["status"] == counted)
                if source == ORDERS:
                    values[0] += hit
                    values[1] += hit * int(row["total_minor"])
                    values[2] += hit * int(row["discount_minor"])
                else:
                    values[3] += hit
                values[4] += int(row["version"]) + 1
        target = self.tables.setdefault(USERS_ANALYTICS, [])
        for (user, day, currency), (o, r, d, u, v) in summary.items():
            target.append(
                {
                    "user_id": user,
                    "day": day,
                    "currency_code": currency,
                    "orders": o,
                    "revenue_minor": r,
                    "discounts_minor": d,
                    "redemptions": u,
                    "state_version": v,
                }
            )

    def _refresh_orders_daily(self, days: set[str]) -> None:
        latest: dict[str, Row] = {}
        for row in self.tables.get(ORDERS, []):
            held = latest.get(row["order_id"])
            if row["order_date"] in days and (
                held is None or int(row["version"]) >= int(held["version"])
            ):
                latest[row["order_id"]] = row
        groups: dict[tuple[str, str], list[Row]] = {}
        for row in latest.values():
            groups.setdefault((row["order_date"], row["currency_code"]), []).append(row)
        target = self.tables.setdefault(ORDERS_DAILY, [])
        for (day, currency), rows in groups.items():
            confirmed = [r for r in rows if r["status"] == "CONFIRMED"]
            target.append(
                {
                    "day": day,
                    "currency_code": currency,
                    "orders": len(rows),
                    "confirmed": len(confirmed),
                    "rejected": sum(r["status"] == "REJECTED" for r in rows),
                    "cancelled": sum(r["status"] == "CANCELLED" for r in rows),
                    "revenue_minor": sum(int(r["total_minor"]) for r in confirmed),
                    "discounts_minor": sum(int(r["discount_minor"]) for r in confirmed),
                    "buyers": sorted({r["user_id"] for r in rows}),
                    "state_version": sum(int(r["version"]) + 1 for r in rows),
                }
            )

    def latest_summary(self) -> dict[tuple[str, str, str], tuple[int, int, int, int]]:
        """users_analytics as FINAL reads it: the highest state version per key."""
        best: dict[tuple[str, str, str], Row] = {}
        for row in self.tables.get(USERS_ANALYTICS, []):
            key = (row["user_id"], row["day"], row["currency_code"])
            if key not in best or row["state_version"] >= best[key]["state_version"]:
                best[key] = row
        return {
            k: (r["orders"], r["revenue_minor"], r["discounts_minor"], r["redemptions"])
            for k, r in best.items()
        }


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


@dataclass
class InMemoryGroup(ConsumerGroup):
    """One stream and one group as lists: `read` delivers each entry once, it stays pending
    until `ack`, and `claim` takes every pending entry (idle times are not modelled). `lose`
    drops the group as a Redis that lost its data would."""

    stream: str
    entries: list[StreamEntry] = field(default_factory=list)
    pending: dict[str, StreamEntry] = field(default_factory=dict)
    delivered: int = 0
    exists: bool = False

    def add(self, entries: Sequence[StreamEntry]) -> None:
        self.entries.extend(entries)

    def lose(self) -> None:
        self.exists, self.delivered = False, 0
        self.pending.clear()

    def _check(self) -> None:
        if not self.exists:
            raise GroupLost(self.stream)

    async def join(self) -> None:
        self.exists = True

    async def read(self, count: int, block_ms: int) -> list[StreamEntry]:
        self._check()
        batch = self.entries[self.delivered : self.delivered + count]
        self.delivered += len(batch)
        self.pending.update((e.entry_id, e) for e in batch)
        return batch

    async def claim(
        self, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> tuple[list[StreamEntry], str]:
        self._check()
        after = parse_position(cursor)
        ids = sorted((i for i in self.pending if parse_position(i) >= after), key=parse_position)
        page, rest = ids[:count], ids[count:]
        claimed = []
        for entry_id in page:
            held = self.pending[entry_id]
            claimed.append(
                StreamEntry(held.stream, held.entry_id, held.fields, held.deliveries + 1)
            )
            self.pending[entry_id] = claimed[-1]
        return claimed, rest[0] if rest else "0-0"

    async def ack(self, entries: Sequence[StreamEntry]) -> None:
        for entry in entries:
            self.pending.pop(entry.entry_id, None)

    async def status(self) -> GroupStatus | None:
        if not self.exists:
            return None
        return GroupStatus(lag=len(self.entries) - self.delivered, pending=len(self.pending))

    async def trim(self, retention_ms: int) -> int:
        return 0
