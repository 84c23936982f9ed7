"""Which of the commands a code path sent read a whole collection: their query plans.

A hot path must find its documents through an index, on MongoDB and on the local stand-in
alike. Each command's filter is explained as a `find` (an update, delete, count or
findAndModify selects its documents the way a find with its filter does) and the winning plan
is read in either server's shape:
- MongoDB: a tree of stages; `COLLSCAN` anywhere reads the whole collection.
- nx-27017: SQLite's plan, one `detail` line per step; `SCAN <collection>` (not `SEARCH ... USING
  INDEX`, nor the `json_each` virtual table it scans inside one document) reads every row. It
  turns an implicit equality `{"f": v}` into an array-containment test that no index serves
  unless `f` is the last key of an index; `{"f": {"$eq": v}}` (the same on MongoDB) is served.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import AsyncMongoClient

from promo_libs.mongo.monitoring import SentCommand


@dataclass(frozen=True, slots=True)
class Selection:
    collection: str
    filter: Mapping[str, Any]


def selections(command: SentCommand) -> list[Selection]:
    """The filters a command selects documents with (none for an insert or a command)."""
    body = command.body
    name = command.name
    if name == "find":
        return [Selection(body["find"], body.get("filter") or {})]
    if name == "update":
        return [Selection(body["update"], u.get("q") or {}) for u in body.get("updates", [])]
    if name == "delete":
        return [Selection(body["delete"], d.get("q") or {}) for d in body.get("deletes", [])]
    if name == "findAndModify":
        return [Selection(body["findAndModify"], body.get("query") or {})]
    if name == "count":
        return [Selection(body["count"], body.get("query") or {})]
    if name == "aggregate":
        stages = body.get("pipeline") or []
        first = stages[0] if stages else {}
        return [Selection(body["aggregate"], first.get("$match", {}))]
    return []


def reads_whole_collection(plan: Any, collection: str) -> bool:
    """Whether a winning plan, in MongoDB's or the stand-in's shape, scans `collection`."""
    if isinstance(plan, list):  # the stand-in: SQLite's EXPLAIN QUERY PLAN lines
        scan = f"SCAN {collection}"
        return any(
            isinstance(step, Mapping) and (str(step.get("detail", "")) == scan) for step in plan
        )
    if isinstance(plan, Mapping):  # MongoDB: a tree of stages
        if plan.get("stage") == "COLLSCAN":
            return True
        children = [plan.get("inputStage"), *(plan.get("inputStages") or [])]
        return any(reads_whole_collection(c, collection) for c in children if c is not None)
    return False


async def collection_scans(
    client: AsyncMongoClient[dict[str, Any]], commands: Iterable[SentCommand]
) -> list[str]:
    """The commands among `commands` whose selection reads a whole collection, described."""
    found = []
    for command in commands:
        for selection in selections(command):
            explained = await client[command.database].command(
                "explain", {"find": selection.collection, "filter": dict(selection.filter)}
            )
            plan = explained.get("queryPlanner", {}).get("winningPlan")
            if reads_whole_collection(plan, selection.collection):
                found.append(f"{command.name} {selection.collection} {dict(selection.filter)}")
    return found
