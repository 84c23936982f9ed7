"""Ports of the pipeline: where rows go and where dead letters go."""

from __future__ import annotations

import abc
from collections.abc import Sequence

from sync_consumer.domain.model import DeadLetter, Position, Row


class AnalyticsSink(abc.ABC):
    @abc.abstractmethod
    async def max_position(self, table: str, stream: str) -> Position:
        """The highest source position stored in `table` from `stream` ((0, 0) if none)."""

    @abc.abstractmethod
    async def insert(self, table: str, rows: Sequence[Row]) -> None:
        """All rows in one INSERT (one atomic part), or an exception and none of them."""


class DeadLetterQueue(abc.ABC):
    @abc.abstractmethod
    async def send(self, letters: Sequence[DeadLetter]) -> None:
        """Stores the letters durably (before their entries are acknowledged)."""
