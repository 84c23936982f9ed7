"""Versioned migrations: recorded, applied once, safe from two processes at once."""

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.mongo.migrations import Migration, apply_migrations

Database = AsyncDatabase[dict[str, Any]]


def counting_migrations(calls: list[int]) -> list[Migration]:
    async def first(db: Database) -> None:
        calls.append(1)
        await asyncio.sleep(0.05)  # widen the window in which a second runner could interleave
        await db["items"].create_index("key", unique=True)

    async def second(db: Database) -> None:
        calls.append(2)
        await db["items"].insert_one({"_id": "seed", "key": "seed"})  # not idempotent on purpose

    return [Migration(1, "index", first), Migration(2, "seed", second)]


async def test_applied_once_and_recorded(
    mongo_client: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    calls: list[int] = []
    assert await apply_migrations(db, counting_migrations(calls)) == [1, 2]
    assert await apply_migrations(db, counting_migrations(calls)) == []
    assert calls == [1, 2]
    recorded = [d async for d in db["_migrations"].find({}).sort("_id", 1)]
    assert [(d["_id"], d["name"]) for d in recorded] == [(1, "index"), (2, "seed")]


async def test_concurrent_runners_apply_each_migration_once(stack: Any, mongo_db_name: str) -> None:
    # Separate clients stand for separate processes starting at the same moment.
    clients = [AsyncMongoClient(stack.mongo_uri, tz_aware=True) for _ in range(4)]
    calls: list[int] = []
    try:
        results = await asyncio.gather(
            *(apply_migrations(c[mongo_db_name], counting_migrations(calls)) for c in clients)
        )
    finally:
        for client in clients:
            await client.close()
    assert sorted(v for applied in results for v in applied) == [1, 2]
    assert calls == [1, 2]


async def test_versions_must_ascend(
    mongo_client: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> None:
    calls: list[int] = []
    one, two = counting_migrations(calls)
    with pytest.raises(ValueError, match="ascending"):
        await apply_migrations(mongo_client[mongo_db_name], [two, one])
