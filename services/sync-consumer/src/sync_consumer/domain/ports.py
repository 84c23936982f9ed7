"""Ports of the pipeline: where entries come from, where rows go and where dead letters go."""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence

from sync_consumer.domain.model import DeadLetter, GroupStatus, Row, StreamEntry


class ConsumerGroup(abc.ABC):
    """One stream, read as one named consumer of a consumer group: at-least-once delivery.

    An entry read or claimed stays pending in the group until `ack`: the consumer acknowledges
    only what it stored (or dead-lettered), so a crash anywhere before delivers it again (by a
    claim). Every call may raise GroupLost (join again) or a transient error (try again).
    """

    stream: str

    @abc.abstractmethod
    async def join(self) -> None:
        """Creates the group if it is missing, from the stream's first entry (not from its end:
        entries added before the group existed must be delivered too)."""

    @abc.abstractmethod
    async def read(self, count: int, block_ms: int) -> list[StreamEntry]:
        """Up to `count` entries never delivered to the group, in stream order, waiting at most
        `block_ms` for the first one (empty when none came)."""

    @abc.abstractmethod
    async def claim(
        self, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> tuple[list[StreamEntry], str]:
        """Takes over up to `count` pending entries idle at least `min_idle_ms` (of any consumer
        of the group, this one included), from `cursor` on, with their delivery counts; returns
        them and the cursor of the next page ("0-0" once the pending list was walked through)."""

    @abc.abstractmethod
    async def ack(self, entries: Sequence[StreamEntry]) -> None:
        """Removes the entries from the group's pending list: they are stored."""

    @abc.abstractmethod
    async def status(self) -> GroupStatus | None:
        """Lag and pending count; None when the stream or the group is gone."""

    @abc.abstractmethod
    async def trim(self, retention_ms: int) -> int:
        """Deletes entries older than `retention_ms` that no group of the stream still needs
        (pending or not yet delivered); returns how many went."""


class AnalyticsSink(abc.ABC):
    @abc.abstractmethod
    async def insert(self, table: str, rows: Sequence[Row]) -> None:
        """The rows in one INSERT. On an exception ANY subset of them may be stored (one part
        per partition, committed one by one): callers insert again, and rows are idempotent
        per (entity, version). Before a write after a failed one, the sink makes sure the
        failed one is no longer running on the server (it was killed or it finished), so what
        it stored is visible to `latest_versions` and nothing lands later.

        RowsRejected when the store refused the rows themselves (a parse, type or column
        error: sending them again fails again); any other error is transient."""

    @abc.abstractmethod
    async def latest_versions(self, table: str, key: str, ids: Collection[str]) -> dict[str, int]:
        """The highest stored `version` of each entity in `ids` (absent: none stored)."""

    @abc.abstractmethod
    async def refresh(self, table: str, scope: Mapping[str, Collection[str]]) -> None:
        """Recomputes derived `table` for the keys in `scope` (key column -> values) from the
        latest state of its sources (adapters.derived): idempotent, safe to repeat."""


class RebuildGate(abc.ABC):
    """Lets a rebuild (sync_consumer.rebuild) hold the consumer between two batches.

    `enter` returns once no rebuild holds the pipeline, and True when the stored positions may
    have changed under the consumer since its last batch (a rebuild swapped the tables in).
    While a batch runs between `enter` and `leave`, a rebuild waits for it to finish.
    """

    @abc.abstractmethod
    async def enter(self) -> bool: ...

    @abc.abstractmethod
    async def leave(self) -> None: ...


class DeadLetterQueue(abc.ABC):
    @abc.abstractmethod
    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Stores each letter durably and acknowledges its entry, as one step per entry (a crash
        leaves the entry pending or dead-lettered, never both and never neither)."""


class FailureCounter(abc.ABC):
    """How often each entry has failed to be stored, kept outside the process.

    Failures, not deliveries: a restart claims every pending entry again (XAUTOCLAIM raises its
    delivery count) without anything having failed, so only a refusal of the entry's rows is
    counted, and the count survives the restarts in between.
    """

    @abc.abstractmethod
    async def record(self, entries: Sequence[StreamEntry]) -> dict[str, int]:
        """Adds one failure to each entry; returns each entry id's count so far."""

    @abc.abstractmethod
    async def forget(self, entries: Sequence[StreamEntry]) -> None:
        """Drops the counts of entries that were stored or dead-lettered."""
