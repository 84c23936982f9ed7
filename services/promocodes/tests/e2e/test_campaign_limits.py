"""I1 for campaigns over the wire: a campaign's total uses, uses per user and budget hold across
all its codes, exactly, under real concurrency and with two replicas on one database; Release
gives the campaign's use, budget and the user's campaign slot back; Validate answers the
campaign's reasons and writes nothing (services/promocodes/README.md, "Campaigns")."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import promo_codes_pb2, promo_codes_pb2_grpc, users_pb2_grpc

from .conftest import (
    assert_counters_match_usages,
    create_users,
    eur,
    promocodes_process,
    reason,
    refused,
)

pytestmark = pytest.mark.e2e

pb = promo_codes_pb2
Stub = promo_codes_pb2_grpc.PromoCodeServiceStub
Outcome = pb.PromoCodeUsage | grpc.aio.AioRpcError


@pytest.fixture(scope="module")
def second_replica(
    stack: Stack, users_service: ServiceProcess, promo_db_name: str, promocodes_service: Any
) -> Iterator[ServiceProcess]:
    """A second promocodes process on the same database (after the first one has migrated it)."""
    service = promocodes_process(stack, promo_db_name, users_service.address)
    service.start_and_wait()
    yield service
    service.terminate()


@pytest.fixture(scope="module")
def user_cache() -> list[str]:
    return []


async def two_hundred_users(users: users_pb2_grpc.UserServiceStub, cache: list[str]) -> list[str]:
    if not cache:
        cache.extend(await create_users(users, 200, "camp"))
    return cache


async def campaign_with_codes(
    promo: Stub, tag: str, count: int, template: pb.PromoCode, **limits: Any
) -> tuple[pb.Campaign, list[str]]:
    campaign = await promo.CreateCampaign(
        pb.CreateCampaignRequest(campaign=pb.Campaign(display_name=tag, **limits))
    )
    template.campaign_id = campaign.id
    batch = await promo.GeneratePromoCodes(
        pb.GeneratePromoCodesRequest(prefix=f"{tag}-", count=count, template=template)
    )
    return campaign, list(batch.codes)


async def redeem_spread(stubs: list[Stub], calls: list[tuple[str, str, int, str]]) -> list[Outcome]:
    """Every call at once, alternating between the replicas' stubs."""

    async def one(index: int, code: str, user_id: str, amount: int, rid: str) -> Outcome:
        try:
            return await stubs[index % len(stubs)].RedeemPromoCode(
                pb.RedeemPromoCodeRequest(
                    code=code, user_id=user_id, order_amount=eur(amount), redemption_id=rid
                ),
                timeout=60,
            )
        except grpc.aio.AioRpcError as exc:
            return exc

    return list(await asyncio.gather(*(one(i, *c) for i, c in enumerate(calls))))


def assert_campaign_matches_usages(db: Any, campaign_id: str, codes: list[str]) -> dict[str, Any]:
    """The campaign's counters equal its codes' ACTIVE usages, each code's equal its own, nothing
    is pending anywhere, and no user holds a campaign slot twice."""
    campaign = db.campaigns.find_one({"_id": campaign_id})
    active = list(db.promo_code_usages.find({"campaign_id": campaign_id, "status": "ACTIVE"}))
    assert campaign.get("pending") in ({}, None) and campaign.get("pending_count", 0) == 0
    assert campaign["uses"] == len(active)
    assert campaign["discount_granted"] == sum(u["discount"] for u in active)
    ids = [d["_id"] for d in db.promo_codes.find({"code": {"$in": codes}}, {"_id": 1})]
    assert len(ids) == len(codes)
    for code_id in ids:
        assert_counters_match_usages(db, code_id)
    assert sum(1 for u in active if u["promo_id"] in ids) == len(active)
    per_user = campaign["rules"].get("max_uses_per_user")
    if per_user is not None:
        held = Counter(u["user_id"] for u in active)
        assert max(held.values(), default=0) <= per_user
        slots = Counter((u["user_id"], u["campaign_slot"]) for u in active)
        assert max(slots.values(), default=0) == (1 if active else 0)
        assert all(1 <= u["campaign_slot"] <= per_user for u in active)
    return dict(campaign)


async def test_thousand_redemptions_across_a_hundred_codes_on_two_replicas_grant_exactly_fifty(
    promo: Stub,
    saga: Stub,
    second_replica: ServiceProcess,
    users: users_pb2_grpc.UserServiceStub,
    user_cache: list[str],
    promo_db: Any,
) -> None:
    ids = await two_hundred_users(users, user_cache)
    campaign, codes = await campaign_with_codes(
        promo, "CAP50", 100, pb.PromoCode(fixed_amount=eur(100)), max_uses=50, max_uses_per_user=1
    )
    calls = [(codes[i % 100], ids[i % 200], 1000, f"cap50-{i}") for i in range(1000)]
    random.shuffle(calls)
    async with second_replica.channel(identity="orders") as channel:
        outcomes = await redeem_spread([saga, Stub(channel)], calls)
    granted = [o for o in outcomes if isinstance(o, pb.PromoCodeUsage)]
    refusals = Counter(
        (o.code(), reason(o)) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)
    )
    assert len(granted) == 50, refusals
    assert len({u.user_id for u in granted}) == 50  # no user twice
    assert set(refusals) <= {
        (grpc.StatusCode.FAILED_PRECONDITION, "CAMPAIGN_EXHAUSTED"),
        (grpc.StatusCode.FAILED_PRECONDITION, "CAMPAIGN_PER_USER_LIMIT_REACHED"),
    }
    stored = assert_campaign_matches_usages(promo_db, campaign.id, codes)
    assert (stored["uses"], stored["discount_granted"]) == (50, 50 * 100)
    read = await promo.GetCampaign(pb.GetCampaignRequest(id=campaign.id))
    assert read.uses == 50


async def test_the_campaign_budget_binds_exactly_under_concurrency(
    promo: Stub,
    saga: Stub,
    second_replica: ServiceProcess,
    users: users_pb2_grpc.UserServiceStub,
    user_cache: list[str],
    promo_db: Any,
) -> None:
    ids = await two_hundred_users(users, user_cache)
    budget = 25_013
    campaign, codes = await campaign_with_codes(
        promo,
        "CAPBUDGET",
        100,
        pb.PromoCode(percentage=pb.PercentageDiscount(basis_points=1250)),
        max_uses_per_user=1,
        budget=eur(budget),
    )
    rng = random.Random(14)
    calls = [
        (codes[i % 100], ids[i % 200], rng.randint(100, 20_000), f"capb-{i}") for i in range(400)
    ]
    async with second_replica.channel(identity="orders") as channel:
        outcomes = await redeem_spread([saga, Stub(channel)], calls)
    granted = [o for o in outcomes if isinstance(o, pb.PromoCodeUsage)]
    total = sum(u.discount.amount_minor for u in granted)
    assert total <= budget
    assert len({u.user_id for u in granted}) == len(granted)
    reasons = Counter(reason(o) for o in outcomes if isinstance(o, grpc.aio.AioRpcError))
    assert reasons["CAMPAIGN_BUDGET_EXHAUSTED"] > 0, reasons
    assert set(reasons) <= {"CAMPAIGN_BUDGET_EXHAUSTED", "CAMPAIGN_PER_USER_LIMIT_REACHED"}
    # Exact: nothing was granted or released after a refusal's moment other than grants, so a
    # budget refusal is right only when its discount did not fit even in what is left at the end.
    left = budget - total
    for (_, _, amount, _), outcome in zip(calls, outcomes, strict=True):
        if isinstance(outcome, grpc.aio.AioRpcError) and reason(outcome) == (
            "CAMPAIGN_BUDGET_EXHAUSTED"
        ):
            assert amount * 1250 // 10000 > left, (amount, left)
    stored = assert_campaign_matches_usages(promo_db, campaign.id, codes)
    assert stored["discount_granted"] == total


def campaign_state(promo_db: Any, campaign_id: str) -> dict[str, Any]:
    """The campaign's document without the outbox relay's two fields: the relay publishes and
    clears the campaign's pending events whenever it passes, a writer of its own."""
    document = promo_db.campaigns.find_one({"_id": campaign_id})
    return {k: v for k, v in document.items() if k not in ("outbox", "outbox_pending")}


async def test_release_gives_back_the_campaign_use_budget_and_slot_and_validate_writes_nothing(
    promo: Stub,
    saga: Stub,
    users: users_pb2_grpc.UserServiceStub,
    user_cache: list[str],
    promo_db: Any,
) -> None:
    alice, bob, carol = (await two_hundred_users(users, user_cache))[:3]
    campaign, codes = await campaign_with_codes(
        promo,
        "CAPREL",
        3,
        pb.PromoCode(fixed_amount=eur(300)),
        max_uses=2,
        max_uses_per_user=1,
        budget=eur(600),
    )

    def redeem(code: str, user_id: str, rid: str) -> Any:
        return saga.RedeemPromoCode(
            pb.RedeemPromoCodeRequest(
                code=code, user_id=user_id, order_amount=eur(1000), redemption_id=rid
            )
        )

    async def quote(code: str, user_id: str) -> tuple[bool, str]:
        answer = await promo.ValidatePromoCode(
            pb.ValidatePromoCodeRequest(code=code, user_id=user_id, order_amount=eur(1000))
        )
        return answer.applicable, answer.reason

    await redeem(codes[0], alice, "rel-a1")
    # Alice's campaign slot is taken: another code of the campaign is refused for her.
    assert await quote(codes[1], alice) == (False, "CAMPAIGN_PER_USER_LIMIT_REACHED")
    error = await refused(redeem(codes[1], alice, "rel-a2"))
    assert reason(error) == "CAMPAIGN_PER_USER_LIMIT_REACHED"
    await redeem(codes[1], bob, "rel-b1")
    before = campaign_state(promo_db, campaign.id)
    assert await quote(codes[2], carol) == (False, "CAMPAIGN_EXHAUSTED")
    assert reason(await refused(redeem(codes[2], carol, "rel-c1"))) == "CAMPAIGN_EXHAUSTED"
    assert campaign_state(promo_db, campaign.id) == before  # refusals write nothing

    await saga.ReleasePromoCode(pb.ReleasePromoCodeRequest(redemption_id="rel-a1", reason="x"))
    released = promo_db.campaigns.find_one({"_id": campaign.id})
    assert (released["uses"], released["discount_granted"]) == (1, 300)
    # The use, the budget and Alice's slot are back: she may redeem another code of it.
    assert await quote(codes[2], alice) == (True, "")
    await redeem(codes[2], alice, "rel-a3")
    assert_campaign_matches_usages(promo_db, campaign.id, codes)
    # A repeated Release gives back nothing more.
    await saga.ReleasePromoCode(pb.ReleasePromoCodeRequest(redemption_id="rel-a1", reason="x"))
    stored = assert_campaign_matches_usages(promo_db, campaign.id, codes)
    assert (stored["uses"], stored["discount_granted"]) == (2, 600)


async def test_the_campaign_window_refuses_with_its_own_reasons(
    promo: Stub, saga: Stub, users: users_pb2_grpc.UserServiceStub, user_cache: list[str]
) -> None:
    alice = (await two_hundred_users(users, user_cache))[0]
    _, soon = await campaign_with_codes(
        promo, "CAPSOON", 1, pb.PromoCode(fixed_amount=eur(1)), valid_from=Timestamp(seconds=4**16)
    )
    _, gone = await campaign_with_codes(
        promo, "CAPGONE", 1, pb.PromoCode(fixed_amount=eur(1)), valid_until=Timestamp(seconds=10**9)
    )
    for code, expected in ((soon[0], "CAMPAIGN_NOT_STARTED"), (gone[0], "CAMPAIGN_EXPIRED")):
        answer = await promo.ValidatePromoCode(
            pb.ValidatePromoCodeRequest(code=code, user_id=alice, order_amount=eur(100))
        )
        assert (answer.applicable, answer.reason) == (False, expected)
        error = await refused(
            saga.RedeemPromoCode(
                pb.RedeemPromoCodeRequest(
                    code=code, user_id=alice, order_amount=eur(100), redemption_id=f"w-{expected}"
                )
            )
        )
        assert reason(error) == expected
