"""What the pipeline moves: stream entries in, table rows out. Standard library only."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A Redis stream entry id `<ms>-<seq>` as a comparable pair.
Position = tuple[int, int]
ZERO: Position = (0, 0)

Row = dict[str, Any]


def parse_position(entry_id: str | bytes) -> Position:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_position(position: Position) -> str:
    return f"{position[0]}-{position[1]}"


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One entry read from a stream, with how often it has been delivered so far."""

    stream: str
    entry_id: str
    fields: Mapping[bytes, bytes]
    deliveries: int = 1

    @property
    def position(self) -> Position:
        return parse_position(self.entry_id)


@dataclass(frozen=True, slots=True)
class TableRow:
    table: str
    row: Row


class MalformedEvent(Exception):
    """The entry can never become rows (not an envelope, missing snapshot): dead-letter it."""


class RowsRejected(Exception):
    """The store refused these rows for what they hold (a value it cannot parse, a column it
    does not have), not for its own state: the same rows will be refused again. Anything else a
    store raises (down, overloaded, timed out) is transient and retried without counting."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    entry: StreamEntry
    reason: str


@dataclass(frozen=True, slots=True)
class GroupStatus:
    """How far the consumer group is behind its stream."""

    lag: int  # entries never delivered to the group
    pending: int  # delivered, not yet acknowledged


class GroupLost(Exception):
    """The stream or its consumer group is gone (Redis lost them): join the group again, which
    recreates it from the stream's start, before reading on."""
