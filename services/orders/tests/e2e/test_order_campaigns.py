"""Orders with codes of one campaign across the three running services: the campaign's limits
hold over concurrent orders, a refusal rejects the order with the campaign's reason, and
cancelling an order gives the campaign's use, budget and the user's campaign slot back."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from promo.v1 import orders_pb2, promo_codes_pb2

from .conftest import (
    Clients,
    Platform,
    definite,
    eur,
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
