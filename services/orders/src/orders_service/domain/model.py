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

from dataclasses import dataclass, field
from datetime import datetime

from orders_service.domain.events import (
    OrderCancelled,
    OrderConfirmed,
    OrderCreated,
    OrderEvent,
    OrderRejected,
    OrderSnapshot,
    PromoCodeSnapshot,
    UserSnapshot,
)

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
    ) -> Order:
        """A new order: PENDING while its promo code is redeemed, CONFIRMED at once without one."""
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
        )
        order.events.append(OrderCreated(order.snapshot(), user, order.version, now))
        if not promo_code:
            order._confirm(now)
        return order

    def same_request(
        self, user_id: str, subtotal: Money, promo_code: str, idempotency_key: str
    ) -> bool:
        return (self.user_id, self.subtotal, self.promo_code, self.idempotency_key) == (
            user_id,
            subtotal,
            promo_code,
            idempotency_key,
        )

    # --- the saga ---------------------------------------------------------------------------

    def confirm_redemption(
        self, usage_id: str, promo: PromoCodeSnapshot, discount: Money, now: datetime
    ) -> None:
        if self.status != PENDING:
            raise InvalidTransition(f"order {self.id} is {self.status}, not PENDING")
        if discount.currency != self.subtotal.currency:
            raise CurrencyMismatch(f"discount in {discount.currency}")
        if not 0 <= discount.amount_minor <= self.subtotal.amount_minor:
            raise InvalidTransition(f"discount {discount.amount_minor} outside the subtotal")
        self.usage_id = usage_id
        self.promo_code_id = promo.id
        self.promo = promo
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
        )
