"""Campaign use cases and rules, with in-memory fakes."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

import pytest

from promo.v1 import events_pb2
from promo_libs import errors
from promo_libs.carts import MoneyValue
from promocodes_service.adapters.event_codec import encode_campaign_events
from promocodes_service.domain.campaign import Campaign, CampaignRules
from promocodes_service.domain.commands import (
    CampaignSpec,
    CodeSpec,
    CreateCampaign,
    CreatePromoCode,
    GeneratePromoCodes,
    ListCampaigns,
    UpdateCampaign,
    UpdatePromoCode,
)
from promocodes_service.domain.events import CampaignCreated, CampaignUpdated
from promocodes_service.domain.model import UpdateNotAllowed
from promocodes_service.service_layer.campaigns import Campaigns
from promocodes_service.service_layer.catalogue import Catalogue
from promocodes_testing.memory import InMemoryCampaignRepository, InMemoryPromoCodeRepository

from .conftest import Clock

pytestmark = pytest.mark.unit


@dataclasses.dataclass
class Setup:
    repo: InMemoryCampaignRepository
    codes: InMemoryPromoCodeRepository
    clock: Clock
    campaigns: Campaigns
    catalogue: Catalogue


@pytest.fixture
def setup() -> Setup:
    ids = itertools.count(1)

    def new_id() -> str:
        return f"id{next(ids):06d}"

    repo, codes, clock = InMemoryCampaignRepository(), InMemoryPromoCodeRepository(), Clock()
    return Setup(
        repo, codes, clock, Campaigns(repo, new_id, clock), Catalogue(codes, repo, new_id, clock)
    )


def spring(**kw: object) -> CampaignSpec:
    return CampaignSpec(display_name="Spring", **kw)  # type: ignore[arg-type]


def pct(code: str, **kw: object) -> CodeSpec:
    return CodeSpec(code=code, discount="percentage", basis_points=1000, **kw)  # type: ignore[arg-type]


def violations_of(caught: pytest.ExceptionInfo[errors.InvalidArgument]) -> set[str]:
    return {v.field for v in caught.value.violations}


async def test_create_get_and_list(setup: Setup) -> None:
    made = [
        await setup.campaigns.create(
            CreateCampaign(spring(max_uses=50, budget=MoneyValue("EUR", 10_000)))
        )
        for _ in range(3)
    ]
    got = await setup.campaigns.get(made[0].id)
    assert got.rules == made[0].rules
    assert got.rules.max_uses == 50 and got.rules.budget == 10_000 and got.rules.currency == "EUR"
    first = await setup.campaigns.list(ListCampaigns(2, ""))
    assert [c.id for c in first.campaigns] == [made[0].id, made[1].id] and first.next_page_token
    rest = await setup.campaigns.list(ListCampaigns(2, first.next_page_token))
    assert [c.id for c in rest.campaigns] == [made[2].id] and not rest.next_page_token


async def test_bad_input_names_every_field_and_writes_nothing(setup: Setup) -> None:
    now = setup.clock()
    bad = CampaignSpec(
        display_name=" ",
        description="x" * 1001,
        max_uses=0,
        max_uses_per_user=-1,
        budget=MoneyValue("eur", 0),
        valid_from=now,
        valid_until=now - timedelta(days=1),
    )
    with pytest.raises(errors.InvalidArgument) as caught:
        await setup.campaigns.create(CreateCampaign(bad))
    assert violations_of(caught) == {
        "campaign.display_name",
        "campaign.description",
        "campaign.max_uses",
        "campaign.max_uses_per_user",
        "campaign.budget.currency_code",
        "campaign.budget.amount_minor",
        "campaign.valid_until",
    }
    assert not setup.repo.items


async def test_get_unknown_campaign(setup: Setup) -> None:
    with pytest.raises(errors.NotFound) as caught:
        await setup.campaigns.get("nope")
    assert caught.value.reason == "CAMPAIGN_NOT_FOUND"


async def test_update_changes_only_the_masked_fields(setup: Setup) -> None:
    made = await setup.campaigns.create(CreateCampaign(spring(max_uses=50, max_uses_per_user=1)))
    setup.clock.advance(5)
    updated = await setup.campaigns.update(
        UpdateCampaign(made.id, frozenset({"max_uses", "display_name"}), CampaignSpec("Summer"))
    )
    assert updated.rules.display_name == "Summer"
    assert updated.rules.max_uses is None  # unset in the request: the limit is removed
    assert updated.rules.max_uses_per_user == 1
    assert updated.updated_at == setup.clock() and updated.version == 2
    assert (await setup.campaigns.get(made.id)).rules == updated.rules


async def test_create_and_update_record_their_events_with_the_rules_and_versions(
    setup: Setup,
) -> None:
    made = await setup.campaigns.create(
        CreateCampaign(spring(max_uses=50, budget=MoneyValue("EUR", 10_000)))
    )
    setup.clock.advance(5)
    # display_name is named but unchanged: only what really changed is reported.
    await setup.campaigns.update(
        UpdateCampaign(
            made.id,
            frozenset({"display_name", "max_uses", "budget"}),
            spring(max_uses=60, budget=MoneyValue("USD", 5_000)),
        )
    )
    # An update that changes nothing writes nothing and records nothing.
    await setup.campaigns.update(UpdateCampaign(made.id, frozenset({"display_name"}), spring()))
    [(created, v1), (updated, v2)] = setup.repo.published
    assert isinstance(created, CampaignCreated) and isinstance(updated, CampaignUpdated)
    assert (v1, v2) == (1, 2)
    assert created.campaign.id == updated.campaign.id == made.id
    assert (created.campaign.max_uses, created.campaign.budget_minor) == (50, 10_000)
    assert created.campaign.currency == "EUR" and created.occurred_at == made.created_at
    assert updated.changed_fields == ("budget", "max_uses")
    snap = updated.campaign
    assert (snap.max_uses, snap.budget_minor, snap.currency) == (60, 5_000, "USD")
    assert snap.updated_at == updated.occurred_at == setup.clock()
    assert snap.created_at == made.created_at


async def test_a_refused_update_records_no_event(setup: Setup) -> None:
    made = await setup.campaigns.create(CreateCampaign(spring(max_uses=50)))
    setup.repo.items[made.id].uses = 10
    with pytest.raises(errors.FailedPrecondition):
        await setup.campaigns.update(
            UpdateCampaign(made.id, frozenset({"max_uses"}), spring(max_uses=9))
        )
    assert [type(e) for e, _ in setup.repo.published] == [CampaignCreated]


async def test_update_refuses_unknown_and_output_only_paths(setup: Setup) -> None:
    made = await setup.campaigns.create(CreateCampaign(spring()))
    with pytest.raises(errors.InvalidArgument) as caught:
        await setup.campaigns.update(
            UpdateCampaign(made.id, frozenset({"uses", "colour"}), spring())
        )
    assert violations_of(caught) == {"update_mask"}
    with pytest.raises(errors.InvalidArgument) as caught:
        await setup.campaigns.update(UpdateCampaign(made.id, frozenset(), spring()))
    assert violations_of(caught) == {"update_mask"}


async def test_a_limit_is_never_lowered_below_what_was_granted(setup: Setup) -> None:
    made = await setup.campaigns.create(
        CreateCampaign(spring(max_uses=50, budget=MoneyValue("EUR", 10_000)))
    )
    setup.repo.items[made.id].uses, setup.repo.items[made.id].discount_granted = 10, 4_000
    for fields, spec in [
        ({"max_uses"}, spring(max_uses=9)),
        ({"budget"}, spring(budget=MoneyValue("EUR", 3_999))),
        ({"budget"}, spring(budget=MoneyValue("USD", 10_000))),
    ]:
        with pytest.raises(errors.FailedPrecondition) as refused:
            await setup.campaigns.update(UpdateCampaign(made.id, frozenset(fields), spec))
        assert refused.value.reason == "UPDATE_NOT_ALLOWED"
    assert setup.repo.items[made.id].rules == made.rules  # nothing written
    ok = await setup.campaigns.update(
        UpdateCampaign(made.id, frozenset({"max_uses"}), spring(max_uses=10))
    )
    assert ok.rules.max_uses == 10
    unlimited = await setup.campaigns.update(
        UpdateCampaign(made.id, frozenset({"budget"}), spring())
    )
    assert (unlimited.rules.budget, unlimited.rules.currency) == (None, "EUR")


async def test_the_write_rechecks_the_counters_it_lowers_under() -> None:
    """A use counted between the read and the write: the conditional write refuses."""
    repo = InMemoryCampaignRepository()
    now = Clock()()
    campaign = Campaign.create("c1", CampaignRules("Spring", max_uses=50), now)
    await repo.add(campaign)
    read = await repo.get("c1")
    assert read is not None
    repo.items["c1"].uses = 11  # redeemed meanwhile
    read.change_rules(dataclasses.replace(read.rules, max_uses=10), now)
    with pytest.raises(Exception, match="c1"):
        await repo.save(read, 1)


def test_change_rules_is_pure_and_reports_no_change() -> None:
    now = Clock()()
    campaign = Campaign.create("c1", CampaignRules("Spring", max_uses=5), now)
    assert not campaign.change_rules(campaign.rules, now)
    campaign.uses = 5
    with pytest.raises(UpdateNotAllowed):
        campaign.change_rules(dataclasses.replace(campaign.rules, max_uses=4), now)
    assert campaign.version == 1


async def test_codes_join_an_existing_campaign_only(setup: Setup) -> None:
    made = await setup.campaigns.create(CreateCampaign(spring(max_uses=50)))
    promo = await setup.catalogue.create(CreatePromoCode(pct("SPRING-1", campaign_id=made.id)))
    assert promo.campaign_id == made.id
    assert (await setup.catalogue.get(promo.id)).campaign_id == made.id
    with pytest.raises(errors.FailedPrecondition) as refused:
        await setup.catalogue.create(CreatePromoCode(pct("SPRING-2", campaign_id="missing")))
    assert refused.value.reason == "CAMPAIGN_NOT_FOUND"
    with pytest.raises(errors.InvalidArgument) as caught:
        await setup.catalogue.create(CreatePromoCode(pct("SPRING-3", campaign_id="bad id!")))
    assert violations_of(caught) == {"promo_code.campaign_id"}  # type: ignore[arg-type]
    assert [p.code for p in setup.codes.items.values()] == ["SPRING-1"]


async def test_generate_into_a_campaign(setup: Setup) -> None:
    made = await setup.campaigns.create(CreateCampaign(spring(max_uses=50)))
    batch = await setup.catalogue.generate(
        GeneratePromoCodes("sp-", 5, 8, pct("", campaign_id=made.id))
    )
    assert len(batch.codes) == 5
    assert {p.campaign_id for p in setup.codes.items.values()} == {made.id}
    with pytest.raises(errors.FailedPrecondition) as refused:
        await setup.catalogue.generate(GeneratePromoCodes("x-", 2, 8, pct("", campaign_id="gone")))
    assert refused.value.reason == "CAMPAIGN_NOT_FOUND"
    assert len(setup.codes.items) == 5


async def test_a_code_never_changes_campaign(setup: Setup) -> None:
    made = await setup.campaigns.create(CreateCampaign(spring()))
    promo = await setup.catalogue.create(CreatePromoCode(pct("SPRING-1")))
    with pytest.raises(errors.InvalidArgument):
        await setup.catalogue.update(
            UpdatePromoCode(promo.id, frozenset({"campaign_id"}), pct("", campaign_id=made.id))
        )
    assert (await setup.catalogue.get(promo.id)).campaign_id == ""


# --- enforcement rules (pure) -------------------------------------------------------------


def test_evaluate_checks_window_currency_uses_per_user_and_budget_in_order() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    rules = CampaignRules(
        "C", max_uses=2, max_uses_per_user=1, budget=500, currency="EUR", valid_from=now
    )
    campaign = Campaign.create("c1", rules, now)
    assert campaign.evaluate(now - timedelta(seconds=1), "EUR", 0, 100) == "CAMPAIGN_NOT_STARTED"
    assert campaign.evaluate(now, "USD", 0, 100) == "CURRENCY_MISMATCH"
    assert campaign.evaluate(now, "EUR", 0, 500) == ""  # the budget is inclusive
    assert campaign.evaluate(now, "EUR", 0, 501) == "CAMPAIGN_BUDGET_EXHAUSTED"
    assert campaign.evaluate(now, "EUR", 1, 100) == "CAMPAIGN_PER_USER_LIMIT_REACHED"
    campaign.uses = 2
    assert campaign.evaluate(now, "EUR", 1, 100) == "CAMPAIGN_EXHAUSTED"
    ended = Campaign.create("c2", dataclasses.replace(rules, valid_until=now), now)
    assert ended.evaluate(now, "EUR", 0, 1) == "CAMPAIGN_EXPIRED"


def test_once_used_the_per_user_limit_is_only_raised_or_removed() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    campaign = Campaign.create("c1", CampaignRules("C", max_uses_per_user=2), now)
    campaign.redeemed_total = 1
    with pytest.raises(UpdateNotAllowed) as lowered:
        campaign.change_rules(CampaignRules("C", max_uses_per_user=1), now)
    assert lowered.value.field == "max_uses_per_user"
    assert campaign.change_rules(CampaignRules("C", max_uses_per_user=3), now)
    assert campaign.change_rules(CampaignRules("C"), now)
    with pytest.raises(UpdateNotAllowed):  # set where there was none: old usages escape it
        campaign.change_rules(CampaignRules("C", max_uses_per_user=5), now)


async def test_a_removed_budget_is_published_without_a_currency(setup: Setup) -> None:
    made = await setup.campaigns.create(CreateCampaign(spring(budget=MoneyValue("EUR", 9_000))))
    await setup.campaigns.update(UpdateCampaign(made.id, frozenset({"budget"}), spring()))
    [(_, v1), (removed, v2)] = setup.repo.published
    assert isinstance(removed, CampaignUpdated) and removed.changed_fields == ("budget",)
    # The campaign keeps the currency (its granted discounts are counted in it); the snapshot's
    # currency_code is the budget's, so there is none without a budget.
    assert removed.campaign.currency == "EUR" and removed.campaign.budget_minor is None
    [entry] = encode_campaign_events([removed], v2)
    envelope = events_pb2.EventEnvelope.FromString(entry.envelope)
    snapshot = envelope.campaign_updated.campaign
    assert not snapshot.HasField("budget_minor") and snapshot.currency_code == ""
    assert (envelope.aggregate_type, envelope.aggregate_id, envelope.aggregate_version) == (
        "campaign",
        made.id,
        2,
    )
    assert v1 == 1
