"""Every crash window of a campaign code's redemption and release, cut on the real MongoDB
adapters, then settled by the sweep (services/promocodes/README.md, "Campaigns").

A request "crashes" by a BaseException raised just before the step named (so nothing of ours
catches it, as nothing runs after a kill -9): what it wrote before that step stays, exactly as
a killed replica leaves it. The sweep then settles code and campaign by one verdict; the
counters of both equal the ACTIVE usages and nothing is left pending. A crashed request retried
with the same id afterwards answers the stored outcome or redeems afresh, never twice.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs import errors
from promo_libs.carts import MoneyValue
from promocodes_service.adapters.event_codec import (
    encode_campaign_events,
    encode_code_events,
    encode_usage_events,
)
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
from promocodes_service.domain.ports import VersionConflict
from promocodes_service.service_layer.campaigns import Campaigns
from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_service.service_layer.redemption import Redemptions
from promocodes_service.service_layer.sweep import Sweeper
from promocodes_testing.memory import FakeUserDirectory

pytestmark = pytest.mark.integration

Db = AsyncDatabase[dict[str, Any]]


class Crash(BaseException):
    """The process dies here."""


@dataclass
class Rig:
    db: Db
    codes: MongoPromoCodeRepository
    campaigns: MongoCampaignRepository
    usages: MongoUsageRepository
    sweeper: Sweeper
    catalogue: Catalogue
    redemptions: Redemptions
    admin: Campaigns


def clock() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@pytest_asyncio.fixture(loop_scope="session")
async def rig(db: Db) -> AsyncIterator[Rig]:
    codes = MongoPromoCodeRepository(db, encode_code_events)
    campaigns = MongoCampaignRepository(db, encode_campaign_events)
    usages = MongoUsageRepository(db, encode_usage_events)
    users = FakeUserDirectory()
    for name in ("alice", "bob"):
        users.add(name)
    ids = itertools.count(1)

    def new_id() -> str:
        return f"id{next(ids):06d}"

    sweeper = Sweeper(codes, usages, clock, timedelta(seconds=30), campaigns)
    yield Rig(
        db,
        codes,
        campaigns,
        usages,
        sweeper,
        Catalogue(codes, campaigns, new_id, clock),
        Redemptions(codes, usages, users, sweeper, new_id, clock, campaigns=campaigns),
        Campaigns(campaigns, new_id, clock),
    )


async def campaign_code(rig: Rig, text: str) -> tuple[str, str]:
    """A campaign of 1 use per user, 5 uses, 10.00 EUR budget, and a code of it (3.00 off)."""
    campaign = await rig.admin.create(
        CreateCampaign(
            CampaignSpec(
                display_name=text,
                max_uses=5,
                max_uses_per_user=1,
                budget=MoneyValue("EUR", 1000),
            )
        )
    )
    promo = await rig.catalogue.create(
        CreatePromoCode(
            CodeSpec(
                code=text,
                discount="fixed_amount",
                fixed_amount=MoneyValue("EUR", 300),
                campaign_id=campaign.id,
            )
        )
    )
    return campaign.id, promo.id


def redeem(code: str, rid: str, user: str = "alice") -> RedeemPromoCode:
    return RedeemPromoCode(code, user, MoneyValue("EUR", 10_000), rid)


def crash_before(target: Any, method: str) -> Callable[[], None]:
    """Makes `target.method` kill the request before it runs; returns the undo."""
    real = getattr(target, method)

    async def dead(*args: Any, **kwargs: Any) -> Any:
        raise Crash(method)

    setattr(target, method, dead)
    return lambda: setattr(target, method, real)


async def crashed(call: Awaitable[Any]) -> None:
    with pytest.raises(Crash):
        await call


async def state(rig: Rig, campaign_id: str, code_id: str) -> dict[str, Any]:
    """Counters of both documents, their reservations, and the code's ACTIVE usages."""
    campaign = await rig.db.campaigns.find_one({"_id": campaign_id})
    code = await rig.db.promo_codes.find_one({"_id": code_id})
    assert campaign is not None and code is not None
    active = [
        u async for u in rig.db.promo_code_usages.find({"promo_id": code_id, "status": "ACTIVE"})
    ]
    return {
        "campaign": (campaign["uses"], campaign["discount_granted"]),
        "code": (code["uses"], code["discount_granted"]),
        "active": len(active),
        "pending": (len(campaign.get("pending") or {}), len(code.get("pending") or {})),
        "pending_count": (campaign.get("pending_count", 0), code.get("pending_count", 0)),
    }


def settled(uses: int) -> dict[str, Any]:
    return {
        "campaign": (uses, 300 * uses),
        "code": (uses, 300 * uses),
        "active": uses,
        "pending": (0, 0),
        "pending_count": (0, 0),
    }


# Redeem's steps: reserve campaign -> reserve code -> write usage -> settle code -> settle
# campaign. (the method the crash cuts before, the window's name, uses once swept)
REDEEM_WINDOWS = [
    ("codes", "reserve", "after reserve campaign", 0),
    ("usages", "claim", "after reserve code", 0),
    ("codes", "settle", "after write usage", 1),
    ("campaigns", "settle", "after settle code", 1),
]


@pytest.mark.parametrize(("repo", "method", "window", "uses"), REDEEM_WINDOWS)
async def test_a_redeem_cut_in_each_window_is_settled_by_the_sweep(
    rig: Rig, repo: str, method: str, window: str, uses: int
) -> None:
    text = "W" + method.upper() + repo.upper()
    campaign_id, code_id = await campaign_code(rig, text)
    undo = crash_before(getattr(rig, repo), method)
    try:
        await crashed(rig.redemptions.redeem(redeem(text, "r1")))
    finally:
        undo()
    left = await state(rig, campaign_id, code_id)
    assert left["pending"] != (0, 0), window  # the crash left a reservation behind

    report = await rig.sweeper.sweep(timedelta(0))
    assert report.settled >= 1
    assert await state(rig, campaign_id, code_id) == settled(uses), window

    # The caller's retry with the same id: the stored usage, or a fresh redemption; once.
    again = await rig.redemptions.redeem(redeem(text, "r1"))
    assert again.id == "r1"
    assert await state(rig, campaign_id, code_id) == settled(1), window
    # The user's one campaign slot is held: a second id is refused by the campaign.
    with pytest.raises(errors.FailedPrecondition) as refused:
        await rig.redemptions.redeem(redeem(text, "r2"))
    assert refused.value.reason == "CAMPAIGN_PER_USER_LIMIT_REACHED"
    assert await state(rig, campaign_id, code_id) == settled(1), window


async def test_a_sweep_between_reserve_campaign_and_reserve_code_fences_the_live_request(
    rig: Rig,
) -> None:
    """The sweep decides while the request is still alive (it was only slow): it compensates the
    campaign; the request's code reservation that follows is fenced at write usage and rolled
    back by the next sweep. Nothing is granted twice, nothing stays pending."""
    campaign_id, code_id = await campaign_code(rig, "WLIVE")
    real_reserve = rig.codes.reserve

    async def slow_reserve(*args: Any) -> bool:
        await rig.sweeper.sweep(timedelta(0))  # the campaign's reservation looks abandoned
        return await real_reserve(*args)

    rig.codes.reserve = slow_reserve  # type: ignore[method-assign]
    try:
        with pytest.raises(errors.Aborted):
            await rig.redemptions.redeem(redeem("WLIVE", "r1"))
    finally:
        rig.codes.reserve = real_reserve  # type: ignore[method-assign]
    assert (await state(rig, campaign_id, code_id))["campaign"] == (0, 0)
    await rig.sweeper.sweep(timedelta(0))
    assert await state(rig, campaign_id, code_id) == settled(0)
    assert (await rig.redemptions.redeem(redeem("WLIVE", "r1"))).id == "r1"
    assert await state(rig, campaign_id, code_id) == settled(1)


# Release's steps: reserve release on the campaign -> on the code -> usage RELEASED -> give
# back on the code -> on the campaign. (the method the crash cuts before, the window, uses after)
RELEASE_WINDOWS = [
    ("codes", "begin_release", "after the campaign's release reservation", 1),
    ("usages", "release", "after both release reservations", 1),
    ("codes", "settle", "after the usage is RELEASED", 0),
    ("campaigns", "settle", "after the code gave back", 0),
]


@pytest.mark.parametrize(("repo", "method", "window", "uses"), RELEASE_WINDOWS)
async def test_a_release_cut_in_each_window_is_settled_by_the_sweep(
    rig: Rig, repo: str, method: str, window: str, uses: int
) -> None:
    text = "R" + method.upper().replace("_", "") + repo.upper()
    campaign_id, code_id = await campaign_code(rig, text)
    await rig.redemptions.redeem(redeem(text, "r1"))
    undo = crash_before(getattr(rig, repo), method)
    try:
        await crashed(rig.redemptions.release(ReleasePromoCode("r1", "cancelled")))
    finally:
        undo()
    assert (await state(rig, campaign_id, code_id))["pending"] != (0, 0), window
    await rig.sweeper.sweep(timedelta(0))
    assert await state(rig, campaign_id, code_id) == settled(uses), window

    # The retried Release completes (or answers the release done); the slot is free again.
    released = await rig.redemptions.release(ReleasePromoCode("r1", "cancelled"))
    assert released.status == "RELEASED"
    assert await state(rig, campaign_id, code_id) == settled(0), window
    assert (await rig.redemptions.redeem(redeem(text, "r2"))).id == "r2"
    assert await state(rig, campaign_id, code_id) == settled(1), window


async def test_a_per_user_limit_is_not_set_over_a_redemption_that_lands_meanwhile(
    rig: Rig,
) -> None:
    """UpdateCampaign read the campaign unused; a redemption (without a campaign slot: there was
    no per-user limit) lands before its write: the conditional write refuses, and the retried
    update sees the use and refuses with UPDATE_NOT_ALLOWED naming the field."""
    campaign = await rig.admin.create(CreateCampaign(CampaignSpec(display_name="Open")))
    await rig.catalogue.create(
        CreatePromoCode(
            CodeSpec(
                code="OPEN-1",
                discount="fixed_amount",
                fixed_amount=MoneyValue("EUR", 100),
                campaign_id=campaign.id,
            )
        )
    )
    read = await rig.campaigns.get(campaign.id)
    assert read is not None and read.redeemed_total == 0
    await rig.redemptions.redeem(redeem("OPEN-1", "r1"))
    expected = read.version
    assert read.requires_unused(dataclasses.replace(read.rules, max_uses_per_user=1))
    read.change_rules(dataclasses.replace(read.rules, max_uses_per_user=1), clock())
    with pytest.raises(VersionConflict):
        await rig.campaigns.save(read, expected, require_unused=True)
    with pytest.raises(errors.FailedPrecondition) as refused:
        await rig.admin.update(
            UpdateCampaign(
                campaign.id, frozenset({"max_uses_per_user"}), CampaignSpec(max_uses_per_user=1)
            )
        )
    assert refused.value.reason == "UPDATE_NOT_ALLOWED"
    assert refused.value.metadata["field"] == "campaign.max_uses_per_user"
    stored = await rig.campaigns.get(campaign.id)
    assert stored is not None and stored.rules.max_uses_per_user is None
