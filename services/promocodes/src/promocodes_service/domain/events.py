"""What happened to promo codes, their usages and campaigns, in the past tense.

Recorded by the aggregates, written to the outbox in the same document write as the change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from promo_libs.users import UserSnapshot


@dataclass(frozen=True, slots=True)
class CodeSnapshot:
    """A code's rules at one moment (counters excluded: analytics derive them from usages)."""

    id: str
    code: str
    discount_type: str  # "PERCENTAGE" or "FIXED_AMOUNT"
    basis_points: int
    # Amounts in minor units, named as in promo.v1.PromoCodeSnapshot and the orders service's
    # snapshot: one name for one thing across services.
    fixed_amount_minor: int
    max_discount_minor: int | None
    currency: str | None
    min_order_amount_minor: int | None
    max_uses: int | None
    max_uses_per_user: int | None
    budget_minor: int | None
    batch_id: str
    active: bool
    valid_from: datetime | None
    valid_until: datetime | None
    created_at: datetime
    campaign_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageSnapshot:
    id: str
    promo_code_id: str
    code: str
    user_id: str
    currency: str
    order_amount: int
    discount: int
    status: str  # "ACTIVE" or "RELEASED"
    release_reason: str
    created_at: datetime
    released_at: datetime | None
    lines: tuple[LineShare, ...] = ()
    shipping: int = 0
    shipping_discount: int = 0
    campaign_id: str = ""  # the code's campaign when it was redeemed; "" none


@dataclass(frozen=True, slots=True)
class CampaignSnapshot:
    """A campaign's rules at one moment. Its counters are left out, as a code's are: they change
    on every redemption (which publishes no campaign event) and analytics derive them from the
    usages."""

    id: str
    display_name: str
    description: str
    max_uses: int | None
    max_uses_per_user: int | None
    budget_minor: int | None
    currency: str | None
    valid_from: datetime | None
    valid_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class LineShare:
    """A cart line and its share of the discount (amounts in the usage's currency)."""

    sku: str
    quantity: int
    unit_price: int
    discount: int
    product_id: str = ""
    category_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PromoCodeCreated:
    code: CodeSnapshot
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class PromoCodeUpdated:
    code: CodeSnapshot
    changed_fields: tuple[str, ...]
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class PromoCodeDeactivated:
    code: CodeSnapshot
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class PromoCodeRedeemed:
    usage: UsageSnapshot
    code: CodeSnapshot
    user: UserSnapshot
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class PromoCodeReleased:
    usage: UsageSnapshot
    code: CodeSnapshot
    user: UserSnapshot
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class CampaignCreated:
    campaign: CampaignSnapshot
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class CampaignUpdated:
    campaign: CampaignSnapshot
    changed_fields: tuple[str, ...]
    occurred_at: datetime


CodeEvent = PromoCodeCreated | PromoCodeUpdated | PromoCodeDeactivated
UsageEvent = PromoCodeRedeemed | PromoCodeReleased
CampaignEvent = CampaignCreated | CampaignUpdated
