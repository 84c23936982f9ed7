"""The Order aggregate: money in minor units, the state machine and the events it records.

    PENDING -> CONFIRMED -> CANCELLED
    PENDING -> REJECTED

Two internal markers sit beside the public status, so that every crash leaves a state the sweep
can finish (DESIGN.md, Consistency without multi-document transactions):
- `cancel_requested_at`: a CONFIRMED order whose cancellation was asked for and whose promo code
  usage may not be released yet; it becomes CANCELLED once the release is confirmed.
- `sweep_due_at`: when the sweep must look at the order: a PENDING order whose saga may have
  died, a cancellation that may be half done, or a REJECTED order whose redemption id is released
  once more in case a concurrent attempt redeemed it after all.

Every transition bumps `version` (the compare-and-set token, and the event's aggregate version).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

from orders_service.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderEvent,
    OrderLine,
    OrderRejected,
    OrderSnapshot,
    PromoCodeSnapshot,
)
from promo_libs.users import UserSnapshot

PENDING = "PENDING"
CONFIRMED = "CONFIRMED"
REJECTED = "REJECTED"
CANCELLED = "CANCELLED"
STATUSES = (PENDING, CONFIRMED, REJECTED, CANCELLED)


class CurrencyMismatch(ValueError):
    pass


class InvalidTransition(Exception):
    """A transition the order's current state does not allow (a bug of the caller)."""


@dataclass(frozen=True, slots=True)
class Money:
    currency: str
    amount_minor: int

    def __sub__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise CurrencyMismatch(f"{self.currency} - {other.currency}")
        return Money(self.currency, self.amount_minor - other.amount_minor)

    def zero(self) -> Money:
        return Money(self.currency, 0)


@dataclass
class Order:
    id: str
    user_id: str
    subtotal: Money
    promo_code: str  # upper case; "" without a code
    idempotency_key: str
    status: str
    created_at: datetime
    updated_at: datetime
    user: UserSnapshot
    discount_minor: int = 0
    promo_code_id: str = ""
    usage_id: str = ""
    promo: PromoCodeSnapshot | None = None
    rejection_reason: str = ""
    cancellation_reason: str = ""
    confirmed_at: datetime | None = None
    cancelled_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    sweep_due_at: datetime | None = None
    version: int = 1
    # The cart: lines with their discount shares (orders stored before carts have none),
    # shipping (part of the subtotal) and its share; whether the user had no confirmed order
    # when it was placed (decided once, so every retry of the saga passes the same answer).
    lines: tuple[OrderLine, ...] = ()
    shipping_minor: int = 0
    shipping_discount_minor: int = 0
    first_order: bool = False
    # The applied code's campaign, as Redeem answered it ("" without a code, for a code outside
    # campaigns, and for orders stored before campaigns).
    campaign_id: str = ""
    stored_version: int = field(default=0, compare=False, repr=False)
    events: list[OrderEvent] = field(default_factory=list, compare=False, repr=False)

    # --- money ------------------------------------------------------------------------------

    @property
    def discount(self) -> Money:
        return Money(self.subtotal.currency, self.discount_minor)

    @property
    def total(self) -> Money:
        return self.subtotal - self.discount

    # --- creation ---------------------------------------------------------------------------

    @classmethod
    def place(
        cls,
        order_id: str,
        user: UserSnapshot,
        subtotal: Money,
        promo_code: str,
        idempotency_key: str,
        now: datetime,
        sweep_due_at: datetime,
        lines: tuple[OrderLine, ...] = (),
        shipping_minor: int = 0,
        first_order: bool = False,
    ) -> Order:
        """A new order: PENDING while its promo code is redeemed, CONFIRMED at once without one.
        Without lines it is the one line of its subtotal."""
        if not lines:
            lines = (OrderLine("", 1, subtotal.amount_minor),)
        if sum(line.amount for line in lines) + shipping_minor != subtotal.amount_minor:
            raise InvalidTransition("the lines and shipping do not add up to the subtotal")
        order = cls(
            id=order_id,
            user_id=user.id,
            subtotal=subtotal,
            promo_code=promo_code,
            idempotency_key=idempotency_key,
            status=PENDING,
            created_at=now,
            updated_at=now,
            user=user,
            sweep_due_at=sweep_due_at if promo_code else None,
            lines=lines,
            shipping_minor=shipping_minor,
            first_order=first_order,
        )
        order.events.append(OrderCreated(order.snapshot(), user, order.version, now))
        if not promo_code:
            order._confirm(now)
        return order

    def same_request(
        self,
        user_id: str,
        subtotal: Money,
        promo_code: str,
        idempotency_key: str,
        lines: tuple[OrderLine, ...] = (),
        shipping_minor: int = 0,
    ) -> bool:
        """Same user, amount, code and key; and the same cart unless either side has none
        (an order stored before carts, or an amount-only retry)."""
        same = (self.user_id, self.subtotal, self.promo_code, self.idempotency_key) == (
            user_id,
            subtotal,
            promo_code,
            idempotency_key,
        )
        if not same or not lines:
            return same
        mine = tuple(dataclasses.replace(line, discount=0) for line in self.lines)
        return (mine, self.shipping_minor) == (lines, shipping_minor)

    # --- the saga ---------------------------------------------------------------------------

    def confirm_redemption(
        self,
        usage_id: str,
        promo: PromoCodeSnapshot,
        discount: Money,
        now: datetime,
        line_shares: tuple[int, ...] = (),
        shipping_share: int = 0,
    ) -> None:
        """The split from PromoCodeService is stored on the lines, after checking it is exact:
        one share per line, each within its line, adding up with shipping to the discount. A
        usage without a split (a code service before carts) puts it all on a one-line order."""
        if self.status != PENDING:
            raise InvalidTransition(f"order {self.id} is {self.status}, not PENDING")
        if discount.currency != self.subtotal.currency:
            raise CurrencyMismatch(f"discount in {discount.currency}")
        if not 0 <= discount.amount_minor <= self.subtotal.amount_minor:
            raise InvalidTransition(f"discount {discount.amount_minor} outside the subtotal")
        if not line_shares and len(self.lines) == 1 and not self.shipping_minor:
            line_shares = (discount.amount_minor,)
        if (
            len(line_shares) != len(self.lines)
            or sum(line_shares) + shipping_share != discount.amount_minor
            or not 0 <= shipping_share <= self.shipping_minor
            or any(
                not 0 <= s <= line.amount
                for s, line in zip(line_shares, self.lines, strict=False)  # lengths checked above
            )
        ):
            raise InvalidTransition(f"the discount split of order {self.id} is not exact")
        self.lines = tuple(
            dataclasses.replace(line, discount=share)
            for line, share in zip(self.lines, line_shares, strict=True)
        )
        self.shipping_discount_minor = shipping_share
        self.usage_id = usage_id
        self.promo_code_id = promo.id
        self.promo = promo
        self.campaign_id = promo.campaign_id
        self.discount_minor = discount.amount_minor
        self._confirm(now)

    def _confirm(self, now: datetime) -> None:
        self.status = CONFIRMED
        self.confirmed_at = now
        self.sweep_due_at = None
        self._changed(now)
        self.events.append(
            OrderConfirmed(self.snapshot(), self.user, self.promo, self.version, now)
        )

    def reject(self, reason: str, promo_code_id: str, now: datetime, recheck_at: datetime) -> None:
        """The code did not apply. The order stays for audit; at `recheck_at` the sweep releases
        its redemption id once more, in case a concurrent attempt redeemed it after all."""
        if self.status != PENDING:
            raise InvalidTransition(f"order {self.id} is {self.status}, not PENDING")
        self.status = REJECTED
        self.rejection_reason = reason
        self.promo_code_id = promo_code_id
        self.discount_minor = 0
        self.sweep_due_at = recheck_at
        self._changed(now)
        self.events.append(OrderRejected(self.snapshot(), self.user, self.version, now))

    def rejection_rechecked(self, now: datetime) -> None:
        if self.status != REJECTED:
            raise InvalidTransition(f"order {self.id} is {self.status}, not REJECTED")
        self.sweep_due_at = None
        self.version += 1  # no event: nothing anyone outside can see changed

    # --- cancellation -----------------------------------------------------------------------

    @property
    def cancelling(self) -> bool:
        return self.status == CONFIRMED and self.cancel_requested_at is not None

    @property
    def needs_release(self) -> bool:
        return bool(self.usage_id)

    def request_cancel(self, reason: str, now: datetime, sweep_due_at: datetime) -> None:
        """First half of a cancellation with a redemption to release: the intent is stored, so a
        crash before the release is finished by the sweep. The public status stays CONFIRMED."""
        if self.status != CONFIRMED or self.cancel_requested_at is not None:
            raise InvalidTransition(f"order {self.id} cannot start a cancellation")
        self.cancellation_reason = reason
        self.cancel_requested_at = now
        self.sweep_due_at = sweep_due_at
        self.version += 1

    def cancel(self, reason: str, now: datetime) -> None:
        """Cancels a CONFIRMED order whose redemption (if any) is released."""
        if self.status != CONFIRMED:
            raise InvalidTransition(f"order {self.id} is {self.status}, not CONFIRMED")
        if self.cancel_requested_at is not None and reason != self.cancellation_reason:
            raise InvalidTransition("a cancellation with another reason is in progress")
        self.status = CANCELLED
        self.cancellation_reason = reason
        self.cancelled_at = now
        self.sweep_due_at = None
        self._changed(now)
        self.events.append(
            OrderCancelled(self.snapshot(), self.user, self.promo, self.version, now)
        )

    # --- helpers ----------------------------------------------------------------------------

    def _changed(self, now: datetime) -> None:
        self.updated_at = now
        self.version += 1

    def snapshot(self) -> OrderSnapshot:
        return OrderSnapshot(
            id=self.id,
            user_id=self.user_id,
            currency=self.subtotal.currency,
            subtotal_minor=self.subtotal.amount_minor,
            discount_minor=self.discount_minor,
            total_minor=self.total.amount_minor,
            promo_code=self.promo_code,
            promo_code_id=self.promo_code_id,
            usage_id=self.usage_id,
            status=self.status,
            rejection_reason=self.rejection_reason,
            cancellation_reason=self.cancellation_reason,
            idempotency_key=self.idempotency_key,
            created_at=self.created_at,
            updated_at=self.updated_at,
            confirmed_at=self.confirmed_at,
            cancelled_at=self.cancelled_at,
            lines=self.lines,
            shipping_minor=self.shipping_minor,
            shipping_discount_minor=self.shipping_discount_minor,
            campaign_id=self.campaign_id,
        )
