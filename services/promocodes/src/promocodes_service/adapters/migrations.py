"""The promocodes database's migrations, in version order.

No index names `_id` inside a compound key: the local MongoDB stand-in rejects writes to a
collection with such an index.
"""

from __future__ import annotations

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.mongo.connection import Document
from promo_libs.mongo.migrations import Migration

CODES = "promo_codes"
USAGES = "promo_code_usages"
CAMPAIGNS = "campaigns"


async def _indexes(db: AsyncDatabase[Document]) -> None:
    codes = db[CODES]
    await codes.create_index([("code", ASCENDING)], unique=True, name="code_unique")
    await codes.create_index([("pending_count", ASCENDING)], name="pending_count")
    await codes.create_index([("batch_id", ASCENDING)], name="batch_id")
    await codes.create_index([("rules.active", ASCENDING)], name="active")
    await codes.create_index([("outbox_pending", ASCENDING)], name="outbox_pending")
    usages = db[USAGES]
    # The per-user slot guard: a user holds at most max_uses_per_user numbered slots of a code.
    await usages.create_index(
        [("promo_id", ASCENDING), ("user_id", ASCENDING), ("slot", ASCENDING)],
        unique=True,
        name="user_slot_unique",
    )
    await usages.create_index([("promo_id", ASCENDING), ("sort_key", ASCENDING)], name="by_code")
    await usages.create_index([("user_id", ASCENDING), ("sort_key", ASCENDING)], name="by_user")
    await usages.create_index([("sort_key", ASCENDING)], name="sort_key")
    await usages.create_index([("outbox_pending", ASCENDING)], name="outbox_pending")


async def _first_order_slot(db: AsyncDatabase[Document]) -> None:
    # The first-order guard: an ACTIVE usage of a first-order-only code holds
    # `first_order_slot = <user id>`; release and rollback unset it. Sparse, so every other usage
    # (and every one written before carts, or by a replica not yet upgraded) is outside the index
    # and needs no backfill.
    await db[USAGES].create_index(
        [("first_order_slot", ASCENDING)], unique=True, sparse=True, name="first_order_unique"
    )


async def _campaign_enforcement(db: AsyncDatabase[Document]) -> None:
    # The per-user campaign limit: an ACTIVE usage of a campaign's code holds `campaign_slot`
    # 1..max_uses_per_user of its user in that campaign (a string unique to the usage otherwise:
    # no limit, released). Partial on the slot's existence, so usages of codes outside any
    # campaign (and every one written before campaigns) are outside the index and need no
    # backfill; the slot lookup names `campaign_slot: {$exists: true}` so MongoDB may use it.
    await db[USAGES].create_index(
        [("campaign_id", ASCENDING), ("user_id", ASCENDING), ("campaign_slot", ASCENDING)],
        unique=True,
        partialFilterExpression={"campaign_slot": {"$exists": True}},
        name="campaign_slot_unique",
    )
    await db[CODES].create_index([("campaign_id", ASCENDING)], name="campaign_id")
    # The sweep finds campaigns holding reservations, as it finds codes.
    await db[CAMPAIGNS].create_index([("pending_count", ASCENDING)], name="pending_count")
    # Campaigns made before enforcement were never reserved on: say so, so that "never used"
    # is one equality in UpdateCampaign's conditional write.
    await db[CAMPAIGNS].update_many(
        {"redeemed_total": {"$exists": False}}, {"$set": {"redeemed_total": 0}}
    )


MIGRATIONS = [
    Migration(1, "promo codes and usages indexes", _indexes),
    Migration(2, "one first-order redemption per user", _first_order_slot),
    Migration(3, "campaign limits: campaign slots, codes by campaign", _campaign_enforcement),
]
