"""What analytics talks about: ranges, buckets, per-currency totals and the answers built from them.

Pure Python: no I/O, no gRPC, no ClickHouse. Every datetime is timezone-aware UTC; amounts are
integers in minor units, never floats.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Granularity(enum.Enum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class CostGrouping(enum.Enum):
    PRODUCT = "product"
    CATEGORY = "category"


class Ranking(enum.Enum):
    REDEMPTIONS = "redemptions"
    DISCOUNT = "discount"
    REVENUE = "revenue"


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Half-open [start, end); None on either side means unbounded."""

    start: datetime | None = None
    end: datetime | None = None


ALL_TIME = TimeRange()


@dataclass(frozen=True, slots=True)
class Money:
    currency: str
    amount: int


@dataclass(frozen=True, slots=True)
class OrderTotals:
    """Orders of one currency (and one code or bucket) created in a range, by current status."""

    orders: int = 0
    confirmed: int = 0
    rejected: int = 0
    cancelled: int = 0
    revenue: int = 0  # sum of `total` of the confirmed ones
    discount: int = 0  # sum of `discount` of the confirmed ones
    users: int = 0  # distinct users among all of them


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Usages of one currency (and one code) created in a range, released ones included."""

    redemptions: int = 0
    users: int = 0
    codes: int = 0
    active_discount: int = 0  # sum of `discount` of those still ACTIVE
    code_texts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CodeTotals:
    """One code's activity in a range and currency, as ListTopPromoCodes ranks it."""

    promo_code_id: str
    code: str  # the text ties are broken by
    usages: UsageTotals = UsageTotals()
    releases: int = 0
    orders: OrderTotals = OrderTotals()  # its confirmed orders: `confirmed` and `revenue`


@dataclass(frozen=True, slots=True)
class PromoCodeInfo:
    """A promo code's current dimension data; limits None when the code has none."""

    promo_code_id: str
    code: str
    currency: str = ""
    max_uses: int | None = None
    budget: int | None = None


@dataclass(frozen=True, slots=True)
class CampaignInfo:
    """A campaign's current rules and its codes now; limits None when it has none. A campaign
    known only from its codes or usages (its own event not stored) has no name and no limits."""

    campaign_id: str
    display_name: str = ""
    codes: int = 0
    max_uses: int | None = None
    budget: Money | None = None


@dataclass(frozen=True, slots=True)
class Consumption:
    """All-time state of a code's usages: ACTIVE ones and the discount they hold."""

    active_uses: int = 0
    discount_granted: int = 0


@dataclass(frozen=True, slots=True)
class PromoCodeStats:
    promo_code_id: str
    code: str
    currency: str
    redemptions: int = 0
    releases: int = 0
    unique_users: int = 0
    total_discount: int = 0
    orders: int = 0
    revenue: int = 0
    average_order_value: int = 0
    remaining_uses: int | None = None
    remaining_budget: Money | None = None


@dataclass(frozen=True, slots=True)
class CampaignStats:
    campaign_id: str
    display_name: str
    currency: str
    codes: int = 0
    redemptions: int = 0
    releases: int = 0
    unique_users: int = 0
    discount_cost: int = 0
    orders: int = 0
    revenue: int = 0
    remaining_uses: int | None = None
    remaining_budget: Money | None = None


@dataclass(frozen=True, slots=True)
class UserStats:
    user_id: str
    currency: str
    orders: int = 0
    confirmed_orders: int = 0
    revenue: int = 0
    discount: int = 0
    redemptions: int = 0
    codes_used: int = 0
    codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TimeSeriesPoint:
    bucket_start: datetime
    orders: int = 0
    confirmed_orders: int = 0
    revenue: int = 0
    discount: int = 0


@dataclass(frozen=True, slots=True)
class TimeSeries:
    """One currency's series; or, without a currency on data of several, none at the top and
    one series per currency in `per_currency`."""

    currency: str
    points: tuple[TimeSeriesPoint, ...] = field(default_factory=tuple)
    per_currency: tuple[TimeSeries, ...] = ()


@dataclass(frozen=True, slots=True)
class TopPromoCodes:
    """One currency's top list; or, without a currency on data of several, one per currency."""

    entries: tuple[PromoCodeStats, ...] = ()
    per_currency: tuple[tuple[str, tuple[PromoCodeStats, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class Overview:
    currency: str
    orders: int = 0
    confirmed_orders: int = 0
    rejected_orders: int = 0
    cancelled_orders: int = 0
    revenue: int = 0
    discount: int = 0
    average_order_value: int = 0
    redemptions: int = 0
    releases: int = 0
    active_users: int = 0
    active_codes: int = 0
    per_currency: tuple[Overview, ...] = ()  # without a currency, on data of several


@dataclass(frozen=True, slots=True)
class DiscountCost:
    """The lines of one product or category in the orders of a range CONFIRMED now, in one
    currency: the sum of their discount shares, their gross (quantity x unit price), units and
    distinct orders."""

    key: str
    discount: int = 0
    gross: int = 0
    units: int = 0
    orders: int = 0


@dataclass(frozen=True, slots=True)
class DiscountCosts:
    """One currency's list, largest discount first; or, without a currency on data of several,
    none at the top and one list per currency."""

    currency: str
    entries: tuple[DiscountCost, ...] = ()
    per_currency: tuple[DiscountCosts, ...] = ()
