"""What happened to an order, in the past tense: recorded by the aggregate, sent via the outbox.

Each event carries the denormalized snapshots analytics need: the order after the change, the
user as read from UserService when the order was placed, and the promo code as last read from
PromoCodeService.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from promo_libs.users import UserSnapshot


@dataclass(frozen=True, slots=True)
class PromoCodeSnapshot:
    """A promo code's rules as last read; only `id` and `code` are known when it could not be
    read (discount_type empty)."""

    id: str
    code: str
    discount_type: str = ""  # "PERCENTAGE", "FIXED_AMOUNT" or "" (unknown)
    basis_points: int = 0
    fixed_amount_minor: int = 0
    max_discount_minor: int | None = None
    currency: str = ""
    min_order_amount_minor: int | None = None
    max_uses: int | None = None
    max_uses_per_user: int | None = None
    budget_minor: int | None = None
    batch_id: str = ""
    active: bool = True
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    created_at: datetime | None = None
    campaign_id: str = ""  # the code's campaign; "" none (or not known: read before campaigns)


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    id: str
    user_id: str
    currency: str
    subtotal_minor: int
    discount_minor: int
    total_minor: int
    promo_code: str
    promo_code_id: str
    usage_id: str
    status: str
    rejection_reason: str
    cancellation_reason: str
    idempotency_key: str
    created_at: datetime
    updated_at: datetime
    confirmed_at: datetime | None
    cancelled_at: datetime | None
    lines: tuple[OrderLine, ...] = ()
    shipping_minor: int = 0
    shipping_discount_minor: int = 0
    campaign_id: str = ""  # the applied code's campaign; "" without a code or campaign


@dataclass(frozen=True, slots=True)
class OrderLine:
    """One cart line of an order and its share of the discount (the order's currency)."""

    sku: str
    quantity: int
    unit_price: int
    product_id: str = ""
    category_ids: tuple[str, ...] = ()
    discount: int = 0

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True, slots=True)
class OrderCreated:
    order: OrderSnapshot
    user: UserSnapshot
    version: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class OrderConfirmed:
    order: OrderSnapshot
    user: UserSnapshot
    promo_code: PromoCodeSnapshot | None
    version: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class OrderRejected:
    order: OrderSnapshot
    user: UserSnapshot
    version: int
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    order: OrderSnapshot
    user: UserSnapshot
    promo_code: PromoCodeSnapshot | None
    version: int
    occurred_at: datetime


OrderEvent = OrderCreated | OrderConfirmed | OrderRejected | OrderCancelled
