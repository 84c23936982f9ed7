"""The questions analytics answers: small immutable requests, one per use case."""

from __future__ import annotations

from dataclasses import dataclass

from analytics_service.domain.model import ALL_TIME, CostGrouping, Granularity, Ranking, TimeRange


@dataclass(frozen=True, slots=True)
class GetPromoCodeStats:
    """Exactly one of promo_code_id and code (any case) names the code."""

    promo_code_id: str | None = None
    code: str | None = None
    time_range: TimeRange = ALL_TIME
    currency: str = ""


@dataclass(frozen=True, slots=True)
class ListTopPromoCodes:
    time_range: TimeRange = ALL_TIME
    ranking: Ranking | None = Ranking.REDEMPTIONS  # None: a value this version does not know
    limit: int = 0
    currency: str = ""


@dataclass(frozen=True, slots=True)
class GetUserStats:
    user_id: str
    time_range: TimeRange = ALL_TIME
    currency: str = ""


@dataclass(frozen=True, slots=True)
class GetOrdersTimeSeries:
    time_range: TimeRange
    granularity: Granularity | None = Granularity.DAY  # None: a value this version does not know
    promo_code_id: str | None = None
    currency: str = ""


@dataclass(frozen=True, slots=True)
class GetOverview:
    time_range: TimeRange = ALL_TIME
    currency: str = ""


@dataclass(frozen=True, slots=True)
class GetCampaignStats:
    campaign_id: str
    time_range: TimeRange = ALL_TIME
    currency: str = ""


@dataclass(frozen=True, slots=True)
class ListDiscountCosts:
    time_range: TimeRange = ALL_TIME
    grouping: CostGrouping | None = CostGrouping.PRODUCT  # None: a value this version does not know
    limit: int = 0
    currency: str = ""
    campaign_id: str | None = None
