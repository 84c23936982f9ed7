"""Every MongoDB query form the promocodes service relies on, with MongoDB's documented answer.

They run against whatever MONGODB_URI names (the nx-27017 stand-in locally, real MongoDB too).
Forms the stand-in answers wrongly are not used by the service at all: `$or` beside `$exists`
(matched documents it should not), `$not`, `$ne`/`$nin` on arrays, find_one_and_update under a
unique index (returns None instead of raising), and datetimes or bare booleans written by `$set`
(read back as text / ints): moments are epoch milliseconds, rules are one sub-document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from promo_libs.mongo.times import to_millis

pytestmark = pytest.mark.integration

Db = AsyncDatabase[dict[str, Any]]
NOW = to_millis(datetime(2030, 5, 1, 12, 0, 0, 123000, tzinfo=UTC))
DAY = 86_400_000


async def _code(db: Db, **extra: Any) -> None:
    await db.promo_codes.insert_one(
        {
            "_id": "p1",
            "code": "ABC",
            "version": 1,
            "uses": 0,
            "discount_granted": 0,
            "pending": {},
            "pending_count": 0,
            "rules": {
                "active": True,
                "window_from": extra.pop("window_from", NOW - DAY),
                "window_until": extra.pop("window_until", NOW + DAY),
            },
            **extra,
        }
    )


def _reserve_filter(rid: str) -> dict[str, Any]:
    return {
        "_id": "p1",
        "version": 1,
        "rules.active": True,
        f"pending.{rid}": {"$exists": False},
        "rules.window_from": {"$lte": NOW},
        "rules.window_until": {"$gt": NOW},
        "uses": {"$lt": 2},
        "discount_granted": {"$lte": 1000 - 400},
    }


def _reserve_update(rid: str, attempt: str) -> dict[str, Any]:
    return {
        "$inc": {"uses": 1, "discount_granted": 400, "pending_count": 1},
        "$set": {f"pending.{rid}": {"at": NOW, "attempt": attempt, "kind": "redeem"}},
    }


async def test_reserve_matches_once_per_key_with_exists_false_lt_lte_and_times(db: Db) -> None:
    await _code(db)
    first = await db.promo_codes.update_one(_reserve_filter("r1"), _reserve_update("r1", "a"))
    again = await db.promo_codes.update_one(_reserve_filter("r1"), _reserve_update("r1", "b"))
    other = await db.promo_codes.update_one(_reserve_filter("r2"), _reserve_update("r2", "c"))
    budget = await db.promo_codes.update_one(_reserve_filter("r3"), _reserve_update("r3", "d"))
    assert (first.matched_count, again.matched_count, other.matched_count) == (1, 0, 1)
    assert budget.matched_count == 0  # uses < 2 and 800 <= 600 both fail now
    stored = await db.promo_codes.find_one({"_id": "p1"})
    assert stored is not None
    assert (stored["uses"], stored["discount_granted"], stored["pending_count"]) == (2, 800, 2)
    assert stored["pending"]["r1"] == {"at": NOW, "attempt": "a", "kind": "redeem"}
    assert isinstance(stored["pending"]["r1"]["at"], int)


async def test_window_bounds_are_inclusive_from_exclusive_until(db: Db) -> None:
    await _code(db, window_from=NOW, window_until=NOW + 1000)
    at_start = {"rules.window_from": {"$lte": NOW}, "rules.window_until": {"$gt": NOW}}
    at_end = {
        "rules.window_from": {"$lte": NOW + 1000},
        "rules.window_until": {"$gt": NOW + 1000},
    }
    before = {"rules.window_from": {"$lte": NOW - 1}}
    assert await db.promo_codes.count_documents(at_start) == 1
    assert await db.promo_codes.count_documents(at_end) == 0
    assert await db.promo_codes.count_documents(before) == 0


async def test_settle_unsets_a_map_entry_exactly_once_by_attempt(db: Db) -> None:
    await _code(db, pending={"r1": {"at": NOW, "attempt": "a"}}, pending_count=1, uses=1)
    update = {"$unset": {"pending.r1": ""}, "$inc": {"pending_count": -1, "uses": -1}}
    wrong = await db.promo_codes.update_one({"_id": "p1", "pending.r1.attempt": "zz"}, update)
    right = await db.promo_codes.update_one({"_id": "p1", "pending.r1.attempt": "a"}, update)
    twice = await db.promo_codes.update_one({"_id": "p1", "pending.r1.attempt": "a"}, update)
    assert (wrong.matched_count, right.matched_count, twice.matched_count) == (0, 1, 0)
    stored = await db.promo_codes.find_one({"_id": "p1"})
    assert stored is not None
    assert (stored["pending"], stored["pending_count"], stored["uses"]) == ({}, 0, 0)
    assert await db.promo_codes.count_documents({"pending_count": {"$gt": 0}}) == 0


async def test_unique_compound_slot_index_and_freeing_a_slot(db: Db) -> None:
    usages = db.promo_code_usages
    await usages.insert_one({"_id": "r1", "promo_id": "p", "user_id": "u", "slot": 1})
    with pytest.raises(DuplicateKeyError):
        await usages.insert_one({"_id": "r2", "promo_id": "p", "user_id": "u", "slot": 1})
    with pytest.raises(DuplicateKeyError):
        await usages.insert_one({"_id": "r1", "promo_id": "p", "user_id": "u", "slot": 2})
    assert await usages.find_one({"_id": "r2"}) is None  # nothing of a refused insert remains
    await usages.insert_one({"_id": "r3", "promo_id": "p", "user_id": "other", "slot": 1})
    await usages.update_one({"_id": "r1"}, {"$set": {"slot": "r:r1"}})
    await usages.insert_one({"_id": "r2", "promo_id": "p", "user_id": "u", "slot": 1})
    with pytest.raises(DuplicateKeyError):
        await usages.update_one({"_id": "r3"}, {"$set": {"user_id": "u"}})
    assert await usages.count_documents({"promo_id": "p", "user_id": "u"}) == 2


async def test_fencing_map_with_exists_false_and_equality(db: Db) -> None:
    usages = db.promo_code_usages
    await usages.insert_one(
        {"_id": "r1", "promo_id": "p", "user_id": "u", "slot": "a:r1", "status": "ABANDONED",
         "aborted": {"att1": True}}
    )  # fmt: skip
    fenced = {"_id": "r1", "status": "ABANDONED", "aborted.att1": {"$exists": False}}
    free = {"_id": "r1", "status": "ABANDONED", "aborted.att2": {"$exists": False}}
    assert await usages.count_documents(fenced) == 0
    taken = await usages.update_one(free, {"$set": {"status": "ACTIVE", "slot": 1}})
    assert taken.matched_count == 1
    assert await usages.count_documents({"status": {"$in": ["ACTIVE", "RELEASED"]}}) == 1
    assert (await usages.update_one(free, {"$set": {"slot": 2}})).matched_count == 0


async def test_code_prefix_range_and_keyset_in_code_order(db: Db) -> None:
    for index, code in enumerate(["AB-1", "AB_2", "ABC", "AC", "AA", "AB"]):
        await db.promo_codes.insert_one({"_id": f"c{index}", "code": code})
    found = db.promo_codes.find({"code": {"$gte": "AB", "$lt": "AC", "$gt": "AB-1"}}).sort(
        "code", 1
    )
    assert [d["code"] async for d in found] == ["ABC", "AB_2"]
    with pytest.raises(DuplicateKeyError):
        await db.promo_codes.insert_one({"_id": "c9", "code": "ABC"})


async def test_insert_many_unordered_reports_each_duplicate_and_inserts_the_rest(db: Db) -> None:
    await db.promo_codes.insert_one({"_id": "x0", "code": "TAKEN"})
    documents = [{"_id": f"x{i}", "code": code} for i, code in enumerate(["A1", "TAKEN", "A2"], 1)]
    with pytest.raises(BulkWriteError) as caught:
        await db.promo_codes.insert_many(documents, ordered=False)
    errors = caught.value.details["writeErrors"]
    assert [(e["index"], e["code"]) for e in errors] == [(1, 11000)]
    assert caught.value.details["nInserted"] == 2
    assert await db.promo_codes.count_documents({}) == 3


async def test_sort_key_keyset_and_status_filters(db: Db) -> None:
    for key in ["20300101000000001|b", "20300101000000001|a", "20300101000000002|a"]:
        await db.promo_code_usages.insert_one(
            {"_id": key, "promo_id": "p", "user_id": "u", "slot": key, "status": "ACTIVE",
             "sort_key": key}
        )  # fmt: skip
    after = db.promo_code_usages.find(
        {"promo_id": "p", "status": "ACTIVE", "sort_key": {"$gt": "20300101000000001|a"}}
    ).sort("sort_key", 1)
    assert [d["_id"] async for d in after] == ["20300101000000001|b", "20300101000000002|a"]


async def test_whole_subdocument_set_keeps_types_and_compare_and_set_on_version(db: Db) -> None:
    await _code(db, version=1)
    rules = {"active": False, "window_from": NOW, "window_until": NOW + 2 * DAY,
             "max_uses": None, "eligible_user_ids": ["u1"], "updated_at": NOW}  # fmt: skip
    stale = await db.promo_codes.update_one(
        {"_id": "p1", "version": 0}, {"$set": {"rules": rules, "version": 2}}
    )
    fresh = await db.promo_codes.update_one(
        {"_id": "p1", "version": 1, "uses": {"$lte": 5}, "redeemed_total": {"$exists": False}},
        {"$set": {"rules": rules, "version": 2}},
    )
    assert (stale.matched_count, fresh.matched_count) == (0, 1)
    stored = await db.promo_codes.find_one({"_id": "p1"})
    assert stored is not None and stored["rules"] == rules and stored["version"] == 2
    assert await db.promo_codes.count_documents({"rules.active": False}) == 1
    assert await db.promo_codes.count_documents({"rules.window_from": {"$lte": NOW}}) == 1


async def test_filtered_replace_takes_over_a_fenced_document_once(db: Db) -> None:
    usages = db.promo_code_usages
    await usages.insert_one({"_id": "r9", "promo_id": "p", "user_id": "u", "slot": "a:r9",
                             "status": "ABANDONED", "aborted": {"old": True}})  # fmt: skip
    new = {"_id": "r9", "promo_id": "p", "user_id": "u", "slot": 1, "status": "ACTIVE",
           "created_at": NOW, "aborted": {"old": True}}  # fmt: skip
    fenced = {"_id": "r9", "status": "ABANDONED", "aborted.old": {"$exists": False}}
    free = {"_id": "r9", "status": "ABANDONED", "aborted.new": {"$exists": False}}
    assert (await usages.replace_one(fenced, new)).matched_count == 0
    assert (await usages.replace_one(free, new)).matched_count == 1
    assert (await usages.replace_one(free, new)).matched_count == 0
    assert await usages.find_one({"_id": "r9"}) == new


async def test_replace_and_update_report_a_unique_index_violation(db: Db) -> None:
    usages = db.promo_code_usages
    await usages.insert_one({"_id": "a", "promo_id": "p", "user_id": "u", "slot": 1})
    await usages.insert_one({"_id": "b", "promo_id": "p", "user_id": "u", "slot": "a:b"})
    with pytest.raises(DuplicateKeyError):
        await usages.replace_one(
            {"_id": "b"}, {"_id": "b", "promo_id": "p", "user_id": "u", "slot": 1}
        )
    with pytest.raises(DuplicateKeyError):
        await usages.update_one({"_id": "b"}, {"$set": {"slot": 1}})
    stored = await usages.find_one({"_id": "b"})
    assert stored is not None and stored["slot"] == "a:b"


# --- forms added for issue 12 (voided ids, stuck reservations, staged batches) ---------------


async def test_in_on_ids_with_a_status_filter_and_a_projection(db: Db) -> None:
    """written_attempts: `_id $in`, `status $in`, projection of one field (plus _id)."""
    await db.promo_code_usages.insert_many(
        [
            {"_id": "r1", "status": "ACTIVE", "attempt": "a1", "slot": 1},
            {"_id": "r2", "status": "ABANDONED", "attempt": "a2", "slot": "a:r2"},
            {"_id": "r3", "status": "RELEASED", "attempt": "a3", "slot": "r:r3"},
            {"_id": "r4", "status": "VOIDED", "slot": "v:r4"},
        ]
    )
    cursor = db.promo_code_usages.find(
        {"_id": {"$in": ["r1", "r2", "r3", "r4", "r9"]}, "status": {"$in": ["ACTIVE", "RELEASED"]}},
        {"attempt": 1},
    )
    found = sorted([d async for d in cursor], key=lambda d: d["_id"])
    assert found == [{"_id": "r1", "attempt": "a1"}, {"_id": "r3", "attempt": "a3"}]


async def test_voiding_an_abandoned_placeholder_excludes_a_take_over(db: Db) -> None:
    """void: update filtered on ABANDONED; afterwards claim's filtered replace must not match."""
    await db.promo_code_usages.insert_one(
        {"_id": "r5", "status": "ABANDONED", "slot": "a:r5", "aborted": {"old": True}}
    )
    voided = await db.promo_code_usages.update_one(
        {"_id": "r5", "status": "ABANDONED"}, {"$set": {"status": "VOIDED", "slot": "v:r5"}}
    )
    assert (voided.matched_count, voided.modified_count) == (1, 1)
    taken = await db.promo_code_usages.replace_one(
        {"_id": "r5", "status": "ABANDONED", "aborted.new": {"$exists": False}},
        {"_id": "r5", "status": "ACTIVE", "slot": 1},
    )
    assert taken.matched_count == 0
    stored = await db.promo_code_usages.find_one({"_id": "r5"})
    assert stored is not None and stored["status"] == "VOIDED"
    with pytest.raises(DuplicateKeyError):  # a tombstone insert racing a usage: _id decides
        await db.promo_code_usages.insert_one({"_id": "r5", "status": "VOIDED"})


async def test_staged_codes_flip_with_update_many_and_exists_false_hides_them(db: Db) -> None:
    """A generated batch: staged documents are skipped by `staged $exists false`; one
    update_many drops the flag and sets outbox_pending on exactly the batch's staged codes."""
    await db.promo_codes.insert_many(
        [
            {"_id": "s1", "code": "B-1", "batch_id": "b", "staged": True, "outbox_pending": False},
            {"_id": "s2", "code": "B-2", "batch_id": "b", "staged": True, "outbox_pending": False},
            {"_id": "o1", "code": "C-1", "batch_id": "c", "staged": True, "outbox_pending": False},
            {"_id": "v1", "code": "A-1", "batch_id": "", "outbox_pending": False},
        ]
    )
    visible = db.promo_codes.find({"staged": {"$exists": False}}).sort("code", 1)
    assert [d["_id"] async for d in visible] == ["v1"]
    flipped = await db.promo_codes.update_many(
        {"batch_id": "b", "staged": True},
        {"$set": {"outbox_pending": True}, "$unset": {"staged": ""}},
    )
    assert (flipped.matched_count, flipped.modified_count) == (2, 2)
    visible = db.promo_codes.find({"staged": {"$exists": False}}).sort("code", 1)
    assert [d["_id"] async for d in visible] == ["v1", "s1", "s2"]
    assert [d["_id"] async for d in db.promo_codes.find({"outbox_pending": True})] in (
        ["s1", "s2"],
        ["s2", "s1"],
    )
    other = await db.promo_codes.find_one({"_id": "o1"})
    assert (
        other is not None
        and other["staged"] is True
        and "staged" not in (await db.promo_codes.find_one({"_id": "s1"}) or {"staged": 1})
    )


async def test_sparse_unique_first_order_slot(db: Db) -> None:
    """MongoDB: a sparse unique index leaves documents without the field out (any number may
    lack it) and refuses a second document with the same value; $unset frees the value."""
    usages = db.promo_code_usages
    await usages.insert_one({"_id": "a", "promo_id": "p", "user_id": "u", "slot": "u:a"})
    await usages.insert_one({"_id": "b", "promo_id": "p", "user_id": "u", "slot": "u:b"})
    first = {"promo_id": "p", "user_id": "u", "first_order_slot": "u"}
    await usages.insert_one({"_id": "c", "slot": "u:c", **first})
    with pytest.raises(DuplicateKeyError):
        await usages.insert_one({"_id": "d", "slot": "u:d", **first})
    assert await usages.find_one({"_id": "d"}) is None
    await usages.update_one({"_id": "c"}, {"$unset": {"first_order_slot": ""}})
    await usages.insert_one({"_id": "d", "slot": "u:d", **first})
    assert await usages.count_documents({"first_order_slot": "u"}) == 1
    # The stand-in renames indexes (DESIGN.md): look the index up by its key, not its name.
    keys = [dict(index["key"]) async for index in await usages.list_indexes()]
    assert {"first_order_slot": 1} in keys


async def test_partial_unique_campaign_slot_and_its_lookup(db: Db) -> None:
    """MongoDB: a unique index with partialFilterExpression {campaign_slot: {$exists: true}}
    leaves every document without the field out (usages of codes outside campaigns, any number
    per user), refuses a second (campaign_id, user_id, campaign_slot), and a $set of the slot to
    a value unique to the usage frees it. The lookup names the partial filter and $eq keys."""
    usages = db.promo_code_usages
    for rid in ("n1", "n2"):  # no campaign: outside the index
        await usages.insert_one({"_id": rid, "promo_id": "p", "user_id": "u", "slot": f"u:{rid}"})
    held = {"campaign_id": "c", "user_id": "u", "campaign_slot": 1, "status": "ACTIVE"}
    await usages.insert_one({"_id": "a", "promo_id": "p1", "slot": "u:a", **held})
    with pytest.raises(DuplicateKeyError):
        await usages.insert_one({"_id": "b", "promo_id": "p2", "slot": "u:b", **held})
    assert await usages.find_one({"_id": "b"}) is None
    lookup = {
        "campaign_id": {"$eq": "c"},
        "user_id": {"$eq": "u"},
        "campaign_slot": {"$exists": True},
        "status": "ACTIVE",
    }
    assert [d["campaign_slot"] async for d in usages.find(lookup, {"campaign_slot": 1})] == [1]
    await usages.update_one({"_id": "a"}, {"$set": {"status": "RELEASED", "campaign_slot": "r:a"}})
    await usages.insert_one({"_id": "b", "promo_id": "p2", "slot": "u:b", **held})
    assert [d["_id"] async for d in usages.find(lookup)] == ["b"]
    keys = [dict(index["key"]) async for index in await usages.list_indexes()]
    assert {"campaign_id": 1, "user_id": 1, "campaign_slot": 1} in keys
