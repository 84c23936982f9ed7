"""Refusals that MongoDB documents and the local stand-in does not make, checked on the commands
a test's own client sends (the `mongo_client` fixture), so that code which passes here would not
be refused by a real MongoDB.

Found by probing nx-27017 0.8.1: it applies an update that names a path twice or a path and its
parent (MongoDB: ConflictingUpdateOperators, code 40), one that changes `_id` (ImmutableField,
66), an `$inc` by a string (TypeMismatch, 14), and a write concern a standalone cannot satisfy
(`w: 2`, an unknown tag: MongoDB answers a write concern error). Index commands are checked
against MongoDB's rules by tests/integration/test_index_conformance.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pymongo import monitoring

_NUMERIC_OPERATORS = {"$inc", "$mul"}
_ACCEPTED_W = (None, 0, 1, "majority")


def _conflict(first: str, second: str) -> bool:
    return first == second or first.startswith(second + ".") or second.startswith(first + ".")


def update_refusals(update: Any) -> list[str]:
    """What MongoDB would refuse in one update document (an empty list when nothing)."""
    if not isinstance(update, Mapping) or not any(str(k).startswith("$") for k in update):
        return []  # a replacement or an aggregation pipeline: not used with these rules
    refusals: list[str] = []
    paths: list[str] = []
    for operator, fields in update.items():
        for path, value in dict(fields).items():
            if path == "_id" or path.startswith("_id."):
                refusals.append(f"{operator} {path}: ImmutableField (66)")
            if operator in _NUMERIC_OPERATORS and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                refusals.append(f"{operator} {path} by {value!r}: TypeMismatch (14)")
            for seen in paths:
                if _conflict(seen, path):
                    refusals.append(f"{seen} and {path}: ConflictingUpdateOperators (40)")
            paths.append(path)
    return refusals


class MongoRules(monitoring.CommandListener):
    """Collects, per command sent, what MongoDB would have refused."""

    def __init__(self) -> None:
        self.refusals: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = event.command
        write_concern = command.get("writeConcern") or {}
        if write_concern.get("w") not in _ACCEPTED_W:
            self.refusals.append(f"{event.command_name}: write concern {write_concern}")
        if event.command_name == "update":
            for statement in command.get("updates", []):
                self._add(event, update_refusals(statement.get("u")))
        elif event.command_name == "findAndModify" and "update" in command:
            self._add(event, update_refusals(command["update"]))

    def _add(self, event: monitoring.CommandStartedEvent, refusals: list[str]) -> None:
        collection = event.command.get(event.command_name)
        self.refusals.extend(f"{event.command_name} {collection}: {r}" for r in refusals)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass
