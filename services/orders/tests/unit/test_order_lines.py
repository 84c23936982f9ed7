"""The order stores the split it is given only when it is exact (domain, no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from orders_service.domain.events import OrderLine, PromoCodeSnapshot
from orders_service.domain.model import CONFIRMED, InvalidTransition, Money, Order
from promo_libs.users import UserSnapshot

NOW = datetime(2030, 1, 1, tzinfo=UTC)
USER = UserSnapshot("u1", "u@example.com", "U", True, NOW, None)
LINES = (OrderLine("a", 2, 1000), OrderLine("b", 1, 500))


def placed() -> Order:
    return Order.place(
        "o1", USER, Money("EUR", 2800), "SAVE", "k", NOW, NOW + timedelta(seconds=30),
        lines=LINES, shipping_minor=300, first_order=True,
    )  # fmt: skip


def promo() -> PromoCodeSnapshot:
    return PromoCodeSnapshot(id="p1", code="SAVE", discount_type="FIXED_AMOUNT")


def test_an_exact_split_is_stored_on_the_lines() -> None:
    order = placed()
    order.confirm_redemption("o1", promo(), Money("EUR", 700), NOW, (400, 100), 200)
    assert order.status == CONFIRMED
    assert [line.discount for line in order.lines] == [400, 100]
    assert order.shipping_discount_minor == 200
    assert order.snapshot().lines == order.lines


@pytest.mark.parametrize(
    ("shares", "shipping"),
    [((400, 100), 100), ((400,), 300), ((0, 600), 100), ((-1, 401), 300), ((399, 0), 301)],
    ids=["short", "count", "above-line", "negative", "above-shipping"],
)
def test_an_inexact_split_is_refused(shares: tuple[int, ...], shipping: int) -> None:
    order = placed()
    with pytest.raises(InvalidTransition):
        order.confirm_redemption("o1", promo(), Money("EUR", 700), NOW, shares, shipping)
    assert order.status != CONFIRMED


def test_lines_must_add_up_to_the_subtotal() -> None:
    with pytest.raises(InvalidTransition):
        Order.place(
            "o2", USER, Money("EUR", 2801), "", "k", NOW, NOW, lines=LINES, shipping_minor=300
        )
