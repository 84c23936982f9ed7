"""Quotes, redemptions, releases and the usage list.

Redeem follows DESIGN.md's protocol with single-document atomic writes only:
  1. reserve on the code's document (limits in the filter, `pending.<redemption id>` set),
  2. write the usage under the redemption id holding a free per-user slot (unique index),
  3. settle the reservation (finalize; or roll back when no slot was free).
A code of a campaign keeps the campaign's limits in step the same way, with one attempt id for
both documents (services/promocodes/README.md, "Campaigns"; the step names are the Promela
model's): reserve campaign, reserve code, write usage (holding the code's per-user slot and the
user's campaign slot), settle code, settle campaign. Any refusal after "reserve campaign" gives
the campaign's reservation back (compensate, filtered on the attempt).
Release mirrors it: reserve a release (on the campaign, then the code), mark the usage RELEASED
(slots freed), give the use and the discount back while settling (code, then campaign).
Anything interrupted is settled by `Sweeper.resolve` / `Sweeper.resolve_campaign`.
A Release that finds no usage voids the id (a VOIDED tombstone under the unique `_id`): a Redeem
with that id arriving later, or still in flight, can never write its usage and is refused with
REDEMPTION_VOIDED. That is what makes "the order gave up on this id" final across replicas: an
orders sweep that rejected an order and released its id cannot be overtaken by a late Redeem of
another replica (issue 12, "a use leaked for ever").
A code is reported exhausted (uses or budget) only when settled redemptions alone reach the
limit: while reservations that may still roll back are in flight, the request waits for them --
but only for those that can still give a use back (a reservation whose usage is written will be
finalized, not rolled back), never past the caller's deadline (the answer must reach it), and a
reservation whose own request's deadline has passed (`Reservation.until`) is settled on the spot
through `Sweeper.resolve` (safe at any moment: it fences the attempt out) instead of being
waited for until the sweep. So a reservation left by a killed replica delays its code
only until its request would have given up anyway, and live reservations, however slow under
load, are still waited for: "exhausted" stays exact (issue 12).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from promo_libs import deadlines, errors
from promo_libs.errors import checked
from promo_libs.identifiers import check_id, normalize_code
from promo_libs.identity import require_acting_for
from promo_libs.logging import get_logger
from promo_libs.pagination import page_request
from promo_libs.users import UserDirectory, UserSnapshot, require_active
from promocodes_service.domain import rules
from promocodes_service.domain.campaign import Campaign
from promocodes_service.domain.cart import FIRST_ORDER_ONLY, Cart
from promocodes_service.domain.commands import (
    ListPromoCodeUsages,
    RedeemPromoCode,
    ReleasePromoCode,
    ValidatePromoCode,
)
from promocodes_service.domain.model import (
    ACTIVE,
    BUDGET_EXHAUSTED,
    CAMPAIGN_BUDGET_EXHAUSTED,
    CAMPAIGN_EXHAUSTED,
    CAMPAIGN_PER_USER_LIMIT_REACHED,
    PER_USER_LIMIT_REACHED,
    PROMO_CODE_EXHAUSTED,
    PROMO_CODE_NOT_FOUND,
    REDEEM,
    REDEMPTION_VOIDED,
    RELEASE,
    RELEASED,
    PromoCode,
    Quote,
    Reservation,
    Usage,
)
from promocodes_service.domain.ports import (
    CLAIMED,
    EXISTS,
    SLOT_TAKEN,
    CampaignRepository,
    PromoCodeRepository,
    UsageQuery,
    UsageRepository,
)
from promocodes_service.service_layer.catalogue import code_not_found
from promocodes_service.service_layer.sweep import Sweeper
from promocodes_service.service_layer.validation import CheckedCart, check_cart_request

log = get_logger(__name__)

_ATTEMPTS = 50
_SLOT_CANDIDATES = 4
_MAX_PAUSE = 0.05
_UNCERTAIN = frozenset({PROMO_CODE_EXHAUSTED, BUDGET_EXHAUSTED})
_CAMPAIGN_UNCERTAIN = frozenset({CAMPAIGN_EXHAUSTED, CAMPAIGN_BUDGET_EXHAUSTED})
# Stop waiting this long before the caller's deadline, so that the answer still reaches it.
_ANSWER_MARGIN = 0.25
# How long after its request's deadline a reservation is settled by others (a write sent just
# before the deadline may still land; fencing makes it harmless either way).
_LANDING = 1.0


@dataclass(frozen=True, slots=True)
class Validation:
    quote: Quote
    promo: PromoCode | None
    currency: str
    basket: Cart


@dataclass(frozen=True, slots=True)
class UsagePage:
    usages: list[Usage]
    next_page_token: str


def _free_slots(per_user: int, taken: set[int]) -> list[int | None]:
    """The lowest free numbered slots (a few: the next ones are looked up when these fill)."""
    free = (s for s in itertools.count(1) if s not in taken)
    return [s for s in itertools.islice(free, _SLOT_CANDIDATES) if s <= per_user]


def _voided(rid: str) -> errors.FailedPrecondition:
    return errors.FailedPrecondition(
        f"redemption {rid} was released before it was redeemed; it can never be redeemed",
        REDEMPTION_VOIDED,
        {"redemption_id": rid},
    )


def _refused(code: str, reason: str, promo: PromoCode) -> errors.FailedPrecondition:
    return errors.FailedPrecondition(
        f"promo code {code} does not apply: {reason}", reason, {"promo_code_id": promo.id}
    )


def _in_progress() -> errors.Aborted:
    return errors.Aborted(
        "the redemption is still in progress; retry with the same id", "REDEMPTION_IN_PROGRESS"
    )


class Redemptions:
    def __init__(
        self,
        codes: PromoCodeRepository,
        usages: UsageRepository,
        users: UserDirectory,
        sweeper: Sweeper,
        new_id: Callable[[], str],
        clock: Callable[[], datetime],
        *,
        campaigns: CampaignRepository | None = None,
        wait_step: float = 0.005,
        wait_limit: float = 10.0,
    ) -> None:
        self._campaigns = campaigns
        self._codes = codes
        self._usages = usages
        self._users = users
        self._sweeper = sweeper
        self._new_id = new_id
        self._clock = clock
        self._wait_step = wait_step
        self._wait_limit = wait_limit

    # --- quotes ---------------------------------------------------------------------------

    async def validate(self, command: ValidatePromoCode) -> Validation:
        violations = errors.Violations()
        code = checked(violations, "code", normalize_code, command.code)
        checked(violations, "user_id", lambda v: check_id(v, "user id"), command.user_id)
        given = check_cart_request(
            violations, command.order_amount, command.lines, command.shipping
        )
        violations.raise_if_any()
        require_acting_for(command.user_id)  # a quote reveals the user's uses of the code (I7)
        assert code is not None and given is not None
        basket, currency = given.basket, given.currency
        promo = await self._codes.get_by_code(code)
        if promo is None:
            return Validation(Quote(0, PROMO_CODE_NOT_FOUND), None, currency, basket)
        user_uses = 0
        if promo.rules.max_uses_per_user is not None:
            user_uses, _ = await self._usages.active_slots(promo.id, command.user_id)
        first_order = await self._first_order(promo, command.user_id, command.first_order)
        now = self._clock()
        quote = promo.evaluate(
            command.user_id,
            basket.subtotal,
            currency,
            now,
            user_uses,
            basket=basket,
            first_order=first_order,
        )
        campaign = await self._campaign_of(promo)
        if quote.applicable and campaign is not None:
            campaign_uses, _ = await self._campaign_slots(campaign, command.user_id)
            refusal = campaign.evaluate(now, currency, campaign_uses, quote.discount)
            if refusal:
                quote = Quote(0, refusal)
        return Validation(quote, promo, currency, basket)

    async def _campaign_of(self, promo: PromoCode) -> Campaign | None:
        """The code's campaign (None: the code is in none). Campaigns are never deleted, so a
        code naming one that is missing is a broken database, not a caller's mistake."""
        if not promo.campaign_id:
            return None
        campaign = None if self._campaigns is None else await self._campaigns.get(promo.campaign_id)
        if campaign is None:
            raise errors.FailedPrecondition(
                f"campaign {promo.campaign_id} of promo code {promo.code} does not exist",
                "CAMPAIGN_NOT_FOUND",
                {"campaign_id": promo.campaign_id},
            )
        return campaign

    async def _campaign_slots(self, campaign: Campaign, user_id: str) -> tuple[int, set[int]]:
        """The user's ACTIVE usages of the campaign and their slots; read only with a limit."""
        if campaign.rules.max_uses_per_user is None:
            return 0, set()
        return await self._usages.campaign_slots(campaign.id, user_id)

    # --- redeem ---------------------------------------------------------------------------

    async def redeem(self, command: RedeemPromoCode) -> Usage:
        violations = errors.Violations()
        code = checked(violations, "code", normalize_code, command.code)
        checked(violations, "user_id", lambda v: check_id(v, "user id"), command.user_id)
        given = check_cart_request(
            violations, command.order_amount, command.lines, command.shipping
        )
        rid = checked(violations, "redemption_id", rules.check_redemption_id, command.redemption_id)
        if command.user is not None and command.user.id != command.user_id:
            violations.add("user.id", "must equal user_id")
        violations.raise_if_any()
        assert code is not None and given is not None and rid is not None
        basket, currency, amount = given.basket, given.currency, given.basket.subtotal
        try:
            usage = await self._redeem(rid, code, command, given)
        except errors.DomainError:
            # Every answer but success first looks for a usage stored under the id: a replay
            # gets the stored outcome whatever changed since (the code, the user, the limits).
            # Success needs no look: its write collides with a stored usage's id, which then
            # answers (`_take`). One round trip fewer on every redemption.
            stored = await self._usages.get(rid)
            if stored is not None and stored.visible:
                usage = self._replay(stored, code, command.user_id, amount, currency, basket)
                return await self._with_snapshot(usage)
            if stored is not None and stored.voided:
                raise _voided(rid) from None
            raise
        return await self._with_snapshot(usage)

    async def _with_snapshot(self, usage: Usage) -> Usage:
        """The usage with the code's rules as redeemed; a usage stored before those were kept
        gets the code's current rules (read only for such a usage)."""
        if usage.code_snapshot is None:
            promo = await self._codes.get(usage.promo_code_id)
            if promo is not None:
                usage.code_snapshot = promo.snapshot()
        return usage

    async def _redeem(
        self, rid: str, code: str, command: RedeemPromoCode, given: CheckedCart
    ) -> Usage:
        basket, currency, amount = given.basket, given.currency, given.basket.subtotal
        user_id, caller_first_order = command.user_id, command.first_order
        user: UserSnapshot | None = None
        loop = asyncio.get_running_loop()
        give_up: float | None = None  # set at the first verdict that in-flight work may change
        pause = self._wait_step
        conflicts = 0
        seen_pending: frozenset[tuple[str, str]] = frozenset()
        while conflicts < _ATTEMPTS:
            promo = await self._codes.get_by_code(code)
            if promo is None:
                raise code_not_found(code)
            campaign = await self._campaign_of(promo)
            if await self._earlier_attempt_settled(promo, campaign, rid):
                continue
            if user is None and command.user is not None:
                # The caller (orders, the only workload allowed here) read the user for this
                # request: no second GetUser, one MongoDB read fewer in UserService.
                user = require_active(user_id, command.user)
            elif user is None:
                user = await self._users.active_user(user_id)
            user_uses, taken = 0, set[int]()
            per_user = promo.rules.max_uses_per_user
            if per_user is not None:
                user_uses, taken = await self._usages.active_slots(promo.id, user.id)
            now = self._clock()
            first_order = await self._first_order(promo, user.id, caller_first_order)
            quote = promo.evaluate(
                user.id, amount, currency, now, user_uses, basket=basket, first_order=first_order
            )
            quote, campaign_taken = await self._campaign_quote(
                campaign, quote, user.id, now, currency
            )
            if not quote.applicable:
                pending = frozenset((k, r.attempt) for k, r in promo.pending.items())
                if campaign is not None:
                    pending |= frozenset((k, r.attempt) for k, r in campaign.pending.items())
                stuck, seen_pending = pending == seen_pending, pending
                if await self._may_change(promo, campaign, quote.reason, stuck):
                    # Reservations in flight may still roll back: wait for them, then decide.
                    give_up = give_up or loop.time() + self._wait_budget()
                    if loop.time() < give_up:
                        await self._settle_overdue(promo, campaign)
                        await asyncio.sleep(pause)
                        pause = min(pause * 2, _MAX_PAUSE)
                        continue
                raise _refused(code, quote.reason, promo)
            usage = await self._take(
                (promo, campaign), rid, user, (basket, currency), quote, (taken, campaign_taken)
            )
            if usage is None:
                conflicts += 1
                continue  # the code changed meanwhile: read it again
            return usage
        raise _in_progress()

    async def _earlier_attempt_settled(
        self, promo: PromoCode, campaign: Campaign | None, rid: str
    ) -> bool:
        """Waits for (or settles) a reservation an earlier attempt of this id still holds on
        the code or on the campaign (running, or crashed before or after its code's steps);
        True when there was one: the caller reads again."""
        in_flight = promo.pending.get(rid)
        if in_flight is not None:
            await self._wait_settled(promo, rid, in_flight)
            return True
        if campaign is not None and (in_flight := campaign.pending.get(rid)) is not None:
            await self._wait_campaign_settled(campaign, rid, in_flight)
            return True
        return False

    async def _campaign_quote(
        self, campaign: Campaign | None, quote: Quote, user_id: str, now: datetime, currency: str
    ) -> tuple[Quote, set[int]]:
        """The code's quote, refused when the campaign's rules refuse it; and the campaign slots
        the user holds (read only when the campaign has a per-user limit)."""
        if not quote.applicable or campaign is None:
            return quote, set()
        campaign_uses, campaign_taken = await self._campaign_slots(campaign, user_id)
        refusal = campaign.evaluate(now, currency, campaign_uses, quote.discount)
        return (Quote(0, refusal) if refusal else quote), campaign_taken

    async def _may_change(
        self, promo: PromoCode, campaign: Campaign | None, reason: str, stuck: bool
    ) -> bool:
        """Whether the refusal `reason` may turn into a grant once reservations in flight on the
        document it is about (the code, or the campaign) are settled."""
        if reason in _UNCERTAIN:
            return await self._may_give_back(promo.pending, stuck)
        if reason in _CAMPAIGN_UNCERTAIN and campaign is not None:
            return await self._may_give_back(campaign.pending, stuck)
        return False

    async def _take(
        self,
        target: tuple[PromoCode, Campaign | None],
        rid: str,
        user: UserSnapshot,
        order: tuple[Cart, str],
        quote: Quote,
        taken: tuple[set[int], set[int]],
    ) -> Usage | None:
        """The protocol's steps; None when a reservation did not match (read again).

        reserve campaign -> reserve code -> write usage -> settle code -> settle campaign. The
        campaign comes first so that a crash leaves at most a campaign reservation without a
        code reservation (the sweep compensates it, deciding on the usage), never the reverse
        with a usage that the campaign did not count."""
        promo, campaign = target
        (basket, currency), now = order, self._clock()
        amount, discount = basket.subtotal, quote.discount
        attempt = self._new_id()
        until = self._until(now)
        reservation = Reservation(
            attempt, REDEEM, user.id, discount, now, until, campaign_id=promo.campaign_id
        )
        if campaign is not None:
            assert self._campaigns is not None  # _campaign_of found it there
            on_campaign = Reservation(
                attempt, REDEEM, user.id, discount, now, until, promo_code_id=promo.id
            )
            if not await self._campaigns.reserve(campaign, rid, on_campaign):  # reserve campaign
                return None
        if not await self._codes.reserve(promo, rid, reservation):  # reserve code
            await self._settle_campaign(campaign, rid, attempt, discount)  # compensate
            return None
        usage = Usage.redeem(
            rid, promo, user, amount, currency, discount, attempt, now, basket, quote.split
        )
        per_user = (
            promo.rules.max_uses_per_user,
            campaign.rules.max_uses_per_user if campaign is not None else None,
        )
        # Fenced (Aborted) or failed: the reservations stay for the sweep, which decides on the
        # usage stored (or not) and settles code and campaign alike.
        outcome, refusal = await self._write_usage(usage, per_user, taken)  # write usage
        if outcome is usage:
            await self._settle_quietly(promo.id, rid, attempt, None)  # settle code
            await self._settle_campaign_quietly(campaign, rid, attempt, None)  # settle campaign
            return usage
        await self._codes.settle(promo.id, rid, attempt, discount)  # compensate code
        await self._settle_campaign(campaign, rid, attempt, discount)  # compensate campaign
        if outcome is not None and outcome.voided:
            raise _voided(rid)  # a Release voided the id while we were reserving
        if outcome is None:
            if not refusal:
                raise _in_progress()  # slots kept changing under us: the caller retries
            if (
                refusal == PER_USER_LIMIT_REACHED
                and usage.first_order
                and await self._usages.first_order_taken(user.id)
            ):
                refusal = FIRST_ORDER_ONLY  # the slot taken was the user's first-order slot
            raise _refused(promo.code, refusal, promo)
        return self._replay(outcome, promo.code, user.id, amount, currency, basket)

    async def _settle_campaign(
        self, campaign: Campaign | None, rid: str, attempt: str, give_back: int | None
    ) -> None:
        if campaign is not None and self._campaigns is not None:
            await self._campaigns.settle(campaign.id, rid, attempt, give_back)

    async def _settle_campaign_quietly(
        self, campaign: Campaign | None, rid: str, attempt: str, give_back: int | None
    ) -> None:
        """The last step: decided already; if it fails, the sweep completes it from the usage."""
        try:
            await self._settle_campaign(campaign, rid, attempt, give_back)
        except Exception as exc:
            log.warning("campaign settle deferred to the sweep", redemption_id=rid, error=str(exc))

    async def _first_order(self, promo: PromoCode, user_id: str, caller_says: bool) -> bool:
        """Whether a first-order-only code may apply: the caller (the orders service, which
        knows the user's confirmed orders) says so and no usage holds the user's first-order
        slot. Only a quick answer: the unique slot written with the usage is the guarantee."""
        if not promo.rules.offer.first_order_only or not caller_says:
            return caller_says
        return not await self._usages.first_order_taken(user_id)

    async def _write_usage(
        self,
        usage: Usage,
        per_user: tuple[int | None, int | None],
        taken: tuple[set[int], set[int]],
    ) -> tuple[Usage | None, str]:
        """Step 2 ("write usage"). Returns (`usage`, "") when written, (the other visible usage
        holding its id, ""), or (None, the reason) when every per-user slot of the code or of
        the campaign is taken; (None, "") when the slots kept changing for too long.

        `per_user` and `taken` are the code's and the campaign's limit and slots held, read
        before the reservations. A collision re-reads them: a slot that was free at the read
        was taken meanwhile (a concurrent redemption of this user), or the first-order slot."""
        code_limit, campaign_limit = per_user
        code_taken, campaign_taken = taken
        tried: tuple[int | None, int | None] | None = None
        for _ in range(_ATTEMPTS):
            code_free = [None] if code_limit is None else _free_slots(code_limit, code_taken)
            campaign_free: list[int | None] = (
                [None] if campaign_limit is None else _free_slots(campaign_limit, campaign_taken)
            )
            if not code_free:
                return None, PER_USER_LIMIT_REACHED
            if not campaign_free:
                return None, CAMPAIGN_PER_USER_LIMIT_REACHED
            slots = (code_free[0], campaign_free[0])
            if slots == tried and usage.first_order:
                # The same free slots collided twice: it is the first-order slot that is held.
                return None, PER_USER_LIMIT_REACHED
            tried = slots
            claim = await self._usages.claim(usage, *slots)
            if claim.outcome == CLAIMED:
                return usage, ""
            if claim.outcome == EXISTS and claim.existing is not None:
                return claim.existing, ""
            if claim.outcome != SLOT_TAKEN:
                raise _in_progress()  # FENCED: the sweep rolled this attempt back
            if code_limit is not None:
                _, code_taken = await self._usages.active_slots(usage.promo_code_id, usage.user_id)
            if campaign_limit is not None:
                _, campaign_taken = await self._usages.campaign_slots(
                    usage.campaign_id, usage.user_id
                )
        return None, ""

    def _replay(
        self,
        stored: Usage,
        code: str,
        user_id: str,
        amount: int,
        currency: str,
        basket: Cart | None = None,
    ) -> Usage:
        if not stored.same_request(code, user_id, amount, currency, basket):
            raise errors.AlreadyExists(
                f"redemption {stored.id} exists for another code, user or amount",
                "REDEMPTION_CONFLICT",
                {"redemption_id": stored.id},
            )
        return stored

    async def _wait_settled(self, promo: PromoCode, rid: str, reservation: Reservation) -> None:
        """Another request holds a reservation of the code for this id: wait until it is settled
        (or settle it when its request has given up or died)."""

        async def current() -> Reservation | None:
            fresh = await self._codes.get(promo.id)
            return fresh.pending.get(rid) if fresh else None

        async def resolve() -> None:
            await self._sweeper.resolve(promo.id, rid, reservation)

        await self._wait_for(reservation, current, resolve)

    async def _wait_campaign_settled(
        self, campaign: Campaign, rid: str, reservation: Reservation
    ) -> None:
        """The same for a reservation of the campaign (its settle comes last)."""
        assert self._campaigns is not None
        campaigns = self._campaigns

        async def current() -> Reservation | None:
            fresh = await campaigns.get(campaign.id)
            return fresh.pending.get(rid) if fresh else None

        async def resolve() -> None:
            await self._sweeper.resolve_campaign(campaign.id, rid, reservation)

        await self._wait_for(reservation, current, resolve)

    async def _wait_for(
        self,
        reservation: Reservation,
        current: Callable[[], Awaitable[Reservation | None]],
        resolve: Callable[[], Awaitable[None]],
    ) -> None:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._wait_budget()
        while True:
            if self._overdue(reservation, self._clock()):
                await resolve()  # safe at any moment: it fences the attempt out first
                return
            await asyncio.sleep(self._wait_step)
            held = await current()
            if held is None or held.attempt != reservation.attempt:
                return
            if loop.time() > give_up:
                raise _in_progress()

    def _overdue(self, reservation: Reservation, now: datetime) -> bool:
        """Its request has given up (its deadline passed) or it is stale (its request died)."""
        gave_up = reservation.until is not None and now >= reservation.until
        return gave_up or self._sweeper.is_stale(reservation, now)

    def _wait_budget(self) -> float:
        """How long this request may wait for others: `wait_limit`, ending early enough before
        the caller's deadline for the answer to reach it."""
        left = deadlines.remaining()
        if left is None:
            return self._wait_limit
        return max(min(self._wait_limit, left - _ANSWER_MARGIN), 0.0)

    async def _may_give_back(self, pending: dict[str, Reservation], stuck: bool) -> bool:
        """Whether a reservation of the code (or of the campaign: the same rule, the same usages
        decide) may still return a use or budget: a release, or a
        redemption whose usage is not written yet (it may roll back). A redemption whose usage
        is written only waits to be finalized: waiting for it changes nothing. The usages are
        looked up only once the same reservations are seen twice in a row (`stuck`): while
        they come and go, one more short wait is cheaper than a query per pass."""
        redeems = {rid: r.attempt for rid, r in pending.items() if r.kind == REDEEM}
        if len(redeems) < len(pending):
            return True
        if not redeems:
            return False
        if not stuck:
            return True
        written = await self._usages.written_attempts(list(redeems))
        return any(written.get(rid) != attempt for rid, attempt in redeems.items())

    def _until(self, now: datetime) -> datetime | None:
        """When this request gives up: its caller's deadline, plus the time a MongoDB write sent
        just before it may still take to land."""
        left = deadlines.remaining()
        return None if left is None else now + timedelta(seconds=left + _LANDING)

    async def _settle_overdue(self, promo: PromoCode, campaign: Campaign | None) -> None:
        """Settles, on the spot, the reservations of the code and of its campaign whose request
        has given up (its deadline passed: it died with a killed replica, or its caller left)
        or that are stale."""
        now = self._clock()
        for rid, reservation in promo.pending.items():
            if self._overdue(reservation, now):
                await self._sweeper.resolve(promo.id, rid, reservation)
        if campaign is None:
            return
        for rid, reservation in campaign.pending.items():
            if self._overdue(reservation, now):
                await self._sweeper.resolve_campaign(campaign.id, rid, reservation)

    async def _settle_quietly(
        self, code_id: str, rid: str, attempt: str, give_back: int | None
    ) -> None:
        """The last step: the outcome is already decided; if it fails, the sweep completes it."""
        try:
            await self._codes.settle(code_id, rid, attempt, give_back)
        except Exception as exc:
            log.warning("settling deferred to the sweep", redemption_id=rid, error=str(exc))

    # --- release --------------------------------------------------------------------------

    async def release(self, command: ReleasePromoCode) -> Usage:
        violations = errors.Violations()
        rid = checked(violations, "redemption_id", rules.check_redemption_id, command.redemption_id)
        if len(command.reason) > rules.MAX_RELEASE_REASON_LENGTH:
            violations.add(
                "reason", f"must be at most {rules.MAX_RELEASE_REASON_LENGTH} characters"
            )
        violations.raise_if_any()
        assert rid is not None
        user: UserSnapshot | None = None
        for _ in range(_ATTEMPTS):
            usage = await self._usages.get(rid)
            if usage is None or not usage.visible:
                # Nothing redeemed under the id (yet): void it, so nothing ever will be.
                usage = await self._usages.void(rid)
            if usage is None:
                raise errors.NotFound(
                    f"no redemption {rid}", "REDEMPTION_NOT_FOUND", {"redemption_id": rid}
                )
            if usage.status == RELEASED:
                return usage
            promo = await self._codes.get(usage.promo_code_id)
            if promo is None:
                raise code_not_found(usage.promo_code_id)
            # The campaign counted this usage only if the usage says so: a usage redeemed before
            # campaigns were enforced was never counted there and gives nothing back to it.
            campaign = await self._campaign_of(promo) if usage.campaign_id else None
            if await self._redeem_left_settled(promo, campaign, usage):
                continue
            if user is None:
                user = await self._users.get_user(usage.user_id) or usage.user
            released = await self._release_once(usage, promo, campaign, user, command.reason)
            if released is not None:
                return released
        raise errors.Aborted(
            "the redemption is being changed concurrently; retry", "CONCURRENT_UPDATE"
        )

    async def _redeem_left_settled(
        self, promo: PromoCode, campaign: Campaign | None, usage: Usage
    ) -> bool:
        """A reservation of the id still on the code or the campaign: the redemption that wrote
        `usage` but has not settled (settled here: its verdict is the usage), or another
        request's (waited for). True when there was one: the caller reads again."""
        rid = usage.id
        in_flight = promo.pending.get(rid)
        if in_flight is not None:
            if in_flight.kind == REDEEM and in_flight.attempt == usage.attempt:
                await self._codes.settle(promo.id, rid, in_flight.attempt, None)
            else:
                await self._wait_settled(promo, rid, in_flight)
            return True
        if campaign is not None and (in_flight := campaign.pending.get(rid)) is not None:
            if in_flight.kind == REDEEM and in_flight.attempt == usage.attempt:
                await self._settle_campaign(campaign, rid, in_flight.attempt, None)
            else:
                await self._wait_campaign_settled(campaign, rid, in_flight)
            return True
        return False

    async def _release_once(
        self,
        usage: Usage,
        promo: PromoCode,
        campaign: Campaign | None,
        user: UserSnapshot,
        reason: str,
    ) -> Usage | None:
        """Release's steps, the mirror of Redeem's: reserve a release on the campaign, then on
        the code; mark the usage RELEASED (its slots freed); give back on the code, then on the
        campaign. None when a step did not match (read again)."""
        rid, now, attempt = usage.id, self._clock(), self._new_id()
        until = self._until(now)
        reservation = Reservation(
            attempt, RELEASE, usage.user_id, usage.discount, now, until, usage.campaign_id
        )
        if campaign is not None:
            assert self._campaigns is not None
            on_campaign = Reservation(
                attempt, RELEASE, usage.user_id, usage.discount, now, until, "", promo.id
            )
            if not await self._campaigns.begin_release(campaign.id, rid, on_campaign):
                return None
        if not await self._codes.begin_release(promo.id, rid, reservation):
            await self._settle_campaign(campaign, rid, attempt, None)
            return None
        usage.release(attempt, reason, promo, user, now)
        if not await self._usages.release(usage):
            await self._codes.settle(promo.id, rid, attempt, None)
            await self._settle_campaign(campaign, rid, attempt, None)
            return None  # released by someone else meanwhile: answer with the stored one
        await self._settle_quietly(promo.id, rid, attempt, usage.discount)
        await self._settle_campaign_quietly(campaign, rid, attempt, usage.discount)
        return usage

    # --- list -----------------------------------------------------------------------------

    async def list_usages(self, command: ListPromoCodeUsages) -> UsagePage:
        violations = errors.Violations()
        if command.promo_code_id:
            checked(
                violations,
                "promo_code_id",
                lambda v: check_id(v, "promo code id"),
                command.promo_code_id,
            )
        if command.user_id:
            checked(violations, "user_id", lambda v: check_id(v, "user id"), command.user_id)
        if command.status not in ("", ACTIVE, RELEASED):
            violations.add("status", "is not a PromoCodeUsageStatus")
        violations.raise_if_any()
        query = UsageQuery(command.promo_code_id, command.user_id, command.status)
        page = page_request(
            command.page_size,
            command.page_token,
            {
                "promo_code_id": query.promo_code_id,
                "user_id": query.user_id,
                "status": query.status,
            },
        )
        usages, last = await self._usages.list_page(query, page.after_id, page.size)
        return UsagePage(usages, page.next_token(last) if last else "")
