"""The promocodes database's migrations, in version order.

No index names `_id` inside a compound key: the local MongoDB stand-in rejects writes to a
collection with such an index.
"""

from __future__ import annotations

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs.mongo.connection import Document
from promo_libs.mongo.migrations import Migration
from promo_libs.outbox import outbox_fields

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


async def _campaign_events(db: AsyncDatabase[Document]) -> None:
    # Campaigns became a relayed collection (CampaignCreated / CampaignUpdated in the document's
    # outbox): the relay finds flagged documents through this index, as on codes and usages.
    # Named as there; a later drop must name it ("outbox_pending"), not pass the key list.
    campaigns = db[CAMPAIGNS]
    await campaigns.create_index([("outbox_pending", ASCENDING)], name="outbox_pending")
    # Campaigns stored before they had events get the one event a replay would give them (their
    # current rules at their version), so analytics learn them without a rebuild. Every write
    # since stores an `outbox` map (empty once relayed), so "no outbox" is exactly those older
    # documents, and the conditional write gives each one event even if this runs twice.
    # Imported here: those adapters import this module's collection names.
    from promocodes_service.adapters.event_codec import encode_campaign_events
    from promocodes_service.adapters.mongo_campaigns import MongoCampaignRepository, replay_event

    repository = MongoCampaignRepository(db, encode_campaign_events)
    async for document in campaigns.find({"outbox": {"$exists": False}}):
        campaign = repository.from_document(document)
        entries = encode_campaign_events([replay_event(campaign)], campaign.version)
        await campaigns.update_one(
            {"_id": campaign.id, "outbox": {"$exists": False}},
            {"$set": outbox_fields(entries, nested=False)},
        )


MIGRATIONS = [
    Migration(1, "promo codes and usages indexes", _indexes),
    Migration(2, "one first-order redemption per user", _first_order_slot),
    Migration(3, "campaign limits: campaign slots, codes by campaign", _campaign_enforcement),
    Migration(4, "campaign events: outbox index, events of older campaigns", _campaign_events),
]
