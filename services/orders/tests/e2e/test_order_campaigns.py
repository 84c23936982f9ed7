"""Orders with codes of one campaign across the three running services: the campaign's limits
hold over concurrent orders, a refusal rejects the order with the campaign's reason, and
cancelling an order gives the campaign's use, budget and the user's campaign slot back."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from redis.asyncio import Redis

from devstack.stack import Stack
from promo.v1 import events_pb2, orders_pb2, promo_codes_pb2
from promo_libs.bus import ENVELOPE_FIELD
from promo_libs.events import ORDERS_STREAM, PROMO_CODES_STREAM

from .conftest import (
    Clients,
    Platform,
    definite,
    eur,
    eventually,
    new_code,
    new_user,
    order_request,
    start_platform,
)

pytestmark = pytest.mark.e2e

pb = promo_codes_pb2


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    running = start_platform(
        stack,
        "campaigns",
        orders_env={
            "PROMOCODES_TIMEOUT_SECONDS": "30",
            "USERS_TIMEOUT_SECONDS": "10",
            "SWEEP_STALE_SECONDS": "40",
        },
        promocodes_env={"USERS_TIMEOUT_SECONDS": "10"},
    )
    yield running
    running.stop()


async def campaign(clients: Clients, **limits: object) -> pb.Campaign:
    return await clients.codes.CreateCampaign(
        pb.CreateCampaignRequest(
            campaign=pb.Campaign(
                display_name=f"C{uuid.uuid4().hex[:6]}",
                **limits,  # type: ignore[arg-type]
            )
        )
    )


async def test_concurrent_orders_get_exactly_the_campaign_uses_one_per_user(
    clients: Clients,
) -> None:
    spring = await campaign(clients, max_uses=6, max_uses_per_user=1)
    codes = [await new_code(clients, campaign_id=spring.id) for _ in range(4)]
    users = [await new_user(clients) for _ in range(12)]
    requests = [order_request(users[i % 12].id, codes[i % 4].code) for i in range(48)]
    outcomes = await asyncio.gather(*(definite(clients, r) for r in requests))
    confirmed = [oid for verdict, oid in outcomes if verdict == "CONFIRMED"]
    assert len(confirmed) == 6, Counter(v for v, _ in outcomes)
    assert {v for v, _ in outcomes} <= {
        "CONFIRMED",
        "CAMPAIGN_EXHAUSTED",
        "CAMPAIGN_PER_USER_LIMIT_REACHED",
    }
    owners = Counter(
        r.user_id for r, (v, _) in zip(requests, outcomes, strict=True) if v == "CONFIRMED"
    )
    assert max(owners.values()) == 1  # no user twice
    read = await clients.codes.GetCampaign(pb.GetCampaignRequest(id=spring.id))
    assert read.uses == 6  # (no budget, so no currency: discount_granted is not answered)


async def test_cancelling_an_order_gives_the_campaign_use_budget_and_slot_back(
    clients: Clients,
) -> None:
    summer = await campaign(clients, max_uses=1, max_uses_per_user=1, budget=eur(500))
    first, second = [await new_code(clients, campaign_id=summer.id) for _ in range(2)]
    alice, bob = await new_user(clients), await new_user(clients)
    order = await clients.orders.CreateOrder(order_request(alice.id, first.code))
    assert order.status == orders_pb2.ORDER_STATUS_CONFIRMED and order.discount == eur(500)
    verdict, _ = await definite(clients, order_request(bob.id, second.code))
    assert verdict == "CAMPAIGN_EXHAUSTED"
    await clients.orders.CancelOrder(orders_pb2.CancelOrderRequest(id=order.id, reason="no"))
    read = await clients.codes.GetCampaign(pb.GetCampaignRequest(id=summer.id))
    assert (read.uses, read.discount_granted.amount_minor) == (0, 0)
    # The use, the budget and Alice's campaign slot are back: her order with the other code.
    verdict, _ = await definite(clients, order_request(alice.id, second.code))
    assert verdict == "CONFIRMED"
    read = await clients.codes.GetCampaign(pb.GetCampaignRequest(id=summer.id))
    assert (read.uses, read.discount_granted.amount_minor) == (1, 500)


async def test_the_order_events_and_the_usage_events_name_the_campaign_of_the_code(
    clients: Clients, stack: Stack
) -> None:
    autumn = await campaign(clients, max_uses=10)
    in_campaign = await new_code(clients, campaign_id=autumn.id)
    solo = await new_code(clients)
    alice = await new_user(clients)
    with_campaign = await clients.orders.CreateOrder(order_request(alice.id, in_campaign.code))
    without = await clients.orders.CreateOrder(order_request(alice.id, solo.code))
    no_code = await clients.orders.CreateOrder(order_request(alice.id))
    for order in (with_campaign, without):
        assert order.status == orders_pb2.ORDER_STATUS_CONFIRMED
        await clients.orders.CancelOrder(orders_pb2.CancelOrderRequest(id=order.id, reason="no"))
    orders = {with_campaign.id, without.id, no_code.id}
    redis = Redis(host=stack.redis_host, port=stack.redis_port, password=stack.redis_password)

    async def on(stream: str, ids: set[str], count: int) -> list[events_pb2.EventEnvelope] | None:
        entries = await redis.xrange(stream)
        envelopes = [events_pb2.EventEnvelope.FromString(f[ENVELOPE_FIELD]) for _, f in entries]
        mine = [e for e in envelopes if e.aggregate_id in ids]
        return mine if len(mine) >= count else None

    try:
        # created + confirmed (+ cancelled) per order; redeemed + released per usage.
        order_events = await eventually(
            lambda: on(ORDERS_STREAM, orders, 8), 20, "the orders' events"
        )
        usage_events = await eventually(
            lambda: on(PROMO_CODES_STREAM, {with_campaign.id, without.id}, 4), 20, "usages"
        )
    finally:
        await redis.aclose()
    expected = {with_campaign.id: autumn.id, without.id: "", no_code.id: ""}
    seen = set()
    for envelope in order_events:
        kind = envelope.WhichOneof("payload")
        payload = getattr(envelope, kind)
        seen.add((envelope.aggregate_id, kind))
        if kind == "order_created":
            assert payload.order.campaign_id == ""  # nothing applied yet
            continue
        assert payload.order.campaign_id == expected[envelope.aggregate_id], (kind, envelope)
        if kind in ("order_confirmed", "order_cancelled") and payload.HasField("promo_code"):
            assert payload.promo_code.campaign_id == expected[envelope.aggregate_id]
    assert {
        (with_campaign.id, "order_confirmed"),
        (with_campaign.id, "order_cancelled"),
        (without.id, "order_cancelled"),
        (no_code.id, "order_confirmed"),
    } <= seen
    assert sorted(
        (
            e.aggregate_id,
            e.WhichOneof("payload"),
            getattr(e, e.WhichOneof("payload")).usage.campaign_id,
        )
        for e in usage_events
    ) == sorted(
        (order_id, kind, expected[order_id])
        for order_id in (with_campaign.id, without.id)
        for kind in ("promo_code_redeemed", "promo_code_released")
    )
