"""Orders with carts across the three running services: the split stored on the order lines,
first-order-only codes under concurrent first orders of one user, and bad carts refused whole."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from devstack.stack import Stack
from promo.v1 import common_pb2, orders_pb2
from promo_libs.grpc.errors import bad_request

from .conftest import Clients, Platform, definite, eur, new_code, new_user, start_platform

pytestmark = pytest.mark.e2e

CONFIRMED = orders_pb2.ORDER_STATUS_CONFIRMED


@pytest.fixture(scope="module")
def platform(stack: Stack) -> Iterator[Platform]:
    running = start_platform(
        stack,
        "carts",
        orders_env={
            "PROMOCODES_TIMEOUT_SECONDS": "30",
            "USERS_TIMEOUT_SECONDS": "10",
            "SWEEP_STALE_SECONDS": "40",
        },
        promocodes_env={"USERS_TIMEOUT_SECONDS": "10"},
    )
    yield running
    running.stop()


def line(sku: str, quantity: int, price: int, *categories: str) -> common_pb2.LineItem:
    return common_pb2.LineItem(
        sku=sku, product_id=f"p-{sku}", category_ids=list(categories), quantity=quantity,
        unit_price=eur(price),
    )  # fmt: skip


def cart_request(user_id: str, code: str | None, lines: list[Any], shipping: int = 0) -> Any:
    request = orders_pb2.CreateOrderRequest(
        user_id=user_id, lines=lines, idempotency_key=uuid.uuid4().hex
    )
    if shipping:
        request.shipping.CopyFrom(eur(shipping))
    if code is not None:
        request.promo_code = code
    return request


async def test_order_lines_hold_the_split(clients: Clients, orders_db: Any) -> None:
    user = await new_user(clients)
    code = await new_code(
        clients, fixed_amount=eur(1000), target=2,  # ITEMS
        targeting={"include_category_ids": ["shoes"]},
    )  # fmt: skip
    lines = [
        line("shoe-1", 2, 4999, "shoes"),
        line("hat-1", 1, 1500, "hats"),
        line("shoe-2", 1, 3001, "shoes"),
    ]
    request = cart_request(user.id, code.code, lines, shipping=495)
    order = await clients.orders.CreateOrder(request)
    assert order.status == CONFIRMED
    assert order.subtotal == eur(2 * 4999 + 1500 + 3001 + 495)
    assert order.discount == eur(1000) and order.total == eur(order.subtotal.amount_minor - 1000)
    assert [(x.item.sku, x.discount.amount_minor) for x in order.lines] == [
        ("shoe-1", 769), ("hat-1", 0), ("shoe-2", 231),
    ]  # fmt: skip
    assert order.shipping == eur(495) and order.shipping_discount == eur(0)
    assert await clients.orders.GetOrder(orders_pb2.GetOrderRequest(id=order.id)) == order
    stored = orders_db.orders.find_one({"_id": order.id})
    assert [x["discount"] for x in stored["lines"]] == [769, 0, 231]
    # The same key with the same cart replays; with another cart it is a reused key.
    assert await clients.orders.CreateOrder(request) == order
    other = orders_pb2.CreateOrderRequest()
    other.CopyFrom(request)
    other.lines[1].quantity = 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.orders.CreateOrder(other)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_first_orders_get_the_code_at_most_once(clients: Clients) -> None:
    user = await new_user(clients)
    welcome = await new_code(clients, fixed_amount=eur(500), first_order_only=True)
    requests = [cart_request(user.id, welcome.code, [line("a", 1, 2000)]) for _ in range(6)]
    outcomes = await asyncio.gather(*(definite(clients, r) for r in requests))
    verdicts = sorted(verdict for verdict, _ in outcomes)
    assert verdicts == ["CONFIRMED"] + ["FIRST_ORDER_ONLY"] * 5, verdicts
    # Now the user has a confirmed order: no later order is a first order.
    later, _ = await definite(clients, cart_request(user.id, welcome.code, [line("b", 1, 900)]))
    assert later == "FIRST_ORDER_ONLY"
    # A user whose first order had no code cannot use a first-order code afterwards either.
    other = await new_user(clients)
    plain, _ = await definite(clients, cart_request(other.id, None, [line("c", 1, 900)]))
    assert plain == "CONFIRMED"
    again, _ = await definite(clients, cart_request(other.id, welcome.code, [line("d", 1, 900)]))
    assert again == "FIRST_ORDER_ONLY"


@pytest.mark.parametrize(
    ("lines", "paths"),
    [
        ([line("a", 0, 100)], {"lines[0].quantity"}),
        ([line("a", -1, 100)], {"lines[0].quantity"}),
        (
            [
                line("a", 1, 100),
                common_pb2.LineItem(
                    sku="b",
                    quantity=1,
                    unit_price=common_pb2.Money(currency_code="USD", amount_minor=1),
                ),
            ],
            {"lines[1].unit_price.currency_code"},
        ),
        ([line("a", 1, 100), line("a", 1, 100)], {"lines[1].sku"}),
        ([line(f"k{i}", 1, 1) for i in range(3000)], {"lines"}),
    ],
    ids=["zero", "negative", "currency", "duplicate-sku", "3000-lines"],
)
async def test_bad_carts_write_nothing(
    clients: Clients, orders_db: Any, lines: list[Any], paths: set[str]
) -> None:
    user = await new_user(clients)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await clients.orders.CreateOrder(cart_request(user.id, None, lines))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = bad_request(caught.value)
    assert details is not None
    assert {v.field for v in details.field_violations} == paths
    assert orders_db.orders.count_documents({"user_id": user.id}) == 0
