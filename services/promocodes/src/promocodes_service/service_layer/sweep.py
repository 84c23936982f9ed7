"""The sweep: settles reservations left behind by a crash (DESIGN.md's sweep).

Every reservation is settled through `resolve`, which is safe at any moment, even while the
request that made the reservation is still running: it first fences that attempt out of the
usage document (one atomic write), then settles the code's counters from what the usage says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from promo_libs.logging import get_logger
from promocodes_service.domain.model import REDEEM, RELEASED, Reservation
from promocodes_service.domain.ports import PromoCodeRepository, UsageRepository

log = get_logger(__name__)

_BATCH = 500
# A generation takes seconds; one BUILDING for this long was cut off and never retried.
ABANDONED_BATCH_AGE = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class SweepReport:
    finalized: int = 0
    rolled_back: int = 0
    released: int = 0
    release_aborted: int = 0
    still_fresh: int = 0

    @property
    def settled(self) -> int:
        return self.finalized + self.rolled_back + self.released + self.release_aborted


class Sweeper:
    def __init__(
        self,
        codes: PromoCodeRepository,
        usages: UsageRepository,
        clock: Callable[[], datetime],
        stale_after: timedelta,
    ) -> None:
        self._codes = codes
        self._usages = usages
        self._clock = clock
        self.stale_after = stale_after

    def is_stale(self, reservation: Reservation, now: datetime) -> bool:
        return now - reservation.at >= self.stale_after

    async def resolve(self, code_id: str, redemption_id: str, reservation: Reservation) -> str:
        """Completes or rolls back one reservation; returns what it did."""
        attempt = reservation.attempt
        if reservation.kind == REDEEM:
            usage = await self._usages.fence_redeem(
                redemption_id, attempt, code_id, reservation.user_id
            )
            if usage is not None and usage.attempt == attempt and usage.promo_code_id == code_id:
                await self._codes.settle(code_id, redemption_id, attempt, None)
                return "finalized"
            await self._codes.settle(code_id, redemption_id, attempt, reservation.discount)
            return "rolled_back"
        usage = await self._usages.fence_release(redemption_id, attempt)
        if usage is not None and usage.status == RELEASED and usage.released_by == attempt:
            await self._codes.settle(code_id, redemption_id, attempt, reservation.discount)
            return "released"
        await self._codes.settle(code_id, redemption_id, attempt, None)
        return "release_aborted"

    async def sweep(self, stale_after: timedelta | None = None) -> SweepReport:
        """Settles every reservation older than `stale_after` (default: the configured age)."""
        age = self.stale_after if stale_after is None else stale_after
        now = self._clock()
        # Generated batches committed by a process that died before it released their events,
        # and batches whose request died mid-generation and was not retried within the hour.
        if finished := await self._codes.finish_committed_batches():
            log.info("generated batches finished", batches=finished)
        if dropped := await self._codes.drop_abandoned_batches(now - ABANDONED_BATCH_AGE):
            log.info("abandoned generated batches dropped", batches=dropped)
        counts = {"finalized": 0, "rolled_back": 0, "released": 0, "release_aborted": 0}
        fresh = 0
        for promo in await self._codes.with_pending(_BATCH):
            for redemption_id, reservation in promo.pending.items():
                if now - reservation.at < age:
                    fresh += 1
                    continue
                outcome = await self.resolve(promo.id, redemption_id, reservation)
                counts[outcome] += 1
                log.info(
                    "reservation settled by the sweep",
                    promo_code_id=promo.id,
                    redemption_id=redemption_id,
                    outcome=outcome,
                )
        return SweepReport(still_fresh=fresh, **counts)

    async def loop(self, interval: float) -> None:
        while True:
            try:
                report = await self.sweep()
                if report.settled:
                    log.info("sweep", settled=report.settled)
            except Exception as exc:  # the next round tries again
                log.warning("sweep failed", error=str(exc))
            await asyncio.sleep(interval)
