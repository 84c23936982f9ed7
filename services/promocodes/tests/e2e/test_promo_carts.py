"""Carts over gRPC against real servers: targeting stored and returned, quotes per line that
write nothing, the cart conditions' reasons, and bad carts refused with field violations."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc
from promo_libs.grpc.errors import bad_request

from .conftest import create_users, promocodes_process, reason

pytestmark = pytest.mark.e2e

pb = promo_codes_pb2
Stub = promo_codes_pb2_grpc.PromoCodeServiceStub


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount)


def line(sku: str, quantity: int, price: int, *categories: str, product: str = "") -> Any:
    return common_pb2.LineItem(
        sku=sku,
        product_id=product or f"prod-{sku}",
        category_ids=list(categories),
        quantity=quantity,
        unit_price=eur(price),
    )


CART = [
    line("shoe-1", 2, 4999, "shoes"),
    line("shirt-1", 1, 2500, "shirts"),
    line("shoe-2", 1, 3001, "shoes", "sale"),
]


def snapshot(db: Any) -> tuple[list[Any], list[Any]]:
    """Every code and usage document, without the outbox fields: the relay clears those on its
    own schedule, which is not a write of the call under test."""
    volatile = {"outbox": 0, "outbox_pending": 0}
    return list(db.promo_codes.find({}, volatile, sort=[("_id", 1)])), list(
        db.promo_code_usages.find({}, volatile, sort=[("_id", 1)])
    )


async def test_targeting_round_trip_and_update(promo: Stub) -> None:
    created = await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code="SHOES-20",
                percentage=pb.PercentageDiscount(basis_points=2000),
                target=pb.DISCOUNT_TARGET_ITEMS,
                targeting=pb.ItemTargeting(
                    include_category_ids=["shoes"], exclude_category_ids=["sale"]
                ),
                min_item_quantity=2,
                min_item_amount=eur(5000),
            )
        )
    )
    assert created.target == pb.DISCOUNT_TARGET_ITEMS
    assert list(created.targeting.include_category_ids) == ["shoes"]
    assert list(created.targeting.exclude_category_ids) == ["sale"]
    assert (created.min_item_quantity, created.min_item_amount) == (2, eur(5000))
    assert created.allocation == pb.ALLOCATION_ACROSS and not created.first_order_only
    assert await promo.GetPromoCode(pb.GetPromoCodeRequest(id=created.id)) == created
    updated = await promo.UpdatePromoCode(
        pb.UpdatePromoCodeRequest(
            promo_code=pb.PromoCode(
                id=created.id, targeting=pb.ItemTargeting(include_skus=["shirt-1"])
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["targeting", "min_item_amount"]),
        )
    )
    assert list(updated.targeting.include_skus) == ["shirt-1"]
    assert not updated.targeting.include_category_ids
    assert not updated.HasField("min_item_amount") and updated.min_item_quantity == 2


async def test_quote_per_line_changes_nothing(promo: Stub, promo_db: Any) -> None:
    await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code="SHOES-10EUR",
                fixed_amount=eur(1000),
                target=pb.DISCOUNT_TARGET_ITEMS,
                targeting=pb.ItemTargeting(include_category_ids=["shoes"]),
                max_uses=5,
                budget=eur(100000),
            )
        )
    )
    before = snapshot(promo_db)
    quote = await promo.ValidatePromoCode(
        pb.ValidatePromoCodeRequest(
            code="shoes-10eur", user_id="u1", lines=CART, shipping=eur(495), first_order=True
        )
    )
    assert (quote.applicable, quote.reason) == (True, "")
    assert quote.subtotal == eur(2 * 4999 + 2500 + 3001 + 495)
    assert quote.discount == eur(1000)
    # 1000 over the shoes: 9998 and 3001 of 12999 -> 769.14 and 230.86: floors 769 + 230, the
    # unit left over to the larger remainder (the second pair of shoes).
    assert [(d.sku, d.discount.amount_minor) for d in quote.line_discounts] == [
        ("shoe-1", 769),
        ("shirt-1", 0),
        ("shoe-2", 231),
    ]
    assert quote.shipping_discount == eur(0)
    assert snapshot(promo_db) == before


async def test_cart_reasons(promo: Stub) -> None:
    async def code(name: str, **rules: Any) -> None:
        await promo.CreatePromoCode(
            pb.CreatePromoCodeRequest(
                promo_code=pb.PromoCode(
                    code=name, percentage=pb.PercentageDiscount(basis_points=10000), **rules
                )
            )
        )

    async def why(name: str, cart: list[Any], first: bool = False, ship: int = 0) -> str:
        quote = await promo.ValidatePromoCode(
            pb.ValidatePromoCodeRequest(
                code=name, user_id="u1", lines=cart, shipping=eur(ship), first_order=first
            )
        )
        assert quote.applicable == (quote.reason == "")
        if not quote.applicable:
            assert quote.discount.amount_minor == 0
            assert all(d.discount.amount_minor == 0 for d in quote.line_discounts)
        return quote.reason

    spring = pb.ItemTargeting(include_category_ids=["spring"])
    await code("SPRING-3", target=pb.DISCOUNT_TARGET_ITEMS, targeting=spring, min_item_quantity=3)
    await code("FREESHIP", target=pb.DISCOUNT_TARGET_SHIPPING)
    await code("WELCOME", first_order_only=True)
    three = [line(f"s{i}", 1, 1000, "spring") for i in range(3)]
    assert await why("SPRING-3", three) == ""
    assert await why("SPRING-3", three[:2]) == "ITEMS_BELOW_MINIMUM"
    assert await why("SPRING-3", CART) == "NO_MATCHING_ITEMS"
    assert await why("FREESHIP", CART) == "NO_MATCHING_ITEMS"
    free = await promo.ValidatePromoCode(
        pb.ValidatePromoCodeRequest(code="FREESHIP", user_id="u1", lines=CART, shipping=eur(495))
    )
    assert (free.discount, free.shipping_discount) == (eur(495), eur(495))
    assert await why("WELCOME", CART) == "FIRST_ORDER_ONLY"
    assert await why("WELCOME", CART, first=True) == ""


async def test_amount_only_quote_is_one_line(promo: Stub) -> None:
    await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code="PLAIN-15", percentage=pb.PercentageDiscount(basis_points=1500)
            )
        )
    )
    quote = await promo.ValidatePromoCode(
        pb.ValidatePromoCodeRequest(code="PLAIN-15", user_id="u1", order_amount=eur(999))
    )
    assert quote.discount == eur(149) and quote.subtotal == eur(999)
    assert [(d.sku, d.discount) for d in quote.line_discounts] == [("", eur(149))]


@pytest.mark.parametrize(
    ("cart", "amount", "paths"),
    [
        ([line("a", 0, 100)], None, {"lines[0].quantity"}),
        ([line("a", -3, 100)], None, {"lines[0].quantity"}),
        (
            [
                line("a", 1, 100),
                common_pb2.LineItem(
                    sku="b",
                    quantity=1,
                    unit_price=common_pb2.Money(currency_code="USD", amount_minor=5),
                ),
            ],
            None,
            {"lines[1].unit_price.currency_code"},
        ),
        ([line("a", 1, 100), line("a", 2, 50)], None, {"lines[1].sku"}),
        ([line(f"k{i}", 1, 1) for i in range(5000)], None, {"lines"}),
        ([line("a", 1, 100)], eur(99), {"order_amount.amount_minor"}),
        ([common_pb2.LineItem(sku="", quantity=1, unit_price=eur(1))], None, {"lines[0].sku"}),
    ],
    ids=[
        "zero",
        "negative",
        "currency",
        "duplicate-sku",
        "5000-lines",
        "amount-mismatch",
        "no-sku",
    ],
)
async def test_bad_carts_are_invalid_argument_and_write_nothing(
    promo: Stub, saga: Stub, promo_db: Any, cart: list[Any], amount: Any, paths: set[str]
) -> None:
    before = snapshot(promo_db)
    for call in ("ValidatePromoCode", "RedeemPromoCode"):
        request: Any = (
            pb.ValidatePromoCodeRequest(code="PLAIN-15", user_id="u1", lines=cart)
            if call == "ValidatePromoCode"
            else pb.RedeemPromoCodeRequest(
                code="PLAIN-15", user_id="u1", lines=cart, redemption_id="bad-cart"
            )
        )
        if amount is not None:
            request.order_amount.CopyFrom(amount)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            # Redeem as orders, its only caller (entrypoints/policy.py).
            await getattr(promo if call == "ValidatePromoCode" else saga, call)(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, call
        details = bad_request(caught.value)
        assert details is not None
        assert {v.field for v in details.field_violations} == paths, call
    assert snapshot(promo_db) == before


async def test_bad_offer_is_refused(promo: Stub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await promo.CreatePromoCode(
            pb.CreatePromoCodeRequest(
                promo_code=pb.PromoCode(
                    code="BAD-OFFER",
                    fixed_amount=eur(100),
                    allocation=pb.ALLOCATION_PER_UNIT,
                    max_quantity=0,
                    target=7,  # type: ignore[arg-type]
                    targeting=pb.ItemTargeting(include_skus=[""]),
                )
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = bad_request(caught.value)
    assert details is not None
    assert {v.field for v in details.field_violations} == {
        "promo_code.target",
        "promo_code.allocation",
        "promo_code.max_quantity",
        "promo_code.targeting.include_skus[0]",
    }


async def test_redeem_stores_the_split_on_the_usage(
    promo: Stub, saga: Stub, users: Any, promo_db: Any
) -> None:
    (user_id,) = await create_users(users, 1, "cart-split")
    await promo.CreatePromoCode(
        pb.CreatePromoCodeRequest(
            promo_code=pb.PromoCode(
                code="CART-7PCT",
                percentage=pb.PercentageDiscount(basis_points=700),
                max_uses=10,
            )
        )
    )
    request = pb.RedeemPromoCodeRequest(
        code="CART-7PCT", user_id=user_id, lines=CART, shipping=eur(495), redemption_id="split-1"
    )
    usage = await saga.RedeemPromoCode(request)
    subtotal = 2 * 4999 + 2500 + 3001 + 495
    assert usage.order_amount == eur(subtotal)
    assert usage.discount == eur(subtotal * 700 // 10000)
    shares = [d.discount.amount_minor for d in usage.line_discounts]
    assert sum(shares) + usage.shipping_discount.amount_minor == usage.discount.amount_minor
    assert [d.sku for d in usage.line_discounts] == ["shoe-1", "shirt-1", "shoe-2"]
    stored = promo_db.promo_code_usages.find_one({"_id": "split-1"})
    assert [line["discount"] for line in stored["lines"]] == shares
    assert stored["shipping_discount"] == usage.shipping_discount.amount_minor
    # A retry with the same cart replays; another cart under the same id is a conflict.
    assert await saga.RedeemPromoCode(request) == usage
    other = pb.RedeemPromoCodeRequest()
    other.CopyFrom(request)
    other.lines[1].quantity = 2
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await saga.RedeemPromoCode(other)
    assert reason(caught.value) == "REDEMPTION_CONFLICT"


async def test_concurrent_first_orders_of_one_user_get_at_most_one(
    promo: Stub,
    saga: Stub,
    users: Any,
    promo_db: Any,
    stack: Stack,
    users_service: ServiceProcess,
    promo_db_name: str,
) -> None:
    """Two first-order-only codes, many concurrent first orders of each of a few users, spread
    over two replicas of the service on the same database: each user holds exactly one
    first-order redemption; the rest are FIRST_ORDER_ONLY; a release gives the slot back."""
    second = promocodes_process(stack, promo_db_name, users_service.address)
    second.start_and_wait()
    try:
        async with second.channel(identity="orders") as channel:
            await _first_orders(promo, saga, Stub(channel), users, promo_db)
    finally:
        second.terminate()


async def _first_orders(promo: Stub, saga: Stub, replica: Stub, users: Any, promo_db: Any) -> None:
    """`promo` manages the catalogue (back-office); `saga` and `replica` redeem as orders."""
    user_ids = await create_users(users, 4, "first-order")
    for name in ("WELCOME-A", "WELCOME-B"):
        await promo.CreatePromoCode(
            pb.CreatePromoCodeRequest(
                promo_code=pb.PromoCode(code=name, fixed_amount=eur(500), first_order_only=True)
            )
        )

    async def attempt(user_id: str, index: int) -> Any:
        code = "WELCOME-A" if index % 2 else "WELCOME-B"
        stub = saga if (index // 2) % 2 else replica
        try:
            return await stub.RedeemPromoCode(
                pb.RedeemPromoCodeRequest(
                    code=code,
                    user_id=user_id,
                    order_amount=eur(2000),
                    redemption_id=f"fo-{user_id}-{index}",
                    first_order=True,
                ),
                timeout=60,
            )
        except grpc.aio.AioRpcError as error:
            return error

    outcomes = await asyncio.gather(*(attempt(u, i) for u in user_ids for i in range(6)))
    granted = [o for o in outcomes if isinstance(o, pb.PromoCodeUsage)]
    refused = {(o.code(), reason(o)) for o in outcomes if isinstance(o, grpc.aio.AioRpcError)}
    assert sorted(u.user_id for u in granted) == sorted(user_ids)
    assert refused == {(grpc.StatusCode.FAILED_PRECONDITION, "FIRST_ORDER_ONLY")}
    for user_id in user_ids:
        assert promo_db.promo_code_usages.count_documents({"first_order_slot": user_id}) == 1
    # Nothing left reserved, and the codes' counters equal their usages.
    for name in ("WELCOME-A", "WELCOME-B"):
        code = promo_db.promo_codes.find_one({"code": name})
        assert code["pending"] == {}
        active = promo_db.promo_code_usages.count_documents(
            {"promo_id": code["_id"], "status": "ACTIVE"}
        )
        assert code["uses"] == active
    # Cancelling the first order gives the slot back.
    first = granted[0]
    await saga.ReleasePromoCode(pb.ReleasePromoCodeRequest(redemption_id=first.id))
    again = await attempt(first.user_id, 100)
    assert isinstance(again, pb.PromoCodeUsage), again
    late = await attempt(first.user_id, 101)
    assert isinstance(late, grpc.aio.AioRpcError) and reason(late) == "FIRST_ORDER_ONLY"
    assert promo_db.promo_code_usages.count_documents({"first_order_slot": first.user_id}) == 1
