"""The order use cases: CreateOrder as a saga across PromoCodeService, Get, List and Cancel.

CreateOrder (DESIGN.md, Consistency without multi-document transactions): the order is inserted
PENDING under its idempotency key (a unique index decides between concurrent requests), the code
is redeemed with the order id as redemption id, then the order is CONFIRMED or REJECTED by a
compare-and-set on its version. Any step may be interrupted: the same key resumes the saga (the
redemption is idempotent by id), and the sweep resumes what nobody retries. When two resumptions
race, the compare-and-set picks one outcome; the loser releases what it redeemed.

Deadlines (issue 12, "a use leaked for ever"): the Redeem step -- its wait for a bulkhead slot
included -- is bounded by the caller's deadline, so a Redeem never starts after the caller gave
up (and long after the sweep of another replica may have settled the order). The steps after
it (record the outcome, give the redemption back) run detached from the caller's deadline, with
a budget of their own: they must complete after the caller left, or the use stays taken. The
sweep's recheck of a REJECTED order releases its id, which voids it at PromoCodeService: a
Redeem that still arrives later is refused, whatever replica sent it.

Each use case raises promo_libs.errors with stable reasons; the gRPC layer maps them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from orders_service.domain import rules
from orders_service.domain.commands import CancelOrder, CreateOrder, ListOrders
from orders_service.domain.events import OrderLine
from orders_service.domain.model import (
    CANCELLED,
    CONFIRMED,
    PENDING,
    REJECTED,
    STATUSES,
    Money,
    Order,
)
from orders_service.domain.ports import (
    DuplicateIdempotencyKey,
    OrderCursor,
    OrderQuery,
    OrderRepository,
    OutcomeUnknown,
    PromoCodes,
    Redeemed,
    Redemption,
    VersionConflict,
)
from promo_libs import carts, deadlines, errors
from promo_libs.carts import MoneyValue
from promo_libs.errors import checked
from promo_libs.identifiers import check_currency, check_id
from promo_libs.identity import require_acting_for
from promo_libs.logging import get_logger
from promo_libs.pagination import page_request
from promo_libs.users import UserDirectory, UserSnapshot

log = get_logger(__name__)

_ATTEMPTS = 8


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[Order]
    next_page_token: str


# A checked cart: its lines (without shares yet) and its shipping amount.
Cart = tuple[tuple[OrderLine, ...], int]


async def _no() -> bool:
    """An order without a code needs no look at the user's earlier orders."""
    return False


def order_not_found(order_id: str) -> errors.NotFound:
    return errors.NotFound(f"order {order_id} does not exist", "ORDER_NOT_FOUND", {"id": order_id})


def rejection_error(order: Order) -> errors.FailedPrecondition:
    """The error a REJECTED order answers with, the same every time it is asked."""
    return errors.FailedPrecondition(
        f"promo code {order.promo_code} does not apply: {order.rejection_reason}",
        order.rejection_reason,
        {"order_id": order.id},
    )


def unavailable(dependency: str, order_id: str = "") -> errors.Unavailable:
    metadata = {"dependency": dependency}
    if order_id:
        metadata["order_id"] = order_id
    return errors.Unavailable(
        f"{dependency} did not answer; retry with the same idempotency key",
        "DEPENDENCY_UNAVAILABLE",
        metadata,
    )


class Orders:
    def __init__(
        self,
        orders: OrderRepository,
        users: UserDirectory,
        promo_codes: PromoCodes,
        new_id: Callable[[], str],
        clock: Callable[[], datetime],
        stale_after: timedelta,
    ) -> None:
        self._orders = orders
        self._users = users
        self._promo_codes = promo_codes
        self._new_id = new_id
        self._clock = clock
        self.stale_after = stale_after
        # Sagas running in this process, by order id: a concurrent retry waits for the running
        # one instead of redeeming again.
        self._running: dict[str, asyncio.Task[Order]] = {}

    # --- CreateOrder ------------------------------------------------------------------------

    async def create_order(self, command: CreateOrder) -> Order:
        subtotal, code, key, cart = self._validate(command)
        require_acting_for(command.user_id)  # a shopper orders for themselves only (I7)
        # No look-up by key first: a retry is found by its insert colliding with the stored
        # order's key (below), one round trip fewer per order. Every refusal before the insert
        # looks instead, so a retry answers its stored order whatever became of the user.
        # Decided once, stored on the order: every retry of its saga passes the same answer.
        # Two concurrent first orders both read "none yet"; PromoCodeService's unique
        # first-order slot then grants a first-order-only code to at most one of them. Read
        # beside the user's check (neither depends on the other: one hop less of latency).
        checked_user, confirmed_before = await asyncio.gather(
            self._users.active_user(command.user_id),
            self._orders.has_confirmed_order(command.user_id) if code else _no(),
            return_exceptions=True,
        )
        if isinstance(checked_user, errors.DomainError):
            existing = await self._orders.get_by_idempotency_key(command.user_id, key)
            if existing is None:
                raise checked_user
            return await self._replay(existing, command.user_id, subtotal, code, cart)
        if isinstance(checked_user, BaseException):
            raise checked_user
        if isinstance(confirmed_before, BaseException):
            raise confirmed_before
        user, first_order = checked_user, bool(code) and not confirmed_before
        now = self._clock()
        order = Order.place(
            self._new_id(),
            user,
            subtotal,
            code,
            key,
            now,
            now + self.stale_after,
            lines=cart[0],
            shipping_minor=cart[1],
            first_order=first_order,
        )
        try:
            await self._orders.add(order)
        except DuplicateIdempotencyKey:
            # A retry, or a concurrent request with the same key that won the insert: the
            # stored order is ours.
            stored = await self._orders.get_by_idempotency_key(command.user_id, key)
            if stored is None:
                raise errors.Aborted("the order is being created concurrently; retry") from None
            return await self._replay(stored, command.user_id, subtotal, code, cart)
        if order.status == PENDING:
            return await self.complete(order, user)
        return order

    def _validate(self, command: CreateOrder) -> tuple[Money, str, str, Cart]:
        """The subtotal, code, key and cart (lines, shipping), or every field violation at once.
        A cart follows promo_libs.carts, the same rules PromoCodeService applies; an amount-only
        request is the one line of its amount."""
        violations = errors.Violations()
        checked(violations, "user_id", lambda v: check_id(v, "user id"), command.user_id)
        currency: str | None = None
        amount: int | None = None
        checked_cart: carts.CheckedCart | None = None
        if command.lines or command.shipping is not None:
            checked_cart = carts.check_cart(
                violations,
                amount=MoneyValue(command.currency, command.amount_minor)
                if command.amount_given
                else None,
                lines=command.lines,
                shipping=command.shipping,
                amount_path="amount",
            )
            if checked_cart is not None:
                currency, amount = checked_cart.currency, checked_cart.subtotal
        elif not command.amount_given:
            violations.add("amount", "is required")
        else:
            currency = checked(violations, "amount.currency_code", check_currency, command.currency)
            try:
                amount = rules.check_amount(command.amount_minor)
            except ValueError as exc:
                violations.add("amount.amount_minor", str(exc))
        code = ""
        if command.promo_code is not None:
            normalized = checked(violations, "promo_code", rules.normalize_code, command.promo_code)
            code = normalized or ""
        key = checked(
            violations, "idempotency_key", rules.check_idempotency_key, command.idempotency_key
        )
        violations.raise_if_any()
        assert currency is not None and amount is not None and key is not None
        cart: Cart = ((OrderLine("", 1, amount),), 0)
        if checked_cart is not None:
            lines = tuple(
                OrderLine(x.sku, x.quantity, x.unit_price, x.product_id, x.category_ids)
                for x in checked_cart.lines
            )
            cart = (lines, checked_cart.shipping)
        return Money(currency, amount), code, key, cart

    async def _replay(
        self, order: Order, user_id: str, subtotal: Money, code: str, cart: Cart
    ) -> Order:
        """The stored outcome of an earlier request with the same key (and the same cart)."""
        if not order.same_request(user_id, subtotal, code, order.idempotency_key, *cart):
            raise errors.AlreadyExists(
                "the idempotency key was used for a different order",
                "IDEMPOTENCY_KEY_REUSED",
                {"order_id": order.id},
            )
        if order.status == PENDING:
            return await self.complete(order)
        if order.status == REJECTED:
            raise rejection_error(order)
        return order

    async def complete(self, order: Order, user: UserSnapshot | None = None) -> Order:
        """Settles a PENDING order (redeem, then confirm or reject); returns it CONFIRMED or
        raises its rejection, or Unavailable when the outcome is still unknown. `user` is the
        user as this request read it, passed on to Redeem; None (a retry, the sweep) lets
        PromoCodeService read it afresh."""
        task = self._running.get(order.id)
        if task is None:
            # The caller's deadline bounds the Redeem only; the saga as a whole runs detached,
            # within a budget of its own (the time after which the sweep takes an order over).
            redeem_within = deadlines.remaining()
            task = deadlines.detached(
                self._settle(order, redeem_within, user),
                name=f"order-{order.id}",
                budget=self.stale_after.total_seconds(),
            )
            self._running[order.id] = task
            task.add_done_callback(lambda done: self._forget(order.id, done))
        # Shielded: a caller that goes away does not cut the saga short for the others.
        return await asyncio.shield(task)

    def _forget(self, order_id: str, task: asyncio.Task[Order]) -> None:
        if self._running.get(order_id) is task:
            del self._running[order_id]
        if not task.cancelled():
            task.exception()  # retrieved here, raised to whoever awaits it

    async def _settle(
        self, order: Order, redeem_within: float | None, user: UserSnapshot | None
    ) -> Order:
        redemption = Redemption(
            order.id,
            order.promo_code,
            order.user_id,
            order.subtotal,
            order.lines,
            order.shipping_minor,
            order.first_order,
            user,
        )
        try:
            with deadlines.bound(redeem_within):
                outcome = await self._promo_codes.redeem(redemption)
        except OutcomeUnknown as exc:
            log.info("redemption outcome unknown", order_id=order.id, error=str(exc))
            raise unavailable(exc.dependency, order.id) from None
        for _ in range(_ATTEMPTS):
            if order.status != PENDING:
                return await self._settled_elsewhere(order, outcome)
            now = self._clock()
            if isinstance(outcome, Redeemed):
                order.confirm_redemption(
                    outcome.usage_id,
                    outcome.promo,
                    outcome.discount,
                    now,
                    outcome.line_shares,
                    outcome.shipping_share,
                )
            else:
                order.reject(outcome.reason, outcome.promo_code_id, now, now + self.stale_after)
            try:
                await self._orders.save(order)
            except VersionConflict:
                fresh = await self._orders.get(order.id)
                if fresh is None:
                    raise order_not_found(order.id) from None
                order = fresh
                continue
            if order.status == REJECTED:
                raise rejection_error(order)
            return order
        raise errors.Aborted("the order is being changed concurrently; retry", "CONCURRENT_UPDATE")

    async def _settled_elsewhere(self, order: Order, outcome: object) -> Order:
        """Another resumption settled the order first: its outcome stands. If it REJECTED the
        order while our attempt redeemed the code, give our redemption back."""
        if order.status == REJECTED:
            if isinstance(outcome, Redeemed):
                await self._release_quietly(order.id, "order rejected")
            raise rejection_error(order)
        return order

    async def _release_quietly(self, redemption_id: str, reason: str) -> None:
        try:
            await self._promo_codes.release(redemption_id, reason)
        except OutcomeUnknown as exc:
            # The REJECTED order is due for the sweep, which releases it again.
            log.warning("release deferred to the sweep", order_id=redemption_id, error=str(exc))

    # --- GetOrder / ListOrders --------------------------------------------------------------

    async def get_order(self, order_id: str) -> Order:
        violations = errors.Violations()
        checked(violations, "id", lambda v: check_id(v, "order id"), order_id)
        violations.raise_if_any()
        order = await self._orders.get(order_id)
        if order is None:
            raise order_not_found(order_id)
        require_acting_for(order.user_id)  # reading or cancelling: the order's user only (I7)
        return order

    async def list_orders(self, command: ListOrders) -> OrderPage:
        violations = errors.Violations()
        if command.user_id:
            checked(violations, "user_id", lambda v: check_id(v, "user id"), command.user_id)
        if command.status and command.status not in STATUSES:
            violations.add("status", "is not an OrderStatus")
        start, end = command.created_from, command.created_until
        if start is not None and end is not None and start >= end:
            violations.add("create_time_range", "start_time must be before end_time")
        violations.raise_if_any()
        require_acting_for(command.user_id)  # a shopper lists their own orders only (I7)
        query = OrderQuery(command.user_id, command.status, start, end)
        page = page_request(
            command.page_size,
            command.page_token,
            {
                "user_id": query.user_id,
                "status": query.status,
                "from": start.isoformat() if start else "",
                "until": end.isoformat() if end else "",
            },
        )
        after = None if page.after_id is None else _decode_cursor(page.after_id)
        orders, last = await self._orders.list_page(query, after, page.size)
        token = page.next_token(_encode_cursor(last)) if last else ""
        return OrderPage(orders, token)

    # --- CancelOrder ------------------------------------------------------------------------

    async def cancel_order(self, command: CancelOrder) -> Order:
        violations = errors.Violations()
        checked(violations, "id", lambda v: check_id(v, "order id"), command.order_id)
        checked(violations, "reason", rules.check_cancel_reason, command.reason)
        violations.raise_if_any()
        for _ in range(_ATTEMPTS):
            order = await self.get_order(command.order_id)
            if order.status == CANCELLED or order.cancelling:
                if order.cancellation_reason != command.reason:
                    raise errors.FailedPrecondition(
                        f"order {order.id} was already cancelled with another reason",
                        "ORDER_ALREADY_CANCELLED",
                        {"order_id": order.id},
                    )
                if order.status == CANCELLED:
                    return order
                return await self.finish_cancel(order)
            if order.status != CONFIRMED:
                raise errors.FailedPrecondition(
                    f"order {order.id} is {order.status}; only CONFIRMED orders can be cancelled",
                    "ORDER_NOT_CANCELLABLE",
                    {"status": f"ORDER_STATUS_{order.status}", "order_id": order.id},
                )
            now = self._clock()
            if order.needs_release:
                order.request_cancel(command.reason, now, now + self.stale_after)
            else:
                order.cancel(command.reason, now)
            try:
                await self._orders.save(order)
            except VersionConflict:
                continue
            return order if order.status == CANCELLED else await self.finish_cancel(order)
        raise errors.Aborted("the order is being changed concurrently; retry", "CONCURRENT_UPDATE")

    async def finish_cancel(self, order: Order) -> Order:
        """Second half of a cancellation: release the redemption, then mark CANCELLED."""
        try:
            await self._promo_codes.release(order.usage_id, order.cancellation_reason)
        except OutcomeUnknown as exc:
            raise unavailable(exc.dependency, order.id) from None
        for _ in range(_ATTEMPTS):
            if order.status == CANCELLED:
                return order
            order.cancel(order.cancellation_reason, self._clock())
            try:
                await self._orders.save(order)
            except VersionConflict:
                order = await self.get_order(order.id)
                continue
            return order
        raise errors.Aborted("the order is being changed concurrently; retry", "CONCURRENT_UPDATE")

    # --- the sweep's share ------------------------------------------------------------------

    async def recheck_rejection(self, order: Order) -> None:
        """A REJECTED order's redemption id is released once more (normally there is none)."""
        if await self._promo_codes.release(order.id, "order rejected"):
            log.warning("released a redemption of a rejected order", order_id=order.id)
        order.rejection_rechecked(self._clock())
        await self._orders.save(order)


_CURSOR_SEPARATOR = ":"


def _encode_cursor(cursor: OrderCursor) -> str:
    millis = int(cursor.created_at.timestamp() * 1000)
    return f"{millis}{_CURSOR_SEPARATOR}{cursor.order_id}"


def _decode_cursor(raw: str) -> OrderCursor:
    millis, _, order_id = raw.partition(_CURSOR_SEPARATOR)
    try:
        check_id(order_id)
        moment = datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        bad = errors.InvalidArgument(
            [errors.FieldViolation("page_token", "is not a token this list issued")]
        )
        bad.reason = "INVALID_PAGE_TOKEN"
        raise bad from None
    return OrderCursor(moment, order_id)
