"""Each change is written with its event and the outbox relay puts it on the promo-code stream."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from google.protobuf import field_mask_pb2
from redis.asyncio import Redis

from devstack.stack import Stack
from promo.v1 import common_pb2, events_pb2, promo_codes_pb2, promo_codes_pb2_grpc, users_pb2_grpc
from promo_libs.bus import ENVELOPE_FIELD
from promo_libs.events import PROMO_CODES_STREAM

from .conftest import create_users

pytestmark = pytest.mark.e2e

pb = promo_codes_pb2


async def events_of(
    redis: Redis, aggregate_ids: set[str], count: int, within: float = 15.0
) -> list[events_pb2.EventEnvelope]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        entries = await redis.xrange(PROMO_CODES_STREAM)
        mine = [
            envelope
            for _, fields in entries
            if (
                envelope := events_pb2.EventEnvelope.FromString(fields[ENVELOPE_FIELD])
            ).aggregate_id
            in aggregate_ids
        ]
        if len(mine) >= count or loop.time() > deadline:
            return mine
        await asyncio.sleep(0.05)


async def test_code_and_redemption_events_reach_the_stream(
    promo: promo_codes_pb2_grpc.PromoCodeServiceStub,
    saga: promo_codes_pb2_grpc.PromoCodeServiceStub,
    users: users_pb2_grpc.UserServiceStub,
    stack: Stack,
) -> None:
    [user_id] = await create_users(users, 1, f"events-{uuid.uuid4().hex[:8]}")
    eur = common_pb2.Money(currency_code="EUR", amount_minor=5000)
    code = await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code=f"EV-{uuid.uuid4().hex[:8]}",
                percentage=pb.PercentageDiscount(basis_points=1000),
            )
        )
    )
    redemption_id = uuid.uuid4().hex
    await saga.RedeemPromoCode(
        pb.RedeemPromoCodeRequest(
            code=code.code, user_id=user_id, order_amount=eur, redemption_id=redemption_id
        )
    )
    await saga.ReleasePromoCode(
        pb.ReleasePromoCodeRequest(redemption_id=redemption_id, reason="order cancelled")
    )
    redis = Redis(host=stack.redis_host, port=stack.redis_port, password=stack.redis_password)
    try:
        envelopes = await events_of(redis, {code.id, redemption_id}, 3)
    finally:
        await redis.aclose()
    # Order is promised per aggregate (the code's and the usage's events come from two relays).
    code_kinds = [e.WhichOneof("payload") for e in envelopes if e.aggregate_id == code.id]
    usage_events = [e for e in envelopes if e.aggregate_id == redemption_id]
    assert code_kinds == ["promo_code_created"]
    assert [e.WhichOneof("payload") for e in usage_events] == [
        "promo_code_redeemed",
        "promo_code_released",
    ]
    redeemed = usage_events[0].promo_code_redeemed
    assert (redeemed.usage.discount_minor, redeemed.usage.user_id) == (500, user_id)
    assert (redeemed.promo_code.code, redeemed.user.id) == (code.code, user_id)
    assert len({e.event_id for e in envelopes}) == 3


async def test_events_of_a_campaign_code_carry_the_campaign(
    promo: promo_codes_pb2_grpc.PromoCodeServiceStub,
    saga: promo_codes_pb2_grpc.PromoCodeServiceStub,
    users: users_pb2_grpc.UserServiceStub,
    stack: Stack,
) -> None:
    [user_id] = await create_users(users, 1, f"campaign-ev-{uuid.uuid4().hex[:8]}")
    campaign = await promo.CreateCampaign(
        pb.CreateCampaignRequest(campaign=pb.Campaign(display_name="Events"))
    )
    code = await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code=f"CEV-{uuid.uuid4().hex[:8]}",
                percentage=pb.PercentageDiscount(basis_points=1000),
                campaign_id=campaign.id,
            )
        )
    )
    redemption_id = uuid.uuid4().hex
    usage = await saga.RedeemPromoCode(
        pb.RedeemPromoCodeRequest(
            code=code.code,
            user_id=user_id,
            order_amount=common_pb2.Money(currency_code="EUR", amount_minor=5000),
            redemption_id=redemption_id,
        )
    )
    assert usage.promo_code.campaign_id == campaign.id
    redis = Redis(host=stack.redis_host, port=stack.redis_port, password=stack.redis_password)
    try:
        envelopes = await events_of(redis, {code.id, redemption_id}, 2)
    finally:
        await redis.aclose()
    # The code's and the usage's events come from two relays (one per collection): the stream
    # holds them in either order.
    by_payload = {envelope.WhichOneof("payload"): envelope for envelope in envelopes}
    assert {"promo_code_created", "promo_code_redeemed"} <= by_payload.keys()
    created = by_payload["promo_code_created"].promo_code_created
    redeemed = by_payload["promo_code_redeemed"].promo_code_redeemed
    assert created.promo_code.campaign_id == redeemed.promo_code.campaign_id == campaign.id


async def test_campaign_events_carry_its_rules_and_redemptions_publish_none(
    promo: promo_codes_pb2_grpc.PromoCodeServiceStub,
    saga: promo_codes_pb2_grpc.PromoCodeServiceStub,
    users: users_pb2_grpc.UserServiceStub,
    stack: Stack,
    promo_db: Any,
) -> None:
    alice, bob = await create_users(users, 2, f"campaign-rules-{uuid.uuid4().hex[:8]}")
    campaign = await promo.CreateCampaign(
        pb.CreateCampaignRequest(
            campaign=pb.Campaign(display_name="Spring", max_uses=10, max_uses_per_user=1)
        )
    )
    updated = await promo.UpdateCampaign(
        pb.UpdateCampaignRequest(
            campaign=pb.Campaign(
                id=campaign.id,
                description="more of it",
                max_uses=20,
                budget=common_pb2.Money(currency_code="EUR", amount_minor=100_000),
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["description", "max_uses", "budget"]),
        )
    )
    in_campaign = await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code=f"CR-{uuid.uuid4().hex[:8]}",
                fixed_amount=common_pb2.Money(currency_code="EUR", amount_minor=700),
                campaign_id=campaign.id,
            )
        )
    )
    solo = await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code=f"SOLO-{uuid.uuid4().hex[:8]}",
                fixed_amount=common_pb2.Money(currency_code="EUR", amount_minor=300),
            )
        )
    )
    rids = {name: uuid.uuid4().hex for name in ("alice", "bob", "solo")}
    for code, user, rid in (
        (in_campaign.code, alice, rids["alice"]),
        (in_campaign.code, bob, rids["bob"]),
        (solo.code, alice, rids["solo"]),
    ):
        await saga.RedeemPromoCode(
            pb.RedeemPromoCodeRequest(
                code=code,
                user_id=user,
                order_amount=common_pb2.Money(currency_code="EUR", amount_minor=5000),
                redemption_id=rid,
            )
        )
    await saga.ReleasePromoCode(pb.ReleasePromoCodeRequest(redemption_id=rids["bob"], reason="x"))
    # The redemptions and the release counted on the campaign's document; once its relay has
    # nothing left there, every campaign event there will ever be for them is on the stream.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        stored = promo_db.campaigns.find_one({"_id": campaign.id})
        if (stored["uses"], stored["outbox"], bool(stored["outbox_pending"])) == (1, {}, False):
            break
        assert loop.time() < deadline, stored
        await asyncio.sleep(0.05)
    redis = Redis(host=stack.redis_host, port=stack.redis_port, password=stack.redis_password)
    try:
        envelopes = await events_of(redis, {campaign.id, *rids.values()}, 6)
    finally:
        await redis.aclose()
    campaign_events = [e for e in envelopes if e.aggregate_id == campaign.id]
    assert [
        (e.WhichOneof("payload"), e.aggregate_type, e.aggregate_version, e.producer)
        for e in campaign_events
    ] == [
        ("campaign_created", "campaign", 1, "promocodes"),
        ("campaign_updated", "campaign", 2, "promocodes"),
    ]
    created = campaign_events[0].campaign_created.campaign
    assert (created.id, created.display_name, created.max_uses, created.max_uses_per_user) == (
        campaign.id,
        "Spring",
        10,
        1,
    )
    assert not created.HasField("budget_minor") and created.currency_code == ""
    assert created.create_time == campaign.create_time
    change = campaign_events[1].campaign_updated
    assert list(change.changed_fields) == ["budget", "description", "max_uses"]
    after = change.campaign
    assert (after.description, after.max_uses, after.budget_minor, after.currency_code) == (
        "more of it",
        20,
        100_000,
        "EUR",
    )
    assert after.update_time == updated.update_time and after.create_time == campaign.create_time
    usage_events = {
        (e.aggregate_id, e.WhichOneof("payload")): e
        for e in envelopes
        if e.aggregate_id in rids.values()
    }
    assert len(usage_events) == 4
    for (rid, kind), envelope in usage_events.items():
        usage = getattr(envelope, kind).usage
        expected = "" if rid == rids["solo"] else campaign.id
        assert usage.campaign_id == expected, (rid, kind)
        assert getattr(envelope, kind).promo_code.campaign_id == expected
