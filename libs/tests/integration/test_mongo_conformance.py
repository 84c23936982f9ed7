"""Every MongoDB query form the shared code relies on, asserting MongoDB's documented answer.

These run against whatever MONGODB_URI names (the local stand-in by default, a real MongoDB in
the compatibility run), so the code stays true for both.
"""

from typing import Any

import pytest
from pymongo import ASCENDING, AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError

from promo_libs.config import MongoSettings
from promo_libs.metrics import MONGO_DATABASE_SIZE
from promo_libs.mongo.connection import MongoConnection

Client = AsyncMongoClient[dict[str, Any]]


async def test_unique_index_refuses_a_duplicate_with_duplicate_key_error(
    mongo_client: Client, mongo_db_name: str
) -> None:
    collection = mongo_client[mongo_db_name]["c"]
    await collection.create_index([("key", ASCENDING)], unique=True, name="key_unique")
    await collection.insert_one({"_id": "a", "key": "k"})
    with pytest.raises(DuplicateKeyError) as caught:
        await collection.insert_one({"_id": "b", "key": "k"})
    assert "key" in str(caught.value)
    with pytest.raises(DuplicateKeyError):
        await collection.insert_one({"_id": "a", "key": "other"})
    await collection.insert_one({"_id": "c", "key": "k2"})
    with pytest.raises(DuplicateKeyError):
        await collection.update_one({"_id": "c"}, {"$set": {"key": "k"}})
    assert await collection.count_documents({}) == 2


async def test_create_index_twice_is_a_no_op(mongo_client: Client, mongo_db_name: str) -> None:
    collection = mongo_client[mongo_db_name]["c"]
    for _ in range(2):
        await collection.create_index([("key", ASCENDING)], unique=True, name="key_unique")
    unique = [i for i in (await collection.index_information()).values() if i.get("unique")]
    assert len(unique) == 1


async def test_compare_and_set_updates_only_a_matching_version(
    mongo_client: Client, mongo_db_name: str
) -> None:
    collection = mongo_client[mongo_db_name]["c"]
    await collection.insert_one({"_id": "a", "version": 1, "name": "x", "outbox": {}})
    after = await collection.find_one_and_update(
        {"_id": "a", "version": 1},
        {"$set": {"version": 2, "name": "y", "outbox.e1": {"type": "T", "n": 1}}},
        return_document=ReturnDocument.AFTER,
    )
    assert (
        after is not None
        and after["version"] == 2
        and after["outbox"] == {"e1": {"type": "T", "n": 1}}
    )
    stale = await collection.find_one_and_update(
        {"_id": "a", "version": 1}, {"$set": {"version": 2, "name": "z"}}
    )
    assert stale is None
    missed = await collection.update_one({"_id": "a", "version": 1}, {"$set": {"name": "z"}})
    assert missed.matched_count == 0
    hit = await collection.update_one({"_id": "a", "version": 2}, {"$set": {"version": 3}})
    assert hit.matched_count == 1
    assert (await collection.find_one({"_id": "a"}))["name"] == "y"  # type: ignore[index]


async def test_keyset_page_on_id_with_equality_filter(
    mongo_client: Client, mongo_db_name: str
) -> None:
    collection = mongo_client[mongo_db_name]["c"]
    await collection.insert_many([{"_id": f"id{n:02d}", "active": n % 3 != 0} for n in range(10)])
    cursor = collection.find({"active": True, "_id": {"$gt": "id04"}}).sort("_id", 1).limit(3)
    assert [d["_id"] async for d in cursor] == ["id05", "id07", "id08"]
    assert await collection.count_documents({"_id": "id05"}, limit=1) == 1
    assert await collection.count_documents({"_id": "nope"}, limit=1) == 0


async def test_equality_on_a_boolean_written_by_set(
    mongo_client: Client, mongo_db_name: str
) -> None:
    collection = mongo_client[mongo_db_name]["c"]
    await collection.insert_many([{"_id": "a", "active": True}, {"_id": "b", "active": True}])
    await collection.update_one({"_id": "a"}, {"$set": {"active": False}})
    assert [d["_id"] async for d in collection.find({"active": False})] == ["a"]
    assert [d["_id"] async for d in collection.find({"active": True})] == ["b"]


async def test_lock_by_insert_and_take_over_only_when_expired(
    mongo_client: Client, mongo_db_name: str
) -> None:
    """The migrations lease: insert takes a free lock, a conditional update an expired one."""
    collection = mongo_client[mongo_db_name]["lock"]
    await collection.insert_one({"_id": "lock", "holder": "a", "expires_at": 500})
    with pytest.raises(DuplicateKeyError):
        await collection.insert_one({"_id": "lock", "holder": "b", "expires_at": 600})
    not_expired = await collection.find_one_and_update(
        {"_id": "lock", "expires_at": {"$lt": 200}}, {"$set": {"holder": "b", "expires_at": 600}}
    )
    assert not_expired is None
    taken_over = await collection.find_one_and_update(
        {"_id": "lock", "expires_at": {"$lt": 501}},
        {"$set": {"holder": "c", "expires_at": 900}},
        return_document=ReturnDocument.AFTER,
    )
    assert taken_over is not None and taken_over["holder"] == "c"
    await collection.delete_one({"_id": "lock", "holder": "someone else"})
    assert await collection.count_documents({}) == 1
    await collection.delete_one({"_id": "lock", "holder": "c"})
    assert await collection.count_documents({}) == 0


async def test_db_stats_feeds_the_database_size_metric(stack: Any, mongo_db_name: str) -> None:
    # dbStats (not collStats, deprecated since MongoDB 6.2) gives byte sizes of the database.
    connection = MongoConnection(
        MongoSettings(mongodb_uri=stack.mongo_uri, mongodb_db_name=mongo_db_name)
    )
    await connection.connect()
    try:
        await connection.db["sized"].insert_many([{"_id": n, "pad": "x" * 1000} for n in range(50)])
        await connection.refresh_size_metric()
    finally:
        await connection.disconnect()
    assert MONGO_DATABASE_SIZE.labels(mongo_db_name)._value.get() > 0


async def test_count_with_limit_counts_at_most_the_limit(
    mongo_client: Client, mongo_db_name: str
) -> None:
    # PyMongo sends count_documents as an aggregate ($match, $limit, $group): 0 for no match.
    items = mongo_client[mongo_db_name]["items"]
    await items.insert_many([{"_id": n, "pending": n % 2 == 0} for n in range(6)])
    assert await items.count_documents({"pending": True}, limit=1) == 1
    assert await items.count_documents({"pending": True}) == 3
    assert await items.count_documents({"_id": "missing"}, limit=1) == 0
