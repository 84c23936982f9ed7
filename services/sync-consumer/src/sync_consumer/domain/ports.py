"""Ports of the pipeline: where rows go and where dead letters go."""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence

from sync_consumer.domain.model import DeadLetter, Row


class AnalyticsSink(abc.ABC):
    @abc.abstractmethod
    async def insert(self, table: str, rows: Sequence[Row]) -> None:
        """The rows in one INSERT. On an exception ANY subset of them may be stored (one part
        per partition, committed one by one): callers insert again, and rows are idempotent
        per (entity, version). Before a write after a failed one, the sink makes sure the
        failed one is no longer running on the server (it was killed or it finished), so what
        it stored is visible to `latest_versions` and nothing lands later."""

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
        """Stores the letters durably (before their entries are acknowledged)."""
