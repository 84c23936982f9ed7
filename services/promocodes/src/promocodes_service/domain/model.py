"""The aggregates: PromoCode (rules, counters, reservations in flight) and Usage (a redemption).

Counters of a code (`uses`, `discount_granted`) count ACTIVE usages plus reservations in flight.
A reservation (`pending[redemption_id]`) is the first step of a redemption or a release; it names
its `attempt`, so exactly one party can settle it (DESIGN.md, consistency without transactions).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

from promo_libs.users import UserSnapshot
from promocodes_service.domain.cart import FIRST_ORDER_ONLY, Cart, Offer, Split, split
from promocodes_service.domain.cart import conditions as cart_conditions
from promocodes_service.domain.events import (
    CodeEvent,
    CodeSnapshot,
    LineShare,
    PromoCodeCreated,
    PromoCodeDeactivated,
    PromoCodeRedeemed,
    PromoCodeReleased,
    PromoCodeUpdated,
    UsageEvent,
    UsageSnapshot,
)
from promocodes_service.domain.rules import Discount, FixedAmount, Percentage

REDEEM = "redeem"
RELEASE = "release"

ACTIVE = "ACTIVE"
RELEASED = "RELEASED"
# A redemption id whose reservation the sweep rolled back before its usage was written:
# it fences that attempt out. Never shown to callers (it reads as "no usage").
ABANDONED = "ABANDONED"
# A redemption id released before any usage was stored under it (its order gave up on it, e.g. a
# sweep rejected the order while a late Redeem was still on its way): a tombstone that refuses
# every later Redeem with the id, so no use is taken that nobody would give back. Never taken
# over, never shown as a usage.
VOIDED = "VOIDED"
REDEMPTION_VOIDED = "REDEMPTION_VOIDED"

# Reasons (promo.v1.ErrorReason names without prefix), in the order the rules are checked.
PROMO_CODE_NOT_FOUND = "PROMO_CODE_NOT_FOUND"
PROMO_CODE_INACTIVE = "PROMO_CODE_INACTIVE"
PROMO_CODE_NOT_STARTED = "PROMO_CODE_NOT_STARTED"
PROMO_CODE_EXPIRED = "PROMO_CODE_EXPIRED"
USER_NOT_ELIGIBLE = "USER_NOT_ELIGIBLE"
CURRENCY_MISMATCH = "CURRENCY_MISMATCH"
ORDER_BELOW_MINIMUM = "ORDER_BELOW_MINIMUM"
PROMO_CODE_EXHAUSTED = "PROMO_CODE_EXHAUSTED"
PER_USER_LIMIT_REACHED = "PER_USER_LIMIT_REACHED"
BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"
# The campaign's own rules, checked after every rule of the code (domain/campaign.py).
CAMPAIGN_NOT_STARTED = "CAMPAIGN_NOT_STARTED"
CAMPAIGN_EXPIRED = "CAMPAIGN_EXPIRED"
CAMPAIGN_EXHAUSTED = "CAMPAIGN_EXHAUSTED"
CAMPAIGN_PER_USER_LIMIT_REACHED = "CAMPAIGN_PER_USER_LIMIT_REACHED"
CAMPAIGN_BUDGET_EXHAUSTED = "CAMPAIGN_BUDGET_EXHAUSTED"


class UpdateNotAllowed(Exception):
    """The change would break an invariant of a code that has been used."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field  # the offending field of the request's resource, when one is


@dataclass(frozen=True, slots=True)
class RuleSet:
    """Everything an operator sets. Money amounts are in `currency` (None: the code has none)."""

    description: str
    discount: Discount
    currency: str | None
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    min_order_amount: int | None = None
    max_uses: int | None = None
    max_uses_per_user: int | None = None
    budget: int | None = None
    eligible_user_ids: tuple[str, ...] = ()
    active: bool = True
    offer: Offer = field(default_factory=Offer)


@dataclass(frozen=True, slots=True)
class Reservation:
    attempt: str
    kind: str  # REDEEM or RELEASE
    user_id: str
    discount: int
    at: datetime
    # When the request that made it gives up (its caller's deadline): past it, the request can
    # no longer complete its steps itself, so another request may settle it at once instead of
    # waiting for the sweep. None: its request had no deadline.
    until: datetime | None = None
    # The other document of a campaign code's redemption, so that whoever settles one of the two
    # reservations (same attempt) settles the other by the same verdict: on a code's
    # reservation the campaign's id, on a campaign's reservation the code's id ("" otherwise).
    campaign_id: str = ""
    promo_code_id: str = ""


@dataclass(frozen=True, slots=True)
class Quote:
    """The outcome of the rules for one order: a discount, or the first failing rule's reason."""

    discount: int
    reason: str = ""
    split: Split | None = None  # where the discount falls on the cart; None when refused

    @property
    def applicable(self) -> bool:
        return not self.reason


@dataclass
class PromoCode:
    id: str
    code: str
    rules: RuleSet
    created_at: datetime
    updated_at: datetime
    batch_id: str = ""
    campaign_id: str = ""  # immutable: the campaign whose limits the code shares
    version: int = 1  # of the rules; redemptions do not change it
    uses: int = 0
    discount_granted: int = 0
    redeemed_total: int = 0  # reservations ever made: > 0 means "has been used"
    pending: dict[str, Reservation] = field(default_factory=dict)
    events: list[CodeEvent] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def create(
        cls,
        code_id: str,
        code: str,
        rules: RuleSet,
        now: datetime,
        batch_id: str = "",
        campaign_id: str = "",
    ) -> PromoCode:
        promo = cls(
            id=code_id,
            code=code,
            rules=dataclasses.replace(rules, active=True),
            created_at=now,
            updated_at=now,
            batch_id=batch_id,
            campaign_id=campaign_id,
        )
        promo.events.append(PromoCodeCreated(promo.snapshot(), now))
        return promo

    @property
    def used(self) -> bool:
        return self.redeemed_total > 0

    def snapshot(self) -> CodeSnapshot:
        rules = self.rules
        percentage = rules.discount if isinstance(rules.discount, Percentage) else None
        fixed = rules.discount if isinstance(rules.discount, FixedAmount) else None
        return CodeSnapshot(
            id=self.id,
            code=self.code,
            discount_type="PERCENTAGE" if percentage else "FIXED_AMOUNT",
            basis_points=percentage.basis_points if percentage else 0,
            fixed_amount_minor=fixed.amount if fixed else 0,
            max_discount_minor=percentage.max_discount if percentage else None,
            currency=rules.currency,
            min_order_amount_minor=rules.min_order_amount,
            max_uses=rules.max_uses,
            max_uses_per_user=rules.max_uses_per_user,
            budget_minor=rules.budget,
            batch_id=self.batch_id,
            active=rules.active,
            valid_from=rules.valid_from,
            valid_until=rules.valid_until,
            created_at=self.created_at,
            campaign_id=self.campaign_id,
        )

    def evaluate(
        self,
        user_id: str,
        amount: int,
        currency: str,
        now: datetime,
        user_active_uses: int,
        *,
        basket: Cart | None = None,
        first_order: bool = False,
    ) -> Quote:
        """The rules in the documented order (promo_codes.proto); changes nothing.

        `basket` is the cart (None: the one-line cart of `amount`); `amount` is its subtotal.
        `first_order` is the caller's word that the user has no confirmed order; a code for
        first orders only never applies without it (in the merchant's favour)."""
        basket = basket if basket is not None else Cart.of_amount(amount)
        rules = self.rules
        if not rules.active:
            return Quote(0, PROMO_CODE_INACTIVE)
        if rules.valid_from is not None and now < rules.valid_from:
            return Quote(0, PROMO_CODE_NOT_STARTED)
        if rules.valid_until is not None and now >= rules.valid_until:
            return Quote(0, PROMO_CODE_EXPIRED)
        if rules.eligible_user_ids and user_id not in rules.eligible_user_ids:
            return Quote(0, USER_NOT_ELIGIBLE)
        if rules.currency is not None and currency != rules.currency:
            return Quote(0, CURRENCY_MISMATCH)
        if rules.min_order_amount is not None and amount < rules.min_order_amount:
            return Quote(0, ORDER_BELOW_MINIMUM)
        if rules.offer.first_order_only and not first_order:
            return Quote(0, FIRST_ORDER_ONLY)
        cart_reason = cart_conditions(rules.offer, basket)
        if cart_reason:
            return Quote(0, cart_reason)
        if rules.max_uses is not None and self.uses >= rules.max_uses:
            return Quote(0, PROMO_CODE_EXHAUSTED)
        if rules.max_uses_per_user is not None and user_active_uses >= rules.max_uses_per_user:
            return Quote(0, PER_USER_LIMIT_REACHED)
        shares = split(rules.offer, rules.discount, basket)
        if rules.budget is not None and self.discount_granted + shares.total > rules.budget:
            return Quote(0, BUDGET_EXHAUSTED)
        return Quote(shares.total, split=shares)

    def change_rules(self, new: RuleSet, fields: tuple[str, ...], now: datetime) -> tuple[str, ...]:
        """Applies `new`; returns the fields that really changed. What may change once the code
        has been used: anything except the currency, max_uses below the current uses, a budget
        below the discount granted, and max_uses_per_user other than raised (lowering it or
        setting it where it was unlimited would let existing usages escape the new limit)."""
        old = self.rules
        changed = tuple(f for f in fields if _rule_value(old, f) != _rule_value(new, f))
        if not changed:
            return ()
        if new.max_uses is not None and new.max_uses < self.uses:
            raise UpdateNotAllowed(f"max_uses cannot go below the current uses ({self.uses})")
        if new.budget is not None and new.budget < self.discount_granted:
            raise UpdateNotAllowed(
                f"budget cannot go below the discount granted ({self.discount_granted})"
            )
        if self.used and requires_unused(old, new):
            if new.currency != old.currency:
                raise UpdateNotAllowed("the currency cannot change after the first redemption")
            raise UpdateNotAllowed(
                "after the first redemption max_uses_per_user can only be raised or removed"
            )
        self.rules = new
        self.updated_at = now
        self.version += 1
        self.events.append(PromoCodeUpdated(self.snapshot(), changed, now))
        return changed

    def deactivate(self, now: datetime) -> bool:
        if not self.rules.active:
            return False
        self.rules = dataclasses.replace(self.rules, active=False)
        self.updated_at = now
        self.version += 1
        self.events.append(PromoCodeDeactivated(self.snapshot(), now))
        return True


def requires_unused(old: RuleSet, new: RuleSet) -> bool:
    """Changes only a never-redeemed code may take: another currency, or a per-user limit that
    is new or lower (usages made under the old scheme would escape it)."""
    if new.currency != old.currency:
        return True
    return new.max_uses_per_user is not None and (
        old.max_uses_per_user is None or new.max_uses_per_user < old.max_uses_per_user
    )


OFFER_FIELDS = frozenset(
    {
        "target",
        "targeting",
        "allocation",
        "max_quantity",
        "min_item_quantity",
        "min_item_amount",
        "first_order_only",
    }
)


def _rule_value(rules: RuleSet, name: str) -> object:
    if name == "min_item_amount":
        return (rules.offer.min_item_amount, rules.currency)
    if name in OFFER_FIELDS:
        return getattr(rules.offer, name)
    if name in ("percentage", "fixed_amount"):
        return (rules.discount, rules.currency)
    if name in ("min_order_amount", "budget"):
        return (getattr(rules, name), rules.currency)
    return getattr(rules, name)


@dataclass
class Usage:
    """One redemption: id = redemption id = order id."""

    id: str
    promo_code_id: str
    code: str
    user_id: str
    currency: str
    order_amount: int
    discount: int
    created_at: datetime
    user: UserSnapshot
    status: str = ACTIVE
    release_reason: str = ""
    released_at: datetime | None = None
    attempt: str = ""  # the reservation attempt that wrote it
    released_by: str = ""  # the release attempt that released it
    version: int = 1
    # The cart with each line's share (empty for usages stored before carts), and shipping.
    lines: tuple[LineShare, ...] = ()
    shipping: int = 0
    shipping_discount: int = 0
    # Holds the user's one first-order slot (a code for first orders only) while ACTIVE.
    first_order: bool = False
    # The code's rules when it was redeemed (None for usages stored before they were kept):
    # what the order's events carry, answered again to a replayed Redeem.
    code_snapshot: CodeSnapshot | None = None
    # The code's campaign ("" none): an ACTIVE usage holds one of the user's campaign slots.
    campaign_id: str = ""
    events: list[UsageEvent] = field(default_factory=list, compare=False, repr=False)

    @classmethod
    def redeem(
        cls,
        redemption_id: str,
        promo: PromoCode,
        user: UserSnapshot,
        amount: int,
        currency: str,
        discount: int,
        attempt: str,
        now: datetime,
        basket: Cart | None = None,
        shares: Split | None = None,
    ) -> Usage:
        basket = basket if basket is not None else Cart.of_amount(amount)
        shares = shares if shares is not None else Split(discount, (discount,))
        code_snapshot = promo.snapshot()
        usage = cls(
            id=redemption_id,
            promo_code_id=promo.id,
            code=promo.code,
            user_id=user.id,
            currency=currency,
            order_amount=amount,
            discount=discount,
            created_at=now,
            user=user,
            attempt=attempt,
            lines=tuple(
                LineShare(
                    line.sku,
                    line.quantity,
                    line.unit_price,
                    share,
                    line.product_id,
                    line.category_ids,
                )
                for line, share in zip(basket.lines, shares.lines, strict=True)
            ),
            shipping=basket.shipping,
            shipping_discount=shares.shipping,
            first_order=promo.rules.offer.first_order_only,
            code_snapshot=code_snapshot,
            campaign_id=promo.campaign_id,
        )
        usage.events.append(PromoCodeRedeemed(usage.snapshot(), code_snapshot, user, now))
        return usage

    @property
    def visible(self) -> bool:
        return self.status not in (ABANDONED, VOIDED)

    @property
    def voided(self) -> bool:
        return self.status == VOIDED

    def same_request(
        self, code: str, user_id: str, amount: int, currency: str, basket: Cart | None = None
    ) -> bool:
        """A retry must name the same code, user and cart (an amount-only retry of a usage
        stored before carts compares the amount alone)."""
        if (self.code, self.user_id, self.order_amount, self.currency) != (
            code,
            user_id,
            amount,
            currency,
        ):
            return False
        if basket is None or not self.lines:
            return True
        mine = tuple(
            (s.sku, s.quantity, s.unit_price, s.product_id, s.category_ids) for s in self.lines
        )
        theirs = tuple(
            (x.sku, x.quantity, x.unit_price, x.product_id, x.category_ids) for x in basket.lines
        )
        return (mine, self.shipping) == (theirs, basket.shipping)

    def release(
        self, attempt: str, reason: str, promo: PromoCode, user: UserSnapshot, now: datetime
    ) -> bool:
        if self.status != ACTIVE:
            return False
        self.status = RELEASED
        self.release_reason = reason
        self.released_at = now
        self.released_by = attempt
        self.version += 1
        self.events.append(PromoCodeReleased(self.snapshot(), promo.snapshot(), user, now))
        return True

    def snapshot(self) -> UsageSnapshot:
        return UsageSnapshot(
            id=self.id,
            promo_code_id=self.promo_code_id,
            code=self.code,
            user_id=self.user_id,
            currency=self.currency,
            order_amount=self.order_amount,
            discount=self.discount,
            status=self.status,
            release_reason=self.release_reason,
            created_at=self.created_at,
            released_at=self.released_at,
            lines=self.lines,
            shipping=self.shipping,
            shipping_discount=self.shipping_discount,
            campaign_id=self.campaign_id,
        )
