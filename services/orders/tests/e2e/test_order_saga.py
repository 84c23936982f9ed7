"""OrderService across the three running services: the saga, its rejections, idempotency under
concurrency, cancellation, and the limits of a code under 500 concurrent orders."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from redis.asyncio import Redis

from devstack.stack import Stack
from promo.v1 import common_pb2, events_pb2, orders_pb2, promo_codes_pb2
from promo_libs.bus import ENVELOPE_FIELD
from promo_libs.events import ORDERS_STREAM
from promo_libs.grpc.errors import error_info

from .conftest import (
    Clients,
    Platform,
    definite,
    eur,
    eventually,
    new_code,
    new_user,
    order_request,
    orders_of,
    start_platform,
    usages_of,
    utc_now,
)

CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED
REJECTED = orders_pb2.ORDER_STATUS_REJECTED
CANCELLED = orders_pb2.ORDER_STATUS_CANCELLED
ACTIVE = promo_codes_pb2.PROMO_CODE_USAGE_STATUS_ACTIVE
RELEASED = promo_codes_pb2.PROMO_CODE_USAGE_STATUS_RELEASED


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    running = start_platform(
        stack,
        "saga",
        orders_env={
            "PROMOCODES_TIMEOUT_SECONDS": "30",
            "USERS_TIMEOUT_SECONDS": "10",
            "SWEEP_STALE_SECONDS": "40",
        },
        promocodes_env={"USERS_TIMEOUT_SECONDS": "10"},
    )
    yield running
    running.stop()


async def test_without_a_code(clients: Clients) -> None:
    user = await new_user(clients)
    order = await clients.orders.CreateOrder(order_request(user.id, amount=1999))
    assert order.status == CONFIRMED and order.total == eur(1999) and order.discount == eur(0)
    assert not order.promo_code and not order.promo_code_usage_id
    assert order.HasField("confirm_time") and order.create_time == order.confirm_time
    fetched = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(id=order.id))
    assert fetched == order


async def test_with_a_code(clients: Clients) -> None:
    user = await new_user(clients)
    code = await new_code(clients, percentage=promo_codes_pb2.PercentageDiscount(basis_points=1500))
    order = await clients.orders.CreateOrder(order_request(user.id, code.code.lower(), 3333))
    assert order.status == CONFIRMED and order.promo_code == code.code
    assert (order.discount, order.total) == (eur(499), eur(2834))  # floor(3333 * 15 %)
    assert order.promo_code_id == code.id and order.promo_code_usage_id == order.id
    (usage,) = await usages_of(clients, code.id)
    assert (usage.id, usage.user_id, usage.status, usage.discount) == (
        order.id,
        user.id,
        ACTIVE,
        eur(499),
    )


async def _expect_rejection(
    clients: Clients, user_id: str, code: str, reason: str, amount: int = 5000
) -> orders_pb2.Order:
    request = order_request(user_id, code, amount)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.orders.CreateOrder(request)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    info = error_info(caught.value)
    assert info is not None and info.reason == reason and info.domain == "promo.v1"
    order = await clients.orders.GetOrder(orders_pb2.GetOrderRequest(id=info.metadata["order_id"]))
    assert order.status == REJECTED and order.rejection_reason == reason
    assert order.discount == eur(0) and not order.promo_code_usage_id
    with pytest.raises(grpc.aio.AioRpcError) as again:  # the same key, the same answer
        await clients.orders.CreateOrder(request)
    assert again.value.code() == caught.value.code()
    assert error_info(again.value) == info
    return order


async def test_every_rejection_reason_reaches_the_caller(clients: Clients) -> None:
    user, other = await new_user(clients), await new_user(clients)
    now = utc_now()

    def ts(delta: timedelta) -> Timestamp:
        stamp = Timestamp()
        stamp.FromDatetime(now + delta)
        return stamp

    await _expect_rejection(clients, user.id, "NO-SUCH-CODE", "PROMO_CODE_NOT_FOUND")
    inactive = await new_code(clients)
    await clients.codes.DeletePromoCode(promo_codes_pb2.DeletePromoCodeRequest(id=inactive.id))
    await _expect_rejection(clients, user.id, inactive.code, "PROMO_CODE_INACTIVE")
    later = await new_code(clients, valid_from=ts(timedelta(hours=1)))
    await _expect_rejection(clients, user.id, later.code, "PROMO_CODE_NOT_STARTED")
    expired = await new_code(
        clients, valid_from=ts(timedelta(hours=-2)), valid_until=ts(timedelta(hours=-1))
    )
    await _expect_rejection(clients, user.id, expired.code, "PROMO_CODE_EXPIRED")
    private = await new_code(clients, eligible_user_ids=[other.id])
    await _expect_rejection(clients, user.id, private.code, "USER_NOT_ELIGIBLE")
    dollars = await new_code(
        clients, fixed_amount=common_pb2.Money(currency_code="USD", amount_minor=100)
    )
    await _expect_rejection(clients, user.id, dollars.code, "CURRENCY_MISMATCH")
    minimum = await new_code(clients, min_order_amount=eur(10_000))
    await _expect_rejection(clients, user.id, minimum.code, "ORDER_BELOW_MINIMUM")
    once = await new_code(clients, max_uses=1)
    await clients.orders.CreateOrder(order_request(other.id, once.code))
    await _expect_rejection(clients, user.id, once.code, "PROMO_CODE_EXHAUSTED")
    per_user = await new_code(clients, max_uses_per_user=1)
    await clients.orders.CreateOrder(order_request(user.id, per_user.code))
    await _expect_rejection(clients, user.id, per_user.code, "PER_USER_LIMIT_REACHED")
    budget = await new_code(clients, budget=eur(600))
    await clients.orders.CreateOrder(order_request(other.id, budget.code))
    await _expect_rejection(clients, user.id, budget.code, "BUDGET_EXHAUSTED")
    # Nothing stays redeemed for a rejected order.
    for code in (once, per_user, budget):
        assert len(await usages_of(clients, code.id)) == 1


async def test_user_must_exist_and_be_active(clients: Clients) -> None:
    from promo.v1 import users_pb2

    user = await new_user(clients)
    await clients.users.DeleteUser(users_pb2.DeleteUserRequest(id=user.id))
    for user_id, code, reason in [
        (user.id, grpc.StatusCode.FAILED_PRECONDITION, "USER_INACTIVE"),
        ("0123456789abcdef01234567", grpc.StatusCode.NOT_FOUND, "USER_NOT_FOUND"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await clients.orders.CreateOrder(order_request(user_id))
        assert caught.value.code() == code
        info = error_info(caught.value)
        assert info is not None and info.reason == reason
        assert not await orders_of(clients, user_id)


async def test_the_same_key_twenty_times_at_once_gives_one_order(clients: Clients) -> None:
    user = await new_user(clients)
    code = await new_code(clients, max_uses_per_user=1)
    request = order_request(user.id, code.code)
    answers = await asyncio.gather(*(clients.orders.CreateOrder(request) for _ in range(20)))
    assert all(a == answers[0] for a in answers) and answers[0].status == CONFIRMED
    assert [o.id for o in await orders_of(clients, user.id)] == [answers[0].id]
    assert [u.id for u in await usages_of(clients, code.id)] == [answers[0].id]
    # A rejected outcome is replayed identically too.
    refused = order_request(user.id, code.code)
    errors = await asyncio.gather(
        *(clients.orders.CreateOrder(refused) for _ in range(20)), return_exceptions=True
    )
    assert all(isinstance(e, grpc.aio.AioRpcError) for e in errors)
    infos = [error_info(e) for e in errors if isinstance(e, grpc.aio.AioRpcError)]
    assert all(i == infos[0] for i in infos) and infos[0] is not None
    assert infos[0].reason == "PER_USER_LIMIT_REACHED"
    assert len(await orders_of(clients, user.id)) == 2
    # The same key with another body is refused.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.orders.CreateOrder(order_request(user.id, None, key=request.idempotency_key))
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(caught.value)
    assert info is not None and info.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_two_users_choosing_the_same_key_place_two_orders(clients: Clients) -> None:
    alice, bob = await new_user(clients), await new_user(clients)
    code = await new_code(clients, max_uses_per_user=1)
    key = f"cart-{uuid.uuid4().hex}"
    alices = await clients.orders.CreateOrder(order_request(alice.id, code.code, key=key))
    bobs = await clients.orders.CreateOrder(order_request(bob.id, code.code, 7000, key=key))
    assert alices.id != bobs.id and (alices.status, bobs.status) == (CONFIRMED, CONFIRMED)
    assert bobs.user_id == bob.id and bobs.subtotal.amount_minor == 7000
    # Each one's retry still answers with that user's own order.
    again = await clients.orders.CreateOrder(order_request(alice.id, code.code, key=key))
    assert again == alices
    assert sorted(u.id for u in await usages_of(clients, code.id)) == sorted([alices.id, bobs.id])


async def test_cancel_releases_the_usage_and_the_code_can_be_used_again(
    clients: Clients,
) -> None:
    user = await new_user(clients)
    code = await new_code(clients, max_uses_per_user=1, max_uses=1)
    order = await clients.orders.CreateOrder(order_request(user.id, code.code))
    cancel = orders_pb2.CancelOrderRequest(id=order.id, reason="changed my mind")
    cancelled = await clients.orders.CancelOrder(cancel)
    assert cancelled.status == CANCELLED and cancelled.cancellation_reason == "changed my mind"
    assert cancelled.HasField("cancel_time") and cancelled.discount == order.discount
    (usage,) = await usages_of(clients, code.id)
    assert usage.status == RELEASED and usage.release_reason == "changed my mind"
    assert await clients.orders.CancelOrder(cancel) == cancelled  # idempotent
    with pytest.raises(grpc.aio.AioRpcError) as other_reason:
        await clients.orders.CancelOrder(orders_pb2.CancelOrderRequest(id=order.id, reason="x"))
    assert error_info(other_reason.value).reason == "ORDER_ALREADY_CANCELLED"  # type: ignore[union-attr]
    again = await clients.orders.CreateOrder(order_request(user.id, code.code))
    assert again.status == CONFIRMED and again.discount == eur(500)
    assert len(await usages_of(clients, code.id, ACTIVE)) == 1
    # A rejected order cannot be cancelled.
    rejected = await _expect_rejection(clients, user.id, code.code, "PROMO_CODE_EXHAUSTED")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await clients.orders.CancelOrder(orders_pb2.CancelOrderRequest(id=rejected.id))
    info = error_info(refused.value)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and info is not None
    assert (info.reason, info.metadata["status"]) == (
        "ORDER_NOT_CANCELLABLE",
        "ORDER_STATUS_REJECTED",
    )


async def test_listing_filters_and_pages_newest_first(clients: Clients) -> None:
    user = await new_user(clients)
    made = [
        await clients.orders.CreateOrder(order_request(user.id, amount=100 + n)) for n in range(5)
    ]
    await clients.orders.CancelOrder(orders_pb2.CancelOrderRequest(id=made[0].id))
    seen: list[str] = []
    token = ""
    while True:
        page = await clients.orders.ListOrders(
            orders_pb2.ListOrdersRequest(user_id=user.id, page_size=2, page_token=token)
        )
        seen += [o.id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == [o.id for o in reversed(made)]
    cancelled = await orders_of(clients, user.id, CANCELLED)
    assert [o.id for o in cancelled] == [made[0].id]
    window = await clients.orders.ListOrders(
        orders_pb2.ListOrdersRequest(
            user_id=user.id,
            create_time_range=common_pb2.TimeRange(
                start_time=made[1].create_time, end_time=made[3].create_time
            ),
        )
    )
    assert {o.id for o in window.orders} <= {made[1].id, made[2].id}
    assert made[1].id in {o.id for o in window.orders}


async def test_500_concurrent_orders_never_exceed_the_limits(clients: Clients) -> None:
    users = await asyncio.gather(*(new_user(clients) for _ in range(100)))
    code = await new_code(clients, max_uses=50, max_uses_per_user=1)
    requests = [order_request(users[n % 100].id, code.code) for n in range(500)]

    async def place(request: orders_pb2.CreateOrderRequest) -> tuple[str, str]:
        return await definite(clients, request)

    outcomes = await asyncio.gather(*(place(r) for r in requests))
    counts = Counter(outcome for outcome, _ in outcomes)
    assert counts["CONFIRMED"] == 50, counts
    assert set(counts) <= {"CONFIRMED", "PROMO_CODE_EXHAUSTED", "PER_USER_LIMIT_REACHED"}
    confirmed = {order_id for outcome, order_id in outcomes if outcome == "CONFIRMED"}
    usages = await usages_of(clients, code.id)
    assert sorted(u.id for u in usages) == sorted(confirmed)  # one usage per order, no orphan
    assert all(u.status == ACTIVE for u in usages)
    assert len({u.user_id for u in usages}) == 50
    stored = [o for u in users for o in await orders_of(clients, u.id)]
    assert len(stored) == 500
    assert Counter(o.status for o in stored) == {CONFIRMED: 50, REJECTED: 450}
    assert all(o.discount == eur(500) for o in stored if o.status == CONFIRMED)


async def test_order_events_reach_the_orders_stream(clients: Clients, stack: Stack) -> None:
    """Created, confirmed and cancelled, each written with its change, then published in order."""
    user = await new_user(clients)
    code = await new_code(clients)
    order = await clients.orders.CreateOrder(order_request(user.id, code.code))
    await clients.orders.CancelOrder(orders_pb2.CancelOrderRequest(id=order.id, reason="changed"))
    redis = Redis(host=stack.redis_host, port=stack.redis_port, password=stack.redis_password)

    async def published() -> list[events_pb2.EventEnvelope] | None:
        entries = await redis.xrange(ORDERS_STREAM)
        envelopes = [events_pb2.EventEnvelope.FromString(f[ENVELOPE_FIELD]) for _, f in entries]
        mine = [e for e in envelopes if e.aggregate_id == order.id]
        return mine if len(mine) >= 3 else None

    try:
        envelopes = await eventually(published, 15, "the order's events on the stream")
    finally:
        await redis.aclose()
    assert [e.WhichOneof("payload") for e in envelopes] == [
        "order_created",
        "order_confirmed",
        "order_cancelled",
    ]
    assert [e.aggregate_version for e in envelopes] == sorted(
        e.aggregate_version for e in envelopes
    )
    confirmed = envelopes[1].order_confirmed
    assert (confirmed.order.discount_minor, confirmed.order.total_minor) == (500, 4500)
    assert (confirmed.user.id, confirmed.promo_code.code) == (user.id, code.code)
