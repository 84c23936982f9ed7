"""The order use cases against in-memory fakes: the saga, idempotency, cancellation, the sweep."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from orders_service.domain.commands import CancelOrder, CreateOrder, ListOrders
from orders_service.domain.events import OrderCancelled, OrderConfirmed, OrderCreated, OrderRejected
from orders_service.domain.model import CANCELLED, CONFIRMED, PENDING, REJECTED
from orders_service.service_layer.orders import Orders
from orders_service.service_layer.sweep import Sweeper
from orders_testing.memory import InMemoryOrderRepository
from promo_libs import deadlines, errors

from .conftest import Clock, FakePromoCodes, FakeUsers


def create(
    key: str = "k1", user: str = "alice", amount: int = 5000, code: str | None = None
) -> CreateOrder:
    return CreateOrder(user, "EUR", amount, code, key)


async def test_without_a_code_the_order_is_confirmed_at_once(
    orders: Orders, repo: InMemoryOrderRepository
) -> None:
    order = await orders.create_order(create())
    assert (order.status, order.discount_minor, order.total.amount_minor) == (CONFIRMED, 0, 5000)
    assert [type(e) for e in repo.published] == [OrderCreated, OrderConfirmed]
    assert [e.version for e in repo.published] == [1, 2]
    assert repo.published[0].order.status == PENDING
    assert repo.items[order.id].sweep_due_at is None


async def test_with_a_code_the_discount_is_applied(
    orders: Orders, repo: InMemoryOrderRepository, promo_codes: FakePromoCodes
) -> None:
    order = await orders.create_order(create(code="save10"))
    assert order.status == CONFIRMED and order.promo_code == "SAVE10"
    assert (order.discount_minor, order.total.amount_minor) == (1000, 4000)
    assert order.usage_id == order.id and order.promo_code_id == "p1"
    assert promo_codes.active_usages() == [order.id]
    confirmed = repo.published[-1]
    assert isinstance(confirmed, OrderConfirmed) and confirmed.promo_code is not None
    assert confirmed.promo_code.discount_type == "FIXED_AMOUNT"
    assert confirmed.user.email == "alice@example.com"


async def test_a_code_that_does_not_apply_rejects_the_order_and_the_call(
    orders: Orders, repo: InMemoryOrderRepository
) -> None:
    with pytest.raises(errors.FailedPrecondition) as caught:
        await orders.create_order(create(code="NOPE"))
    assert caught.value.reason == "PROMO_CODE_NOT_FOUND"
    order_id = caught.value.metadata["order_id"]
    stored = repo.items[order_id]
    assert (stored.status, stored.rejection_reason) == (REJECTED, "PROMO_CODE_NOT_FOUND")
    assert isinstance(repo.published[-1], OrderRejected)
    # The same key gives the same error, and nothing more is written.
    published = len(repo.published)
    with pytest.raises(errors.FailedPrecondition) as again:
        await orders.create_order(create(code="nope"))
    assert (again.value.reason, again.value.metadata) == (
        "PROMO_CODE_NOT_FOUND",
        {"order_id": order_id},
    )
    assert len(repo.published) == published


async def test_same_key_same_body_returns_the_stored_order(
    orders: Orders, promo_codes: FakePromoCodes
) -> None:
    first = await orders.create_order(create(code="SAVE10"))
    again = await orders.create_order(create(code="Save10"))
    assert again == first
    assert promo_codes.redeem_calls == 1


@pytest.mark.parametrize(
    "other",
    [
        create(amount=1),
        create(code="SAVE10"),
        CreateOrder("alice", "USD", 5000, None, "k1"),
    ],
)
async def test_same_key_other_body_is_refused(orders: Orders, other: CreateOrder) -> None:
    await orders.create_order(create())
    with pytest.raises(errors.AlreadyExists) as caught:
        await orders.create_order(other)
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"


async def test_keys_are_scoped_per_user(orders: Orders, promo_codes: FakePromoCodes) -> None:
    alices = await orders.create_order(create(key="order-1", code="SAVE10"))
    bobs = await orders.create_order(create(key="order-1", user="bob", code="SAVE10", amount=7))
    assert alices.id != bobs.id and bobs.user_id == "bob" and bobs.subtotal.amount_minor == 7
    assert sorted(promo_codes.active_usages()) == sorted([alices.id, bobs.id])
    # Each user's retry still finds that user's own order.
    assert await orders.create_order(create(key="order-1", code="SAVE10")) == alices


async def test_concurrent_retries_share_one_order_and_one_redemption(
    orders: Orders, promo_codes: FakePromoCodes, repo: InMemoryOrderRepository
) -> None:
    answers = await asyncio.gather(*(orders.create_order(create(code="SAVE10")) for _ in range(20)))
    assert len(repo.items) == 1 and all(a == answers[0] for a in answers)
    assert promo_codes.active_usages() == [answers[0].id]


async def test_unknown_user_is_not_found_and_writes_nothing(
    orders: Orders, repo: InMemoryOrderRepository
) -> None:
    with pytest.raises(errors.NotFound) as caught:
        await orders.create_order(create(user="nobody"))
    assert caught.value.reason == "USER_NOT_FOUND" and not repo.items


async def test_inactive_user_cannot_order(orders: Orders, repo: InMemoryOrderRepository) -> None:
    with pytest.raises(errors.FailedPrecondition) as caught:
        await orders.create_order(create(user="ghost"))
    assert caught.value.reason == "USER_INACTIVE" and not repo.items


async def test_users_down_is_unavailable_and_writes_nothing(
    orders: Orders, users: FakeUsers, repo: InMemoryOrderRepository
) -> None:
    users.down = True
    with pytest.raises(errors.Unavailable) as caught:
        await orders.create_order(create())
    assert caught.value.reason == "DEPENDENCY_UNAVAILABLE" and not repo.items


async def test_bad_input_names_every_field(orders: Orders, repo: InMemoryOrderRepository) -> None:
    with pytest.raises(errors.InvalidArgument) as caught:
        await orders.create_order(CreateOrder("../x", "eur", 0, "a b", ""))
    assert {v.field for v in caught.value.violations} == {
        "user_id",
        "amount.currency_code",
        "amount.amount_minor",
        "promo_code",
        "idempotency_key",
    }
    assert not repo.items


async def test_a_lost_redeem_answer_leaves_it_pending_and_the_retry_completes_it(
    orders: Orders, promo_codes: FakePromoCodes, repo: InMemoryOrderRepository
) -> None:
    promo_codes.lose_answers = 1
    with pytest.raises(errors.Unavailable) as caught:
        await orders.create_order(create(code="SAVE10"))
    order_id = caught.value.metadata["order_id"]
    assert repo.items[order_id].status == PENDING
    order = await orders.create_order(create(code="SAVE10"))
    assert (order.id, order.status, order.discount_minor) == (order_id, CONFIRMED, 1000)
    assert promo_codes.active_usages() == [order_id]


async def test_redeem_gets_the_user_this_request_read_and_never_a_stored_copy(
    orders: Orders,
    promo_codes: FakePromoCodes,
    users: FakeUsers,
    repo: InMemoryOrderRepository,
    clock: Clock,
) -> None:
    """PromoCodeService skips its own GetUser when given the user; a retry or the sweep works
    from the order's stored copy, which may be stale, so they pass none and it reads afresh."""
    await orders.create_order(create(key="fresh", code="SAVE10"))
    assert promo_codes.users_passed == [users.users["alice"]]
    promo_codes.lose_answers = 1
    with pytest.raises(errors.Unavailable):
        await orders.create_order(create(key="lost", code="SAVE10"))
    clock.advance(timedelta(seconds=31))
    assert await Sweeper(repo, orders, clock).sweep_once() == {"confirmed": 1}
    assert promo_codes.users_passed[1:] == [users.users["alice"], None]


async def test_the_sweep_completes_a_stale_pending_order(
    orders: Orders,
    promo_codes: FakePromoCodes,
    repo: InMemoryOrderRepository,
    clock: Clock,
) -> None:
    promo_codes.down = True
    with pytest.raises(errors.Unavailable):
        await orders.create_order(create(code="SAVE10"))
    promo_codes.down = False
    sweeper = Sweeper(repo, orders, clock)
    assert not await sweeper.sweep_once()  # not stale yet: a live request may still finish it
    clock.advance(timedelta(seconds=31))
    assert await sweeper.sweep_once() == {"confirmed": 1}
    (order,) = repo.items.values()
    assert order.status == CONFIRMED and order.sweep_due_at is None


async def test_the_sweep_rejects_and_rechecks(
    orders: Orders, promo_codes: FakePromoCodes, repo: InMemoryOrderRepository, clock: Clock
) -> None:
    promo_codes.add("ONCE", max_uses=1)
    await orders.create_order(create("a", code="ONCE"))
    promo_codes.down = True
    with pytest.raises(errors.Unavailable):
        await orders.create_order(create("b", code="ONCE"))
    promo_codes.down = False
    sweeper = Sweeper(repo, orders, clock)
    clock.advance(timedelta(seconds=31))
    assert await sweeper.sweep_once() == {"rejected:PROMO_CODE_EXHAUSTED": 1}
    clock.advance(timedelta(seconds=31))
    assert await sweeper.sweep_once() == {"rechecked": 1}
    assert not await sweeper.sweep_once(clock.now + timedelta(days=1))


async def test_a_racing_attempt_that_redeemed_after_a_rejection_is_released(
    orders: Orders, promo_codes: FakePromoCodes, repo: InMemoryOrderRepository, clock: Clock
) -> None:
    promo_codes.codes["SAVE10"].refuse_with = "PROMO_CODE_EXHAUSTED"
    with pytest.raises(errors.FailedPrecondition) as caught:
        await orders.create_order(create(code="SAVE10"))
    order_id = caught.value.metadata["order_id"]
    # A late attempt of the same saga redeems after all (e.g. a slot was freed meanwhile).
    promo_codes.usages[order_id] = ("SAVE10", "alice", True)
    clock.advance(timedelta(seconds=31))
    assert await Sweeper(repo, orders, clock).sweep_once() == {"rechecked": 1}
    assert promo_codes.active_usages() == []


async def test_cancel_releases_the_usage_and_is_idempotent(
    orders: Orders, promo_codes: FakePromoCodes, repo: InMemoryOrderRepository
) -> None:
    order = await orders.create_order(create(code="SAVE10"))
    cancelled = await orders.cancel_order(CancelOrder(order.id, "changed my mind"))
    assert cancelled.status == CANCELLED and cancelled.cancellation_reason == "changed my mind"
    assert promo_codes.active_usages() == []
    assert isinstance(repo.published[-1], OrderCancelled)
    assert await orders.cancel_order(CancelOrder(order.id, "changed my mind")) == cancelled
    with pytest.raises(errors.FailedPrecondition) as caught:
        await orders.cancel_order(CancelOrder(order.id, "other"))
    assert caught.value.reason == "ORDER_ALREADY_CANCELLED"
    # The code can be used again by the same user.
    again = await orders.create_order(create("k2", code="SAVE10"))
    assert again.status == CONFIRMED


async def test_cancel_without_a_code_needs_no_release(
    orders: Orders, promo_codes: FakePromoCodes
) -> None:
    order = await orders.create_order(create())
    assert (await orders.cancel_order(CancelOrder(order.id))).status == CANCELLED
    assert promo_codes.release_calls == 0


async def test_rejected_and_pending_orders_are_not_cancellable(
    orders: Orders, promo_codes: FakePromoCodes
) -> None:
    with pytest.raises(errors.FailedPrecondition) as rejected:
        await orders.create_order(create(code="NOPE"))
    with pytest.raises(errors.FailedPrecondition) as caught:
        await orders.cancel_order(CancelOrder(rejected.value.metadata["order_id"]))
    assert caught.value.reason == "ORDER_NOT_CANCELLABLE"
    assert caught.value.metadata["status"] == "ORDER_STATUS_REJECTED"
    promo_codes.down = True
    with pytest.raises(errors.Unavailable) as pending:
        await orders.create_order(create("k2", code="SAVE10"))
    with pytest.raises(errors.FailedPrecondition) as caught:
        await orders.cancel_order(CancelOrder(pending.value.metadata["order_id"]))
    assert caught.value.metadata["status"] == "ORDER_STATUS_PENDING"


async def test_an_interrupted_cancel_is_finished_by_a_retry_or_the_sweep(
    orders: Orders, promo_codes: FakePromoCodes, repo: InMemoryOrderRepository, clock: Clock
) -> None:
    first = await orders.create_order(create("k1", code="SAVE10"))
    second = await orders.create_order(create("k2", user="bob", code="SAVE10"))
    promo_codes.down = True
    for order in (first, second):
        with pytest.raises(errors.Unavailable):
            await orders.cancel_order(CancelOrder(order.id, "why"))
        assert repo.items[order.id].status == CONFIRMED  # still, until the release is confirmed
    promo_codes.down = False
    assert (await orders.cancel_order(CancelOrder(first.id, "why"))).status == CANCELLED
    clock.advance(timedelta(seconds=31))
    assert await Sweeper(repo, orders, clock).sweep_once() == {"cancelled": 1}
    assert repo.items[second.id].status == CANCELLED and promo_codes.active_usages() == []


async def test_get_and_list(orders: Orders, clock: Clock) -> None:
    created = []
    for n in range(5):
        clock.advance(timedelta(seconds=1))
        created.append(await orders.create_order(create(f"k{n}", user="alice" if n % 2 else "bob")))
    assert await orders.get_order(created[0].id) == created[0]
    with pytest.raises(errors.NotFound) as caught:
        await orders.get_order("missing")
    assert caught.value.reason == "ORDER_NOT_FOUND"
    page = await orders.list_orders(ListOrders(2, ""))
    assert [o.id for o in page.orders] == [created[4].id, created[3].id] and page.next_page_token
    rest = await orders.list_orders(ListOrders(10, page.next_page_token))
    assert [o.id for o in rest.orders] == [o.id for o in reversed(created[:3])]
    assert not rest.next_page_token
    alice = await orders.list_orders(ListOrders(10, "", user_id="alice"))
    assert {o.user_id for o in alice.orders} == {"alice"} and len(alice.orders) == 2
    window = await orders.list_orders(
        ListOrders(10, "", created_from=created[1].created_at, created_until=created[3].created_at)
    )
    assert [o.id for o in window.orders] == [created[2].id, created[1].id]
    with pytest.raises(errors.InvalidArgument) as bad:
        await orders.list_orders(ListOrders(10, page.next_page_token, user_id="alice"))
    assert bad.value.reason == "INVALID_PAGE_TOKEN"


async def test_the_redeem_is_bounded_by_the_callers_deadline_the_saga_is_not(
    orders: Orders,
    repo: InMemoryOrderRepository,
    promo_codes: FakePromoCodes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller's deadline bounds the Redeem (the fake records what the adapter would use);
    recording the outcome runs on the saga's own budget, so it survives the caller leaving."""
    seen: dict[str, float | None] = {}
    real_redeem, real_save = promo_codes.redeem, repo.save

    async def redeem(redemption):  # type: ignore[no-untyped-def]
        seen["redeem"] = deadlines.remaining()
        return await real_redeem(redemption)

    async def save(order):  # type: ignore[no-untyped-def]
        seen["save"] = deadlines.remaining()
        await real_save(order)

    monkeypatch.setattr(promo_codes, "redeem", redeem)
    monkeypatch.setattr(repo, "save", save)
    with deadlines.bound(0.5):
        order = await orders.create_order(create(code="save10"))
    assert order.status == CONFIRMED
    assert seen["redeem"] is not None and seen["redeem"] <= 0.5
    assert seen["save"] is not None and seen["save"] > 25  # the 30 s budget, not the caller's
