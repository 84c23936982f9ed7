"""The sweep: finishes what an interrupted request left behind.

It looks at every order whose `sweep_due_at` has passed:
- PENDING: its saga died (or its caller gave up and never retried): redeem again with the same
  redemption id, then confirm or reject;
- CONFIRMED with a cancellation requested: release the redemption, then mark it CANCELLED;
- REJECTED: release its redemption id once more, so that an attempt that redeemed it after the
  rejection (a race between resumptions) leaves no usage behind.
Each step is idempotent and guarded by compare-and-set, so the sweep may run in every replica,
beside live requests, and on several orders of a pass at once.
"""

from __future__ import annotations

import asyncio
import random
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
# Orders settled at once by one pass (each a Redeem or Release and a compare-and-set write).
DEFAULT_CONCURRENCY = 16


class Sweeper:
    def __init__(
        self,
        orders: OrderRepository,
        use_cases: Orders,
        clock: Callable[[], datetime],
        batch: int = DEFAULT_BATCH,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._orders = orders
        self._use_cases = use_cases
        self._clock = clock
        self._batch = batch
        self._concurrency = concurrency

    async def sweep_once(self, now: datetime | None = None) -> Counter[str]:
        """One pass over the orders due at `now` (default: the clock); counts outcomes."""
        due = await self._orders.due_for_sweep(now or self._clock(), self._batch)
        # Several at once: one at a time, ~950 rechecks of REJECTED orders (a Release each) held
        # the PENDING orders due after them back for 30-60 s on a busy machine. Safe, as every
        # step is already safe beside other replicas. Shuffled, so that two replicas that read
        # the same due orders mostly settle different ones instead of colliding on each.
        random.shuffle(due)
        gate = asyncio.Semaphore(self._concurrency)

        async def settle(order: Order) -> str:
            async with gate:
                outcome = await self._resolve(order)
            log.info("order swept", order_id=order.id, status=order.status, outcome=outcome)
            return outcome

        outcomes = await asyncio.gather(*(settle(o) for o in due), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):  # after the others finished, as before
                raise outcome
        return Counter(o for o in outcomes if isinstance(o, str))

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
