"""Every query form the order repository relies on, asserting MongoDB's documented answer, so the
suite stays true on real MongoDB as on the local stand-in."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import DESCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

Db = AsyncDatabase[dict[str, Any]]


async def test_unique_idempotency_key_per_user_refuses_a_second_insert(db: Db) -> None:
    await db.orders.insert_one({"_id": "a", "user_id": "u1", "idempotency_key": "k"})
    with pytest.raises(DuplicateKeyError) as caught:
        await db.orders.insert_one({"_id": "b", "user_id": "u1", "idempotency_key": "k"})
    assert "idempotency_key" in str(caught.value)  # how the repository tells it from others
    await db.orders.insert_one({"_id": "c", "user_id": "u2", "idempotency_key": "k"})
    assert await db.orders.count_documents({}) == 2


async def test_compare_and_set_on_version_sets_values_of_every_kind(db: Db) -> None:
    await db.orders.insert_one({"_id": "a", "version": 1, "flag": True, "due": 5})
    changes = {
        "version": 2,
        "flag": False,
        "due": None,
        "at": 1_767_225_600_000,
        "user": {"id": "u", "active": True, "deleted_at": None, "created_at": 1},
        "promo": None,
        "outbox.e1": {"type": "t", "occurred_at": 7},
        "outbox_pending": True,
    }
    hit = await db.orders.update_one({"_id": "a", "version": 1}, {"$set": changes})
    assert hit.matched_count == 1
    after = await db.orders.find_one({"_id": "a"})
    assert after is not None
    assert after["due"] is None and after["promo"] is None and after["at"] == 1_767_225_600_000
    assert bool(after["flag"]) is False and bool(after["outbox_pending"]) is True
    assert after["user"]["id"] == "u" and bool(after["user"]["active"]) is True
    assert after["user"]["deleted_at"] is None and after["user"]["created_at"] == 1
    assert after["outbox"] == {"e1": {"type": "t", "occurred_at": 7}}
    stale = await db.orders.update_one({"_id": "a", "version": 1}, {"$set": {"version": 3}})
    assert stale.matched_count == 0
    assert (await db.orders.find_one({"_id": "a"}) or {})["version"] == 2


async def test_lte_on_an_int_field_skips_null_and_missing(db: Db) -> None:
    await db.orders.insert_many(
        [
            {"_id": "due", "sweep_due_at": 100},
            {"_id": "later", "sweep_due_at": 300},
            {"_id": "none", "sweep_due_at": None},
            {"_id": "missing"},
            {"_id": "edge", "sweep_due_at": 200},
        ]
    )
    await db.orders.update_one({"_id": "later"}, {"$set": {"sweep_due_at": None}})
    await db.orders.update_one({"_id": "none"}, {"$set": {"sweep_due_at": 50}})
    found = [
        d["_id"]
        async for d in db.orders.find({"sweep_due_at": {"$lte": 200}}).sort("sweep_due_at", 1)
    ]
    assert found == ["none", "due", "edge"]


async def test_newest_first_keyset_with_filters(db: Db) -> None:
    documents = [
        {"_id": f"o{n}", "user_id": "u1" if n % 2 else "u2", "status": "CONFIRMED", "created_at": t}
        for n, t in enumerate([10, 20, 20, 20, 30, 40])
    ]
    await db.orders.insert_many(documents)
    await db.orders.update_one({"_id": "o5"}, {"$set": {"status": "CANCELLED"}})
    order = [("created_at", DESCENDING), ("_id", DESCENDING)]
    everything = [d["_id"] async for d in db.orders.find({}).sort(order)]
    assert everything == ["o5", "o4", "o3", "o2", "o1", "o0"]
    after = {"$or": [{"created_at": {"$lt": 20}}, {"created_at": 20, "_id": {"$lt": "o3"}}]}
    page = [d["_id"] async for d in db.orders.find({"$and": [after]}).sort(order).limit(2)]
    assert page == ["o2", "o1"]
    ranged = {"$and": [{"created_at": {"$gte": 20, "$lt": 40}}, {"user_id": "u1"}, after]}
    assert [d["_id"] async for d in db.orders.find(ranged).sort(order)] == ["o1"]
    by_status = {"$and": [{"status": "CONFIRMED"}, {"created_at": {"$gte": 30}}]}
    assert [d["_id"] async for d in db.orders.find(by_status).sort(order)] == ["o4"]
    projected = await db.orders.find_one({"_id": "o1"}, {"outbox": 0})
    assert projected is not None and projected["user_id"] == "u1"
