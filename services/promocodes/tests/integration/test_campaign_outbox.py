"""A campaign's events live in its own document's outbox (real MongoDB adapters, a relay pass).

No relay runs while the use cases write: that is the process dying right after each write, before
anything was published. One relay pass afterwards must publish every event, in version order,
and the redemptions counted on the campaign in between must have added none.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from promo.v1 import events_pb2
from promo_libs.carts import MoneyValue
from promo_libs.events import PROMO_CODES_STREAM
from promo_libs.mongo.indexes import index_names_by_keys
from promo_libs.mongo.migrations import apply_migrations
from promo_libs.mongo.outbox_store import MongoOutboxStore
from promo_libs.outbox import stored_entries
from promo_libs.relay import OutboxRelay
from promo_libs_testing.memory import InMemoryPublisher
from promocodes_service.adapters.event_codec import (
    encode_campaign_events,
    encode_code_events,
    encode_usage_events,
)
from promocodes_service.adapters.migrations import CAMPAIGNS, MIGRATIONS
from promocodes_service.adapters.mongo_campaigns import MongoCampaignRepository
from promocodes_service.adapters.mongo_codes import MongoPromoCodeRepository
from promocodes_service.adapters.mongo_usages import MongoUsageRepository
from promocodes_service.domain.commands import (
    CampaignSpec,
    CodeSpec,
    CreateCampaign,
    CreatePromoCode,
    RedeemPromoCode,
    ReleasePromoCode,
    UpdateCampaign,
)
from promocodes_service.service_layer.campaigns import Campaigns
from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_service.service_layer.redemption import Redemptions
from promocodes_service.service_layer.sweep import Sweeper
from promocodes_testing.memory import FakeUserDirectory

Db = AsyncDatabase[dict[str, Any]]


@dataclass
class Rig:
    db: Db
    campaigns: Campaigns
    catalogue: Catalogue
    redemptions: Redemptions


def clock() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@pytest_asyncio.fixture(loop_scope="session")
async def rig(db: Db) -> AsyncIterator[Rig]:
    ids = itertools.count(1)

    def new_id() -> str:
        return f"id{next(ids):06d}"

    codes = MongoPromoCodeRepository(db, encode_code_events)
    usages = MongoUsageRepository(db, encode_usage_events)
    campaigns = MongoCampaignRepository(db, encode_campaign_events)
    users = FakeUserDirectory()
    for name in ("alice", "bob"):
        users.add(name)
    sweeper = Sweeper(codes, usages, clock, timedelta(seconds=30), campaigns)
    yield Rig(
        db,
        Campaigns(campaigns, new_id, clock),
        Catalogue(codes, campaigns, new_id, clock),
        Redemptions(codes, usages, users, sweeper, new_id, clock, campaigns=campaigns),
    )


def envelopes(publisher: InMemoryPublisher) -> list[events_pb2.EventEnvelope]:
    return [
        events_pb2.EventEnvelope.FromString(e.envelope)
        for e in publisher.streams.get(PROMO_CODES_STREAM, [])
    ]


async def relay_pass(db: Db, publisher: InMemoryPublisher) -> int:
    return await OutboxRelay(MongoOutboxStore(db[CAMPAIGNS]), publisher).publish_pending()


async def test_events_written_with_the_campaign_survive_a_crash_and_redemptions_add_none(
    rig: Rig,
) -> None:
    made = await rig.campaigns.create(
        CreateCampaign(CampaignSpec(display_name="Spring", max_uses=10, max_uses_per_user=1))
    )
    await rig.campaigns.update(
        UpdateCampaign(
            made.id,
            frozenset({"max_uses", "budget"}),
            CampaignSpec(display_name="", max_uses=20, budget=MoneyValue("EUR", 5_000)),
        )
    )
    await rig.catalogue.create(
        CreatePromoCode(
            CodeSpec(code="OUTBOX-1", discount="percentage", basis_points=1000, campaign_id=made.id)
        )
    )
    for user, rid in (("alice", "o1"), ("bob", "o2")):
        await rig.redemptions.redeem(
            RedeemPromoCode("OUTBOX-1", user, MoneyValue("EUR", 10_000), rid)
        )
    await rig.redemptions.release(ReleasePromoCode("o1", "cancelled"))

    document = await rig.db[CAMPAIGNS].find_one({"_id": made.id})
    assert document is not None
    assert (document["uses"], document["discount_granted"], document["pending"]) == (1, 1000, {})
    stored = sorted(stored_entries(document), key=lambda e: e.aggregate_version)
    # Written with the changes, nothing by the redemptions' reserve and settle writes.
    assert [(e.event_type, e.aggregate_version) for e in stored] == [
        ("promo.v1.CampaignCreated", 1),
        ("promo.v1.CampaignUpdated", 2),
    ]
    assert bool(document["outbox_pending"])

    publisher = InMemoryPublisher()
    assert await relay_pass(rig.db, publisher) == 1
    published = envelopes(publisher)
    assert [(e.WhichOneof("payload"), e.aggregate_version) for e in published] == [
        ("campaign_created", 1),
        ("campaign_updated", 2),
    ]
    assert {(e.aggregate_type, e.aggregate_id, e.producer) for e in published} == {
        ("campaign", made.id, "promocodes")
    }
    created, updated = published[0].campaign_created, published[1].campaign_updated
    assert (created.campaign.max_uses, created.campaign.max_uses_per_user) == (10, 1)
    assert not created.campaign.HasField("budget_minor") and created.campaign.currency_code == ""
    assert list(updated.changed_fields) == ["budget", "max_uses"]
    assert (updated.campaign.max_uses, updated.campaign.budget_minor) == (20, 5_000)
    assert updated.campaign.currency_code == "EUR"
    assert updated.campaign.display_name == "Spring"  # not in the mask: kept

    cleared = await rig.db[CAMPAIGNS].find_one({"_id": made.id})
    assert cleared is not None and cleared["outbox"] == {} and not cleared["outbox_pending"]
    # A redemption after the relay cleared the outbox leaves nothing to publish either.
    await rig.redemptions.redeem(
        RedeemPromoCode("OUTBOX-1", "alice", MoneyValue("EUR", 10_000), "o3")
    )
    await relay_pass(rig.db, publisher)
    assert len(envelopes(publisher)) == 2


async def test_campaigns_stored_before_events_get_their_one_event_from_migration_4(
    mongo_client: AsyncMongoClient[dict[str, Any]], mongo_db_name: str
) -> None:
    db = mongo_client[mongo_db_name]
    await apply_migrations(db, MIGRATIONS[:3])
    rules: dict[str, Any] = {
        "display_name": "Old",
        "description": "",
        "max_uses": 5,
        "max_uses_per_user": None,
        "budget": None,
        "currency": None,
        "valid_from": None,
        "valid_until": None,
        "updated_at": 1_700_000_100_000,
    }
    # As the service stored them before campaigns had events: no outbox fields at all.
    await db[CAMPAIGNS].insert_many(
        [
            {"_id": "c-new", "created_at": 1_700_000_000_000, "version": 1, "rules": rules},
            {"_id": "c-changed", "created_at": 1_700_000_000_000, "version": 3, "rules": rules},
        ]
    )
    await apply_migrations(db, MIGRATIONS)
    # By key specification: the stand-in names indexes itself (promo_libs.mongo.indexes).
    assert await index_names_by_keys(db[CAMPAIGNS], [("outbox_pending", 1)])
    # Run again (a retried migration): the conditional write adds nothing.
    await MIGRATIONS[3].apply(db)
    found = {d["_id"]: d async for d in db[CAMPAIGNS].find({})}
    kinds = {
        campaign_id: [(e.event_type, e.aggregate_version) for e in stored_entries(document)]
        for campaign_id, document in found.items()
    }
    assert kinds == {
        "c-new": [("promo.v1.CampaignCreated", 1)],
        "c-changed": [("promo.v1.CampaignUpdated", 3)],
    }
    assert all(bool(d["outbox_pending"]) for d in found.values())
    publisher = InMemoryPublisher()
    await relay_pass(db, publisher)
    [first, second] = sorted(envelopes(publisher), key=lambda e: e.aggregate_id)
    assert first.campaign_updated.campaign.max_uses == 5
    assert list(first.campaign_updated.changed_fields) == []
    assert second.campaign_created.campaign.display_name == "Old"
    assert second.occurred_at.ToMilliseconds() == 1_700_000_000_000
