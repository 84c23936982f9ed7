"""Campaigns: limits that every code of the campaign shares, on top of each code's own.

Pure: no I/O. A campaign's counters (`uses`, `discount_granted`) count the ACTIVE redemptions of
all its codes; a limit may never be set below what is already granted, so lowering one can never
turn granted redemptions into over-grants (I1).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from promocodes_service.domain.model import UpdateNotAllowed

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

    @classmethod
    def create(cls, campaign_id: str, rules: CampaignRules, now: datetime) -> Campaign:
        return cls(id=campaign_id, rules=rules, created_at=now, updated_at=now)

    def change_rules(self, new: CampaignRules, now: datetime) -> bool:
        """Takes the new rules; False when nothing changed. UpdateNotAllowed when a limit would
        fall below what the campaign has already granted, or the budget's currency would change
        under granted discounts (their sum is in the old currency)."""
        if new == self.rules:
            return False
        if new.max_uses is not None and new.max_uses < self.uses:
            raise UpdateNotAllowed(
                f"max_uses {new.max_uses} is below the campaign's {self.uses} uses"
            )
        if new.budget is not None and new.budget < self.discount_granted:
            raise UpdateNotAllowed(
                f"budget {new.budget} is below the {self.discount_granted} already granted"
            )
        if (
            self.discount_granted > 0
            and self.rules.currency is not None
            and new.currency != self.rules.currency
        ):
            raise UpdateNotAllowed(
                "the budget's currency cannot change once discounts were granted"
            )
        self.rules = new
        self.updated_at = now
        self.version += 1
        return True


def merged(base: CampaignRules, given: CampaignRules, fields: frozenset[str]) -> CampaignRules:
    """`base` with the fields named in `fields` taken from `given`. A new budget brings its
    currency along; removing the budget keeps the currency, which the granted discounts are
    counted in."""
    changes = {name: getattr(given, name) for name in fields if name in CAMPAIGN_FIELDS}
    if "budget" in fields and given.budget is not None:
        changes["currency"] = given.currency
    return dataclasses.replace(base, **changes)
