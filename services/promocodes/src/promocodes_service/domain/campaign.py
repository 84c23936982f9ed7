"""Campaigns: limits that every code of the campaign shares, on top of each code's own.

Pure: no I/O. A campaign's counters (`uses`, `discount_granted`) count the ACTIVE redemptions of
all its codes plus the reservations in flight (`pending`, as on a code: the same attempt id
reserves on the campaign and on the code, so either reservation's settler settles both); a limit
may never be set below what is already granted, so lowering one can never turn granted
redemptions into over-grants (I1). The per-user limit is held by the usages themselves (a
campaign slot under a unique index), so it can only be raised or removed once the campaign has
been used: usages made without a numbered slot would escape a new or lower limit.

A campaign records CampaignCreated and CampaignUpdated (its rules, `version` as the aggregate
version), written to the outbox with the change; counting a redemption changes neither the rules
nor the version, and records nothing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from promocodes_service.domain.events import CampaignCreated, CampaignSnapshot, CampaignUpdated
from promocodes_service.domain.model import (
    CAMPAIGN_BUDGET_EXHAUSTED,
    CAMPAIGN_EXHAUSTED,
    CAMPAIGN_EXPIRED,
    CAMPAIGN_NOT_STARTED,
    CAMPAIGN_PER_USER_LIMIT_REACHED,
    CURRENCY_MISMATCH,
    Reservation,
    UpdateNotAllowed,
)

MAX_DISPLAY_NAME_LENGTH = 200

# The Campaign fields an operator sets (update_mask paths).
CAMPAIGN_FIELDS = frozenset(
    {
        "display_name",
        "description",
        "max_uses",
        "max_uses_per_user",
        "budget",
        "valid_from",
        "valid_until",
    }
)
CAMPAIGN_OUTPUT_FIELDS = frozenset({"id", "uses", "discount_granted", "create_time", "update_time"})


@dataclass(frozen=True, slots=True)
class CampaignRules:
    display_name: str
    description: str = ""
    max_uses: int | None = None
    max_uses_per_user: int | None = None
    budget: int | None = None  # minor units of `currency`
    currency: str | None = None  # set by the budget
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass
class Campaign:
    id: str
    rules: CampaignRules
    created_at: datetime
    updated_at: datetime
    version: int = 1  # of the rules; redemptions do not change it
    uses: int = 0
    discount_granted: int = 0
    redeemed_total: int = 0  # reservations ever made: > 0 means "has been used"
    pending: dict[str, Reservation] = dataclasses.field(default_factory=dict)
    events: list[CampaignCreated | CampaignUpdated] = dataclasses.field(
        default_factory=list, compare=False, repr=False
    )

    @classmethod
    def create(cls, campaign_id: str, rules: CampaignRules, now: datetime) -> Campaign:
        campaign = cls(id=campaign_id, rules=rules, created_at=now, updated_at=now)
        campaign.events.append(CampaignCreated(campaign.snapshot(), now))
        return campaign

    def snapshot(self) -> CampaignSnapshot:
        r = self.rules
        return CampaignSnapshot(
            id=self.id,
            display_name=r.display_name,
            description=r.description,
            max_uses=r.max_uses,
            max_uses_per_user=r.max_uses_per_user,
            budget_minor=r.budget,
            currency=r.currency,
            valid_from=r.valid_from,
            valid_until=r.valid_until,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    def requires_unused(self, new: CampaignRules) -> bool:
        """A change only a never-used campaign may take: a per-user limit that is new or lower
        (usages made under the old scheme hold no numbered slot, or a higher one)."""
        old = self.rules.max_uses_per_user
        return new.max_uses_per_user is not None and (old is None or new.max_uses_per_user < old)

    def evaluate(self, now: datetime, currency: str, user_active_uses: int, discount: int) -> str:
        """The campaign's rules for a redemption the code itself allows (its `discount`), in the
        documented order (promo_codes.proto); "" when they allow it too. Changes nothing."""
        r = self.rules
        if r.valid_from is not None and now < r.valid_from:
            return CAMPAIGN_NOT_STARTED
        if r.valid_until is not None and now >= r.valid_until:
            return CAMPAIGN_EXPIRED
        if r.budget is not None and r.currency is not None and currency != r.currency:
            return CURRENCY_MISMATCH  # the budget counts one currency
        if r.max_uses is not None and self.uses >= r.max_uses:
            return CAMPAIGN_EXHAUSTED
        if r.max_uses_per_user is not None and user_active_uses >= r.max_uses_per_user:
            return CAMPAIGN_PER_USER_LIMIT_REACHED
        if r.budget is not None and self.discount_granted + discount > r.budget:
            return CAMPAIGN_BUDGET_EXHAUSTED
        return ""

    def change_rules(self, new: CampaignRules, now: datetime) -> bool:
        """Takes the new rules; False when nothing changed. UpdateNotAllowed (naming the field)
        when a limit would fall below what the campaign has already granted, the budget's
        currency would change under granted discounts (their sum is in the old currency), or,
        once used, the per-user limit would be set or lowered."""
        if new == self.rules:
            return False
        if new.max_uses is not None and new.max_uses < self.uses:
            raise UpdateNotAllowed(
                f"max_uses {new.max_uses} is below the campaign's {self.uses} uses", "max_uses"
            )
        if new.budget is not None and new.budget < self.discount_granted:
            raise UpdateNotAllowed(
                f"budget {new.budget} is below the {self.discount_granted} already granted",
                "budget",
            )
        if (
            self.discount_granted > 0
            and self.rules.currency is not None
            and new.currency != self.rules.currency
        ):
            raise UpdateNotAllowed(
                "the budget's currency cannot change once discounts were granted", "budget"
            )
        if self.redeemed_total > 0 and self.requires_unused(new):
            raise UpdateNotAllowed(
                "once the campaign was used, max_uses_per_user can only be raised or removed",
                "max_uses_per_user",
            )
        changed = tuple(
            sorted(f for f in CAMPAIGN_FIELDS if _rule_value(self.rules, f) != _rule_value(new, f))
        )
        self.rules = new
        self.updated_at = now
        self.version += 1
        self.events.append(CampaignUpdated(self.snapshot(), changed, now))
        return True


def _rule_value(rules: CampaignRules, name: str) -> object:
    """One update_mask path's value; the budget's currency belongs to `budget`, so a changed
    currency alone reports `budget` as changed."""
    if name == "budget":
        return (rules.budget, rules.currency)
    return getattr(rules, name)


def merged(base: CampaignRules, given: CampaignRules, fields: frozenset[str]) -> CampaignRules:
    """`base` with the fields named in `fields` taken from `given`. A new budget brings its
    currency along; removing the budget keeps the currency, which the granted discounts are
    counted in."""
    changes = {name: getattr(given, name) for name in fields if name in CAMPAIGN_FIELDS}
    if "budget" in fields and given.budget is not None:
        changes["currency"] = given.currency
    return dataclasses.replace(base, **changes)
