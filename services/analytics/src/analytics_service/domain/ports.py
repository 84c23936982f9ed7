"""What the analytics use cases need from the analytics store, as one abstract port.

Every aggregate comes back per currency (the service layer applies the currency rule) and
follows the contract's definitions: an order or usage is in a range when its create_time is, a
release when its release_time is; statuses are the current ones (latest version of the entity).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

from analytics_service.domain.model import (
    CampaignInfo,
    CodeTotals,
    Consumption,
    CostGrouping,
    DiscountCost,
    Granularity,
    OrderTotals,
    PromoCodeInfo,
    Ranking,
    TimeRange,
    UsageTotals,
)

CodeKey = tuple[str, str]  # (currency, promo_code_id)
BucketKey = tuple[str, datetime]  # (currency, bucket start)


class AnalyticsStore(abc.ABC):
    @abc.abstractmethod
    async def find_promo_code_id(self, code: str) -> str | None:
        """The id of the code with this text (upper case), None when no event names it."""

    @abc.abstractmethod
    async def promo_codes(self, ids: Sequence[str]) -> dict[str, PromoCodeInfo]:
        """Current dimension data of these codes; ids no event names are left out. A code known
        only from usages or orders has its text and no limits."""

    @abc.abstractmethod
    async def consumption(self, ids: Sequence[str]) -> dict[str, Consumption]:
        """All-time ACTIVE usages of these codes (missing ids have none)."""

    @abc.abstractmethod
    async def order_totals(
        self,
        time_range: TimeRange,
        *,
        user_id: str | None = None,
        promo_code_id: str | None = None,
    ) -> dict[str, OrderTotals]:
        """Orders created in the range, per currency; optionally of one user or one code."""

    @abc.abstractmethod
    async def order_series(
        self, time_range: TimeRange, granularity: Granularity, promo_code_id: str | None = None
    ) -> dict[BucketKey, OrderTotals]:
        """Orders created in the range per currency and UTC bucket (only non-empty buckets)."""

    @abc.abstractmethod
    async def usage_totals(
        self,
        time_range: TimeRange,
        *,
        user_id: str | None = None,
        promo_code_id: str | None = None,
        with_code_texts: bool = False,
    ) -> dict[str, UsageTotals]:
        """Usages created in the range, per currency; optionally of one user or one code."""

    @abc.abstractmethod
    async def release_counts(
        self, time_range: TimeRange, *, promo_code_id: str | None = None
    ) -> dict[str, int]:
        """Usages released in the range, per currency."""

    @abc.abstractmethod
    async def top_promo_codes(
        self, time_range: TimeRange, ranking: Ranking, limit: int
    ) -> dict[str, list[CodeTotals]]:
        """Per currency, its best `limit` codes by `ranking`, best first, ties by ascending code
        text then id. Candidates: codes with usages created, usages released or confirmed
        orders created in the range (latest state), in that currency."""

    @abc.abstractmethod
    async def campaign(self, campaign_id: str) -> CampaignInfo | None:
        """The campaign's current rules and codes; None when no event names it (neither its
        own events nor a code or usage of it)."""

    @abc.abstractmethod
    async def campaign_usage_totals(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, UsageTotals]:
        """Usages of the campaign's codes created in the range, per currency."""

    @abc.abstractmethod
    async def campaign_release_counts(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, int]:
        """Usages of the campaign's codes released in the range, per currency."""

    @abc.abstractmethod
    async def campaign_order_totals(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, OrderTotals]:
        """Orders created in the range whose code (latest state) is one of the campaign's."""

    @abc.abstractmethod
    async def campaign_consumption(self, campaign_id: str) -> dict[str, Consumption]:
        """All-time ACTIVE usages of the campaign's codes, per currency."""

    @abc.abstractmethod
    async def discount_costs(
        self,
        time_range: TimeRange,
        grouping: CostGrouping,
        limit: int,
        campaign_id: str | None = None,
    ) -> dict[str, list[DiscountCost]]:
        """Per currency, its `limit` products or categories (a line counts in each of its
        categories) with the largest discount, ties by ascending key, over the lines of the
        orders created in the range that are CONFIRMED now (with `campaign_id`: only orders
        whose latest version names that campaign); keys without discount, and lines without a
        product id, left out."""

    @abc.abstractmethod
    async def ready(self) -> bool:
        """True when the store answers and holds the analytics tables."""
