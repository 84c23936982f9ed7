"""An in-memory analytics store over latest-state records: the fake of unit tests."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from analytics_service.domain import rules
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
from analytics_service.domain.ports import AnalyticsStore, BucketKey, CodeKey

K = TypeVar("K", bound=Hashable)
ItemT = TypeVar("ItemT")


@dataclass(frozen=True, slots=True)
class OrderState:
    order_id: str
    user_id: str
    currency: str
    status: str  # PENDING, CONFIRMED, REJECTED, CANCELLED
    total: int
    discount: int
    create_time: datetime
    promo_code_id: str = ""
    campaign_id: str = ""


@dataclass(frozen=True, slots=True)
class UsageState:
    usage_id: str
    promo_code_id: str
    code: str
    user_id: str
    currency: str
    discount: int
    create_time: datetime
    status: str = "ACTIVE"  # or RELEASED
    release_time: datetime | None = None
    campaign_id: str = ""


@dataclass(frozen=True, slots=True)
class LineState:
    """One order line with its order's current state (a row of order_lines, latest version)."""

    order_id: str
    line_index: int
    currency: str
    status: str
    create_time: datetime
    product_id: str = ""
    category_ids: tuple[str, ...] = ()
    quantity: int = 1
    unit_price: int = 0
    discount: int = 0
    campaign_id: str = ""


def _inside(moment: datetime | None, time_range: TimeRange) -> bool:
    if moment is None:
        return False
    moment = moment.replace(microsecond=0)  # the store keeps whole seconds
    start = time_range.start.replace(microsecond=0) if time_range.start else None
    end = time_range.end.replace(microsecond=0) if time_range.end else None
    return (start is None or moment >= start) and (end is None or moment < end)


def _order_totals(orders: list[OrderState]) -> OrderTotals:
    confirmed = [o for o in orders if o.status == "CONFIRMED"]
    return OrderTotals(
        orders=len(orders),
        confirmed=len(confirmed),
        rejected=sum(o.status == "REJECTED" for o in orders),
        cancelled=sum(o.status == "CANCELLED" for o in orders),
        revenue=sum(o.total for o in confirmed),
        discount=sum(o.discount for o in confirmed),
        users=len({o.user_id for o in orders}),
    )


def _usage_totals(usages: list[UsageState], with_texts: bool = False) -> UsageTotals:
    return UsageTotals(
        redemptions=len(usages),
        users=len({u.user_id for u in usages}),
        codes=len({u.promo_code_id for u in usages}),
        active_discount=sum(u.discount for u in usages if u.status == "ACTIVE"),
        code_texts=tuple(sorted({u.code for u in usages})) if with_texts else (),
    )


def _group(items: Iterable[ItemT], key: Callable[[ItemT], K]) -> dict[K, list[ItemT]]:
    groups: dict[K, list[ItemT]] = defaultdict(list)
    for item in items:
        groups[key(item)].append(item)
    return groups


class MemoryStore(AnalyticsStore):
    def __init__(self) -> None:
        self.orders: dict[str, OrderState] = {}
        self.usages: dict[str, UsageState] = {}
        self.codes: dict[str, PromoCodeInfo] = {}
        self.campaigns: dict[str, CampaignInfo] = {}
        self.lines: dict[tuple[str, int], LineState] = {}
        self.is_ready = True

    def add(
        self, *items: OrderState | UsageState | PromoCodeInfo | CampaignInfo | LineState
    ) -> None:
        for item in items:
            if isinstance(item, LineState):
                self.lines[(item.order_id, item.line_index)] = item
            elif isinstance(item, OrderState):
                self.orders[item.order_id] = item
            elif isinstance(item, CampaignInfo):
                self.campaigns[item.campaign_id] = item
            elif isinstance(item, UsageState):
                self.usages[item.usage_id] = item
            else:
                self.codes[item.promo_code_id] = item

    async def ready(self) -> bool:
        return self.is_ready

    def _orders(
        self, time_range: TimeRange, user_id: str | None = None, code_id: str | None = None
    ) -> list[OrderState]:
        return [
            o
            for o in self.orders.values()
            if _inside(o.create_time, time_range)
            and (user_id is None or o.user_id == user_id)
            and (code_id is None or o.promo_code_id == code_id)
        ]

    def _usages(
        self, time_range: TimeRange, user_id: str | None = None, code_id: str | None = None
    ) -> list[UsageState]:
        return [
            u
            for u in self.usages.values()
            if _inside(u.create_time, time_range)
            and (user_id is None or u.user_id == user_id)
            and (code_id is None or u.promo_code_id == code_id)
        ]

    def _releases(self, time_range: TimeRange, code_id: str | None = None) -> list[UsageState]:
        return [
            u
            for u in self.usages.values()
            if u.status == "RELEASED"
            and _inside(u.release_time, time_range)
            and (code_id is None or u.promo_code_id == code_id)
        ]

    async def find_promo_code_id(self, code: str) -> str | None:
        for info in self.codes.values():
            if info.code == code:
                return info.promo_code_id
        for usage in self.usages.values():
            if usage.code == code:
                return usage.promo_code_id
        return None

    async def promo_codes(self, ids: Sequence[str]) -> dict[str, PromoCodeInfo]:
        found = {i: self.codes[i] for i in ids if i in self.codes}
        for usage in self.usages.values():
            if usage.promo_code_id in ids and usage.promo_code_id not in found:
                found[usage.promo_code_id] = PromoCodeInfo(usage.promo_code_id, usage.code)
        return found

    async def consumption(self, ids: Sequence[str]) -> dict[str, Consumption]:
        result: dict[str, Consumption] = {}
        for usage in self.usages.values():
            if usage.promo_code_id in ids and usage.status == "ACTIVE":
                now = result.get(usage.promo_code_id, Consumption())
                result[usage.promo_code_id] = Consumption(
                    now.active_uses + 1, now.discount_granted + usage.discount
                )
        return result

    async def order_totals(
        self,
        time_range: TimeRange,
        *,
        user_id: str | None = None,
        promo_code_id: str | None = None,
    ) -> dict[str, OrderTotals]:
        groups = _group(self._orders(time_range, user_id, promo_code_id), lambda o: o.currency)
        return {c: _order_totals(g) for c, g in groups.items()}

    def _order_totals_by_code(self, time_range: TimeRange) -> dict[CodeKey, OrderTotals]:
        orders = [o for o in self._orders(time_range) if o.promo_code_id]
        groups = _group(orders, lambda o: (o.currency, o.promo_code_id))
        return {k: _order_totals(g) for k, g in groups.items()}

    async def order_series(
        self, time_range: TimeRange, granularity: Granularity, promo_code_id: str | None = None
    ) -> dict[BucketKey, OrderTotals]:
        groups = _group(
            self._orders(time_range, code_id=promo_code_id),
            lambda o: (o.currency, rules.bucket_start(o.create_time, granularity)),
        )
        return {k: _order_totals(g) for k, g in groups.items()}

    async def usage_totals(
        self,
        time_range: TimeRange,
        *,
        user_id: str | None = None,
        promo_code_id: str | None = None,
        with_code_texts: bool = False,
    ) -> dict[str, UsageTotals]:
        groups = _group(self._usages(time_range, user_id, promo_code_id), lambda u: u.currency)
        return {c: _usage_totals(g, with_code_texts) for c, g in groups.items()}

    def _usage_totals_by_code(self, time_range: TimeRange) -> dict[CodeKey, UsageTotals]:
        groups = _group(self._usages(time_range), lambda u: (u.currency, u.promo_code_id))
        return {k: _usage_totals(g) for k, g in groups.items()}

    async def release_counts(
        self, time_range: TimeRange, *, promo_code_id: str | None = None
    ) -> dict[str, int]:
        groups = _group(self._releases(time_range, promo_code_id), lambda u: u.currency)
        return {c: len(g) for c, g in groups.items()}

    def _release_counts_by_code(self, time_range: TimeRange) -> dict[CodeKey, int]:
        groups = _group(self._releases(time_range), lambda u: (u.currency, u.promo_code_id))
        return {k: len(g) for k, g in groups.items()}

    async def top_promo_codes(
        self, time_range: TimeRange, ranking: Ranking, limit: int
    ) -> dict[str, list[CodeTotals]]:
        usages = self._usage_totals_by_code(time_range)
        releases = self._release_counts_by_code(time_range)
        orders = {k: t for k, t in self._order_totals_by_code(time_range).items() if t.confirmed}
        texts = {u.promo_code_id: u.code for u in self.usages.values()}
        texts.update({i: info.code for i, info in self.codes.items()})
        top: dict[str, list[CodeTotals]] = {}
        for currency, code_id in sorted({*usages, *releases, *orders}):
            top.setdefault(currency, []).append(
                CodeTotals(
                    code_id,
                    texts.get(code_id, ""),
                    usages.get((currency, code_id), UsageTotals()),
                    releases.get((currency, code_id), 0),
                    orders.get((currency, code_id), OrderTotals()),
                )
            )

        def measure(totals: CodeTotals) -> int:
            if ranking is Ranking.DISCOUNT:
                return totals.usages.active_discount
            if ranking is Ranking.REVENUE:
                return totals.orders.revenue
            return totals.usages.redemptions

        return {
            currency: sorted(entries, key=lambda t: (-measure(t), t.code, t.promo_code_id))[:limit]
            for currency, entries in top.items()
        }

    async def campaign(self, campaign_id: str) -> CampaignInfo | None:
        if campaign_id in self.campaigns:
            return self.campaigns[campaign_id]
        if any(u.campaign_id == campaign_id for u in self.usages.values()):
            return CampaignInfo(campaign_id)
        return None

    def _campaign_usages(self, campaign_id: str) -> list[UsageState]:
        return [u for u in self.usages.values() if u.campaign_id == campaign_id]

    async def campaign_usage_totals(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, UsageTotals]:
        usages = [
            u for u in self._campaign_usages(campaign_id) if _inside(u.create_time, time_range)
        ]
        return {c: _usage_totals(g) for c, g in _group(usages, lambda u: u.currency).items()}

    async def campaign_release_counts(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, int]:
        released = [
            u
            for u in self._campaign_usages(campaign_id)
            if u.status == "RELEASED" and _inside(u.release_time, time_range)
        ]
        return {c: len(g) for c, g in _group(released, lambda u: u.currency).items()}

    async def campaign_order_totals(
        self, time_range: TimeRange, campaign_id: str
    ) -> dict[str, OrderTotals]:
        orders = [o for o in self._orders(time_range) if o.campaign_id == campaign_id]
        return {c: _order_totals(g) for c, g in _group(orders, lambda o: o.currency).items()}

    async def campaign_consumption(self, campaign_id: str) -> dict[str, Consumption]:
        active = [u for u in self._campaign_usages(campaign_id) if u.status == "ACTIVE"]
        return {
            c: Consumption(len(g), sum(u.discount for u in g))
            for c, g in _group(active, lambda u: u.currency).items()
        }

    async def discount_costs(
        self,
        time_range: TimeRange,
        grouping: CostGrouping,
        limit: int,
        campaign_id: str | None = None,
    ) -> dict[str, list[DiscountCost]]:
        sums: dict[tuple[str, str], list[int]] = {}
        orders: dict[tuple[str, str], set[str]] = defaultdict(set)
        for line in self.lines.values():
            if line.status != "CONFIRMED" or not _inside(line.create_time, time_range):
                continue
            if campaign_id is not None and line.campaign_id != campaign_id:
                continue
            if grouping is CostGrouping.CATEGORY:
                keys = sorted(set(line.category_ids))
            else:
                keys = [line.product_id] if line.product_id else []
            for key in keys:
                totals = sums.setdefault((line.currency, key), [0, 0, 0])
                totals[0] += line.discount
                totals[1] += line.quantity * line.unit_price
                totals[2] += line.quantity
                orders[(line.currency, key)].add(line.order_id)
        costs: dict[str, list[DiscountCost]] = {}
        for (currency, key), (discount, gross, units) in sums.items():
            if discount > 0:
                entry = DiscountCost(key, discount, gross, units, len(orders[(currency, key)]))
                costs.setdefault(currency, []).append(entry)
        return {
            currency: sorted(entries, key=lambda e: (-e.discount, e.key))[:limit]
            for currency, entries in sorted(costs.items())
        }
