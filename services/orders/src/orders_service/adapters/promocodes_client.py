"""PromoCodes over gRPC: Redeem and Release of promo.v1.PromoCodeService.

Every call has its own deadline, never later than the caller's (promo_libs.deadlines), and the
wait for a turn at the bulkhead counts in it: a call that could only start after its caller gave
up is not made (an order redeemed that late may already have been settled by another replica's
sweep). Answers are sorted into three kinds: a result, a definite
refusal (FAILED_PRECONDITION / NOT_FOUND with a reason: the code does not apply), and an unknown
outcome (deadline, UNAVAILABLE, ABORTED "in progress", anything else), which the saga retries
with the same redemption id. The code's rules that the order's events carry come with Redeem's
answer (PromoCodeUsage.promo_code, the rules as redeemed): nothing is read only to fill an event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from orders_service.domain.events import PromoCodeSnapshot
from orders_service.domain.model import Money
from orders_service.domain.ports import (
    OutcomeUnknown,
    PromoCodes,
    Redeemed,
    RedeemOutcome,
    Redemption,
    Refused,
)
from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc
from promo_libs import deadlines
from promo_libs.grpc.client import peer_serving
from promo_libs.grpc.errors import error_info
from promo_libs.grpc.mapping import money
from promo_libs.grpc.users import user_message
from promo_libs.logging import get_logger

log = get_logger(__name__)

DEPENDENCY = "promocodes"
_REFUSALS = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


def _moment(value: Timestamp, present: bool) -> datetime | None:
    return value.ToDatetime(tzinfo=UTC) if present else None


def promo_snapshot(promo: promo_codes_pb2.PromoCode) -> PromoCodeSnapshot:
    currencies = [
        money.currency_code
        for present, money in (
            (promo.HasField("fixed_amount"), promo.fixed_amount),
            (promo.percentage.HasField("max_discount"), promo.percentage.max_discount),
            (promo.HasField("min_order_amount"), promo.min_order_amount),
            (promo.HasField("budget"), promo.budget),
        )
        if present and money.currency_code
    ]
    kind = promo.WhichOneof("discount")
    return PromoCodeSnapshot(
        id=promo.id,
        code=promo.code,
        discount_type={"percentage": "PERCENTAGE", "fixed_amount": "FIXED_AMOUNT"}.get(
            kind or "", ""
        ),
        basis_points=promo.percentage.basis_points if kind == "percentage" else 0,
        fixed_amount_minor=promo.fixed_amount.amount_minor if kind == "fixed_amount" else 0,
        max_discount_minor=promo.percentage.max_discount.amount_minor
        if kind == "percentage" and promo.percentage.HasField("max_discount")
        else None,
        currency=currencies[0] if currencies else "",
        min_order_amount_minor=promo.min_order_amount.amount_minor
        if promo.HasField("min_order_amount")
        else None,
        max_uses=promo.max_uses if promo.HasField("max_uses") else None,
        max_uses_per_user=promo.max_uses_per_user if promo.HasField("max_uses_per_user") else None,
        budget_minor=promo.budget.amount_minor if promo.HasField("budget") else None,
        batch_id=promo.batch_id,
        active=promo.active,
        valid_from=_moment(promo.valid_from, promo.HasField("valid_from")),
        valid_until=_moment(promo.valid_until, promo.HasField("valid_until")),
        created_at=_moment(promo.create_time, promo.HasField("create_time")),
        campaign_id=promo.campaign_id,
    )


class GrpcPromoCodes(PromoCodes):
    def __init__(
        self,
        channel: grpc.aio.Channel,
        timeout: float,
        max_in_flight: int = 32,
    ) -> None:
        self._stub = promo_codes_pb2_grpc.PromoCodeServiceStub(channel)
        self._channel = channel
        self._timeout = timeout
        # A bulkhead: a burst of orders queues here instead of flooding PromoCodeService (whose
        # database pool would otherwise be oversubscribed and its calls time out together).
        self._gate = asyncio.Semaphore(max_in_flight)

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[float]:
        """A bulkhead slot, waited for within the call's deadline; yields the seconds left for
        the call itself. OutcomeUnknown when no slot came in time (nothing was sent)."""
        budget = deadlines.within(self._timeout)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(budget):
                await self._gate.acquire()
        except TimeoutError:
            raise OutcomeUnknown(DEPENDENCY, "no turn before the deadline") from None
        try:
            left = budget - (loop.time() - started)
            if left <= 0:
                raise OutcomeUnknown(DEPENDENCY, "no time left after the wait")
            yield left
        finally:
            self._gate.release()

    async def redeem(self, redemption: Redemption) -> RedeemOutcome:
        request = promo_codes_pb2.RedeemPromoCodeRequest(
            code=redemption.code,
            user_id=redemption.user_id,
            order_amount=money(redemption.amount.currency, redemption.amount.amount_minor),
            redemption_id=redemption.redemption_id,
            lines=[
                common_pb2.LineItem(
                    sku=line.sku,
                    product_id=line.product_id,
                    category_ids=list(line.category_ids),
                    quantity=line.quantity,
                    unit_price=money(redemption.amount.currency, line.unit_price),
                )
                for line in redemption.lines
                if line.sku  # the one line of an amount-only order is sent as order_amount
            ],
            first_order=redemption.first_order,
            # The user this CreateOrder read: PromoCodeService then skips its own GetUser.
            user=user_message(redemption.user) if redemption.user is not None else None,
        )
        if redemption.shipping_minor:
            request.shipping.CopyFrom(money(redemption.amount.currency, redemption.shipping_minor))
        try:
            async with self._turn() as left:
                usage = await self._stub.RedeemPromoCode(request, timeout=left)
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            if exc.code() in _REFUSALS and info is not None and info.reason:
                return Refused(info.reason, info.metadata.get("promo_code_id", ""))
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                # Our own checks match PromoCodeService's: a code it cannot parse exists nowhere.
                log.warning("redeem refused the request", error=exc.details())
                return Refused("PROMO_CODE_NOT_FOUND")
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS and info is not None:
                log.error("redemption id already used", redemption_id=redemption.redemption_id)
                return Refused(info.reason or "REDEMPTION_CONFLICT")
            raise OutcomeUnknown(DEPENDENCY, exc.code().name) from None
        return Redeemed(
            usage_id=usage.id,
            promo_code_id=usage.promo_code_id,
            code=usage.code,
            discount=Money(usage.discount.currency_code, usage.discount.amount_minor),
            promo=promo_snapshot(usage.promo_code)
            if usage.HasField("promo_code")
            else PromoCodeSnapshot(id=usage.promo_code_id, code=usage.code),
            line_shares=tuple(d.discount.amount_minor for d in usage.line_discounts),
            shipping_share=usage.shipping_discount.amount_minor,
        )

    async def release(self, redemption_id: str, reason: str) -> bool:
        request = promo_codes_pb2.ReleasePromoCodeRequest(
            redemption_id=redemption_id, reason=reason
        )
        try:
            async with self._turn() as left:
                await self._stub.ReleasePromoCode(request, timeout=left)
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            if exc.code() == grpc.StatusCode.NOT_FOUND and (
                info is None or info.reason == "REDEMPTION_NOT_FOUND"
            ):
                return False
            raise OutcomeUnknown(DEPENDENCY, exc.code().name) from None
        return True

    async def ping(self) -> bool:
        return await peer_serving(self._channel, self._timeout)
