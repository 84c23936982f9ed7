"""The sweep: finishes what an interrupted request left behind.

It looks at every order whose `sweep_due_at` has passed:
- PENDING: its saga died (or its caller gave up and never retried): redeem again with the same
  redemption id, then confirm or reject;
- CONFIRMED with a cancellation requested: release the redemption, then mark it CANCELLED;
- REJECTED: release its redemption id once more, so that an attempt that redeemed it after the
  rejection (a race between resumptions) leaves no usage behind.
Each step is idempotent and guarded by compare-and-set, so the sweep may run in every replica
and beside live requests.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import datetime

from orders_service.domain.model import CONFIRMED, PENDING, REJECTED, Order
from orders_service.domain.ports import OrderRepository, OutcomeUnknown, VersionConflict
from orders_service.service_layer.orders import Orders
from promo_libs import errors
from promo_libs.logging import get_logger

log = get_logger(__name__)

DEFAULT_BATCH = 200


class Sweeper:
    def __init__(
        self,
        orders: OrderRepository,
        use_cases: Orders,
        clock: Callable[[], datetime],
        batch: int = DEFAULT_BATCH,
    ) -> None:
        self._orders = orders
        self._use_cases = use_cases
        self._clock = clock
        self._batch = batch

    async def sweep_once(self, now: datetime | None = None) -> Counter[str]:
        """One pass over the orders due at `now` (default: the clock); counts outcomes."""
        report: Counter[str] = Counter()
        due = await self._orders.due_for_sweep(now or self._clock(), self._batch)
        for order in due:
            outcome = await self._resolve(order)
            report[outcome] += 1
            log.info("order swept", order_id=order.id, status=order.status, outcome=outcome)
        return report

    async def _resolve(self, order: Order) -> str:
        try:
            if order.status == PENDING:
                settled = await self._use_cases.complete(order)
                return settled.status.lower()
            if order.status == CONFIRMED and order.cancelling:
                await self._use_cases.finish_cancel(order)
                return "cancelled"
            if order.status == REJECTED:
                await self._use_cases.recheck_rejection(order)
                return "rechecked"
            return "nothing_to_do"
        except errors.FailedPrecondition as exc:
            return f"rejected:{exc.reason}"
        except (errors.Unavailable, errors.Aborted, OutcomeUnknown, VersionConflict) as exc:
            log.info("sweep will try again", order_id=order.id, error=str(exc))
            return "retry_later"

    async def loop(self, interval: float) -> None:
        while True:
            try:
                report = await self.sweep_once()
                if report:
                    log.info("order sweep", **report)
            except Exception as exc:  # the next round tries again
                log.warning("order sweep failed", error=str(exc))
            await asyncio.sleep(interval)
