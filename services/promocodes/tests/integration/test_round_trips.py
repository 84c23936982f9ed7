"""How many MongoDB round trips a redemption costs, counted on the client (README, Benchmarks).

The use case on the real MongoDB adapters, with a fake user directory (a gRPC call, not a
MongoDB round trip). Prints the commands; fails when a change adds one.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest_asyncio
from pymongo import AsyncMongoClient

from devstack.query_plans import collection_scans
from devstack.stack import Stack
from promo_libs.carts import MoneyValue
from promo_libs.mongo.migrations import apply_migrations
from promo_libs.mongo.monitoring import CommandCounter
from promocodes_service.adapters.event_codec import (
    encode_campaign_events,
    encode_code_events,
    encode_usage_events,
)
from promocodes_service.adapters.migrations import MIGRATIONS
from promocodes_service.adapters.mongo_campaigns import MongoCampaignRepository
from promocodes_service.adapters.mongo_codes import MongoPromoCodeRepository
from promocodes_service.adapters.mongo_usages import MongoUsageRepository
from promocodes_service.domain.commands import (
    CampaignSpec,
    CodeSpec,
    CreateCampaign,
    CreatePromoCode,
    DeletePromoCode,
    GeneratePromoCodes,
    ListPromoCodeUsages,
    RedeemPromoCode,
)
from promocodes_service.service_layer.campaigns import Campaigns
from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_service.service_layer.redemption import Redemptions
from promocodes_service.service_layer.sweep import Sweeper
from promocodes_testing.memory import FakeUserDirectory

# Code by text, reserve, write the usage, settle, and the user's active slots (the code has a
# per-user limit). It was 6: the usage was read by id first, for replays only.
REDEEM_ROUND_TRIPS = 5
# A code of a campaign, both with a per-user limit: the code and the campaign read, the user's
# slots of each, reserve campaign, reserve code, write usage, settle code, settle campaign.
CAMPAIGN_REDEEM_ROUND_TRIPS = 9


Counted = tuple[CommandCounter, Catalogue, Redemptions, Campaigns, AsyncMongoClient[dict[str, Any]]]


@pytest_asyncio.fixture(loop_scope="session")
async def counted(stack: Stack, mongo_db_name: str) -> AsyncIterator[Counted]:
    counter = CommandCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        stack.mongo_uri, tz_aware=True, event_listeners=[counter]
    )
    try:
        db = client[mongo_db_name]
        await apply_migrations(db, MIGRATIONS)
        codes = MongoPromoCodeRepository(db, encode_code_events)
        usages = MongoUsageRepository(db, encode_usage_events)
        users = FakeUserDirectory()
        for name in ("alice", "bob"):
            users.add(name)
        ids = itertools.count(1)

        def new_id() -> str:
            return f"id{next(ids):06d}"

        def clock() -> datetime:
            now = datetime.now(UTC)
            return now.replace(microsecond=now.microsecond // 1000 * 1000)

        campaigns = MongoCampaignRepository(db, encode_campaign_events)
        sweeper = Sweeper(codes, usages, clock, timedelta(seconds=30), campaigns)
        yield (
            counter,
            Catalogue(codes, campaigns, new_id, clock),
            Redemptions(codes, usages, users, sweeper, new_id, clock, campaigns=campaigns),
            Campaigns(campaigns, new_id, clock),
            client,
        )
    finally:
        await client.close()


def redeem(code: str, user: str, rid: str) -> RedeemPromoCode:
    return RedeemPromoCode(code, user, MoneyValue("EUR", 10_000), rid)


async def test_a_redemption_costs_five_round_trips_and_a_replay_answers_the_same_snapshot(
    counted: Counted,
) -> None:
    counter, catalogue, redemptions, _, client = counted
    spec = CodeSpec(code="TRIPS", discount="percentage", basis_points=1000, max_uses_per_user=5)
    promo = await catalogue.create(CreatePromoCode(spec))
    await redemptions.redeem(redeem("TRIPS", "bob", "warm-up"))
    counter.reset()
    usage = await redemptions.redeem(redeem("TRIPS", "alice", "r1"))
    print(f"RedeemPromoCode: {counter.total} MongoDB round trips {dict(counter.counts)}")
    assert counter.total == REDEEM_ROUND_TRIPS, dict(counter.counts)
    # Each of them through an index: a scan grows with the usages (it did: the user's slots
    # were read by scanning every usage on the stand-in, half of its time under load).
    assert await collection_scans(client, counter.commands) == []
    assert usage.code_snapshot is not None and usage.code_snapshot.basis_points == 1000

    # The code changes (deactivated); a replay of r1 still answers it as it was redeemed.
    await catalogue.delete(DeletePromoCode(promo.id))
    counter.reset()
    again = await redemptions.redeem(redeem("TRIPS", "alice", "r1"))
    print(f"RedeemPromoCode replayed: {counter.total} MongoDB round trips {dict(counter.counts)}")
    assert again.id == usage.id and again.code_snapshot == usage.code_snapshot
    assert usage.code_snapshot.active


async def test_a_generated_code_and_the_usage_lists_are_read_through_indexes(
    counted: Counted,
) -> None:
    counter, catalogue, redemptions, _, client = counted
    template = CodeSpec(discount="percentage", basis_points=500, max_uses_per_user=2)
    batch = await catalogue.generate(GeneratePromoCodes("PLAN", 3, 8, template))
    code = batch.codes[0]
    counter.reset()
    await redemptions.redeem(redeem(code, "alice", "plan-1"))
    await redemptions.list_usages(ListPromoCodeUsages(10, "", user_id="alice"))
    usage = await redemptions.redeem(redeem(code, "bob", "plan-2"))
    await redemptions.list_usages(ListPromoCodeUsages(10, "", promo_code_id=usage.promo_code_id))
    assert {"find", "insert", "update"} <= set(counter.counts)
    assert await collection_scans(client, counter.commands) == []


async def test_a_redemption_of_a_campaign_code_costs_nine_round_trips(
    counted: Counted,
) -> None:
    counter, catalogue, redemptions, campaigns, client = counted
    campaign = await campaigns.create(
        CreateCampaign(CampaignSpec(display_name="Trips", max_uses=10, max_uses_per_user=2))
    )
    spec = CodeSpec(
        code="CTRIPS",
        discount="percentage",
        basis_points=1000,
        max_uses_per_user=5,
        campaign_id=campaign.id,
    )
    await catalogue.create(CreatePromoCode(spec))
    await redemptions.redeem(redeem("CTRIPS", "bob", "c-warm-up"))
    counter.reset()
    await redemptions.redeem(redeem("CTRIPS", "alice", "c1"))
    print(f"RedeemPromoCode, campaign code: {counter.total} round trips {dict(counter.counts)}")
    assert counter.total == CAMPAIGN_REDEEM_ROUND_TRIPS, dict(counter.counts)
    assert await collection_scans(client, counter.commands) == []
