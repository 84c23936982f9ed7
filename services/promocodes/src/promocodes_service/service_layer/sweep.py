"""The sweep: settles reservations left behind by a crash (DESIGN.md's sweep).

Every reservation is settled through `resolve` (a code's) or `resolve_campaign` (a campaign's),
which are safe at any moment, even while the request that made the reservation is still
running: they first fence that attempt out of the usage document (one atomic write), then settle
from what the usage says -- the code first, then the campaign, both by that one verdict. A code
of a campaign and its campaign hold their reservations of one redemption under the same attempt,
and each settle is filtered on that attempt, so whichever of the two reservations the sweep (or
a Redeem that finds it overdue) meets first settles both, and the other settle is a no-op.

Crash windows of a campaign code's redemption (service_layer/redemption.py) and their verdicts:
- after "reserve campaign", before "reserve code": fenced, no usage -> the code's settle matches
  nothing, the campaign is compensated. A request still alive that then reserves the code is
  fenced at "write usage" and leaves a code reservation that the next sweep compensates;
- after "reserve code", before "write usage": fenced, no usage -> compensate code and campaign;
- after "write usage": the usage holds the attempt -> finalize code and campaign;
- after "settle code": only the campaign's reservation is left -> finalized by the usage.
Release mirrors it with kind RELEASE: the usage RELEASED by that attempt gives back on both, an
ACTIVE one is fenced and both reservations are dropped without giving back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from promo_libs.logging import get_logger
from promocodes_service.domain.model import REDEEM, RELEASED, Reservation
from promocodes_service.domain.ports import (
    CampaignRepository,
    PromoCodeRepository,
    UsageRepository,
)

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
        campaigns: CampaignRepository | None = None,
    ) -> None:
        self._codes = codes
        self._usages = usages
        self._campaigns = campaigns
        self._clock = clock
        self.stale_after = stale_after

    def is_stale(self, reservation: Reservation, now: datetime) -> bool:
        return now - reservation.at >= self.stale_after

    async def resolve(self, code_id: str, redemption_id: str, reservation: Reservation) -> str:
        """Completes or rolls back one reservation of a code (and, for a campaign's code, the
        campaign's reservation of the same attempt); returns what it did."""
        return await self._decide(code_id, reservation.campaign_id, redemption_id, reservation)

    async def resolve_campaign(
        self, campaign_id: str, redemption_id: str, reservation: Reservation
    ) -> str:
        """Completes or rolls back one reservation of a campaign, and the code's of the same
        attempt when there is one; returns what it did."""
        code_id = reservation.promo_code_id
        return await self._decide(code_id, campaign_id, redemption_id, reservation)

    async def _decide(
        self, code_id: str, campaign_id: str, redemption_id: str, reservation: Reservation
    ) -> str:
        attempt = reservation.attempt
        if reservation.kind == REDEEM:
            usage = await self._usages.fence_redeem(
                redemption_id, attempt, code_id, reservation.user_id
            )
            if usage is not None and usage.attempt == attempt and usage.promo_code_id == code_id:
                await self._settle(code_id, campaign_id, redemption_id, attempt, None)
                return "finalized"
            await self._settle(code_id, campaign_id, redemption_id, attempt, reservation.discount)
            return "rolled_back"
        usage = await self._usages.fence_release(redemption_id, attempt)
        if usage is not None and usage.status == RELEASED and usage.released_by == attempt:
            await self._settle(code_id, campaign_id, redemption_id, attempt, reservation.discount)
            return "released"
        await self._settle(code_id, campaign_id, redemption_id, attempt, None)
        return "release_aborted"

    async def _settle(
        self,
        code_id: str,
        campaign_id: str,
        redemption_id: str,
        attempt: str,
        give_back: int | None,
    ) -> None:
        """Settle code, then settle campaign: each filtered on the attempt, so exactly once."""
        if code_id:
            await self._codes.settle(code_id, redemption_id, attempt, give_back)
        if campaign_id and self._campaigns is not None:
            await self._campaigns.settle(campaign_id, redemption_id, attempt, give_back)

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
        # Then the campaigns: what is left there lost its code's reservation (never made, or
        # settled by the code's verdict above while the campaign's settle did not happen).
        for campaign in await self._campaigns.with_pending(_BATCH) if self._campaigns else []:
            for redemption_id, reservation in campaign.pending.items():
                if now - reservation.at < age:
                    fresh += 1
                    continue
                outcome = await self.resolve_campaign(campaign.id, redemption_id, reservation)
                counts[outcome] += 1
                log.info(
                    "campaign reservation settled by the sweep",
                    campaign_id=campaign.id,
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
