"""What callers ask the order service to do, in the imperative. Plain immutable data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from promo_libs.carts import LineInput, MoneyValue


@dataclass(frozen=True, slots=True)
class CreateOrder:
    user_id: str
    currency: str
    amount_minor: int
    promo_code: str | None
    idempotency_key: str
    amount_given: bool = True
    lines: tuple[LineInput, ...] = ()
    shipping: MoneyValue | None = None


@dataclass(frozen=True, slots=True)
class CancelOrder:
    order_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ListOrders:
    page_size: int
    page_token: str
    user_id: str = ""
    status: str = ""  # "" = any
    created_from: datetime | None = None  # inclusive
    created_until: datetime | None = None  # exclusive
