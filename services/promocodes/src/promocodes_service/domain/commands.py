"""What callers ask the promo-code service to do, in the imperative. Plain immutable data.

Field names follow the request messages, so violations can name request paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from promo_libs.carts import LineInput, MoneyValue
from promo_libs.users import UserSnapshot


@dataclass(frozen=True, slots=True)
class TargetingIn:
    include_product_ids: tuple[str, ...] = ()
    include_category_ids: tuple[str, ...] = ()
    include_skus: tuple[str, ...] = ()
    exclude_product_ids: tuple[str, ...] = ()
    exclude_category_ids: tuple[str, ...] = ()
    exclude_skus: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CodeSpec:
    """A PromoCode as given in a request; `None` = unset. Its timestamps are in range: the shared
    interceptor refuses a request with one that is not (promo_libs.grpc.requests)."""

    code: str = ""
    description: str = ""
    discount: str = ""  # "percentage", "fixed_amount" or "" (none given)
    basis_points: int = 0
    max_discount: MoneyValue | None = None
    fixed_amount: MoneyValue | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    min_order_amount: MoneyValue | None = None
    max_uses: int | None = None
    max_uses_per_user: int | None = None
    budget: MoneyValue | None = None
    eligible_user_ids: tuple[str, ...] = ()
    active: bool = True
    # The cart part. Enum values by name without prefix ("", "ORDER", "ITEMS", "SHIPPING";
    # "", "ACROSS", "PER_UNIT"); a number the contract does not know arrives as its digits.
    target: str = ""
    targeting: TargetingIn = TargetingIn()
    allocation: str = ""
    max_quantity: int | None = None
    min_item_quantity: int | None = None
    min_item_amount: MoneyValue | None = None
    first_order_only: bool = False
    campaign_id: str = ""  # immutable; "" = no campaign


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """A Campaign as given in a request; `None` = unset."""

    display_name: str = ""
    description: str = ""
    max_uses: int | None = None
    max_uses_per_user: int | None = None
    budget: MoneyValue | None = None
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class CreateCampaign:
    spec: CampaignSpec


@dataclass(frozen=True, slots=True)
class UpdateCampaign:
    """Only the fields named in `fields` change (the request's update_mask)."""

    campaign_id: str
    fields: frozenset[str]
    spec: CampaignSpec


@dataclass(frozen=True, slots=True)
class ListCampaigns:
    page_size: int
    page_token: str


@dataclass(frozen=True, slots=True)
class CreatePromoCode:
    spec: CodeSpec


@dataclass(frozen=True, slots=True)
class UpdatePromoCode:
    """Only the fields named in `fields` change (the request's update_mask)."""

    code_id: str
    fields: frozenset[str]
    spec: CodeSpec


@dataclass(frozen=True, slots=True)
class DeletePromoCode:
    code_id: str


@dataclass(frozen=True, slots=True)
class GeneratePromoCodes:
    prefix: str
    count: int
    random_length: int
    template: CodeSpec
    request_id: str = ""  # idempotency key; empty: a new batch every time


@dataclass(frozen=True, slots=True)
class ValidatePromoCode:
    code: str
    user_id: str
    order_amount: MoneyValue | None
    lines: tuple[LineInput, ...] = ()
    shipping: MoneyValue | None = None
    first_order: bool = False


@dataclass(frozen=True, slots=True)
class RedeemPromoCode:
    code: str
    user_id: str
    order_amount: MoneyValue | None
    redemption_id: str
    lines: tuple[LineInput, ...] = ()
    shipping: MoneyValue | None = None
    first_order: bool = False
    # The user as the caller (orders) just read it from UserService; None: read it here.
    user: UserSnapshot | None = None


@dataclass(frozen=True, slots=True)
class ReleasePromoCode:
    redemption_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ListPromoCodes:
    page_size: int
    page_token: str
    active: bool | None = None
    valid_at: datetime | None = None
    code_prefix: str = ""
    batch_id: str = ""


@dataclass(frozen=True, slots=True)
class ListPromoCodeUsages:
    page_size: int
    page_token: str
    promo_code_id: str = ""
    user_id: str = ""
    status: str = ""  # "", "ACTIVE" or "RELEASED"; anything else is invalid
