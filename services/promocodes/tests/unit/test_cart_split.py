"""Property tests of the cart arithmetic (domain/cart.py): for every target and allocation the
shares are exact, add up to the total, are never negative and never above their line, and the
total follows the documented rounding rule (floored, in the merchant's favour)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from promo_libs.carts import CartLine
from promocodes_service.domain.cart import (
    ITEMS_BELOW_MINIMUM,
    NO_MATCHING_ITEMS,
    Allocation,
    Cart,
    Offer,
    Target,
    Targeting,
    largest_remainder,
    quote,
    split,
)
from promocodes_service.domain.rules import BASIS_POINTS_WHOLE, Discount, FixedAmount, Percentage

PRODUCTS = ["p1", "p2", "p3"]
CATEGORIES = ["shoes", "spring", "sale"]


@st.composite
def carts(draw: st.DrawFn) -> Cart:
    count = draw(st.integers(1, 12))
    lines = tuple(
        CartLine(
            sku=f"sku-{i}",
            quantity=draw(st.integers(1, 50)),
            unit_price=draw(st.integers(0, 10**6)),
            product_id=draw(st.sampled_from(PRODUCTS)),
            category_ids=tuple(draw(st.sets(st.sampled_from(CATEGORIES), max_size=2))),
        )
        for i in range(count)
    )
    return Cart(lines, draw(st.integers(0, 10**5)))


discounts: st.SearchStrategy[Discount] = st.one_of(
    st.builds(
        Percentage,
        st.integers(1, BASIS_POINTS_WHOLE),
        st.one_of(st.none(), st.integers(1, 10**7)),
    ),
    st.builds(FixedAmount, st.integers(1, 10**8)),
)

targetings = st.builds(
    Targeting,
    include_products=st.frozensets(st.sampled_from(PRODUCTS), max_size=2),
    include_categories=st.frozensets(st.sampled_from(CATEGORIES), max_size=2),
    exclude_categories=st.frozensets(st.sampled_from(CATEGORIES), max_size=1),
)

offers = st.builds(
    Offer,
    target=st.sampled_from(list(Target)),
    targeting=targetings,
    allocation=st.sampled_from(list(Allocation)),
    max_quantity=st.one_of(st.none(), st.integers(1, 100)),
)


def _base(offer: Offer, cart: Cart) -> int:
    if offer.target is Target.SHIPPING:
        return cart.shipping
    if offer.target is Target.ORDER:
        return cart.subtotal
    return sum(line.amount for line in cart.lines if offer.targeting.matches(line))


def _check_exact(offer: Offer, cart: Cart, total: int, lines: tuple[int, ...], ship: int) -> None:
    assert len(lines) == len(cart.lines)
    assert sum(lines) + ship == total
    assert 0 <= ship <= cart.shipping
    for line, share in zip(cart.lines, lines, strict=True):
        assert 0 <= share <= line.amount
        if offer.target is Target.SHIPPING:
            assert share == 0
        if offer.target is Target.ITEMS and not offer.targeting.matches(line):
            assert share == 0
    assert total <= _base(offer, cart)


@given(offers, discounts, carts())
def test_shares_are_exact_for_every_target_and_allocation(
    offer: Offer, discount: Discount, cart: Cart
) -> None:
    result = split(offer, discount, cart)
    _check_exact(offer, cart, result.total, result.lines, result.shipping)


@given(offers, discounts, carts())
def test_total_is_floored_then_capped(offer: Offer, discount: Discount, cart: Cart) -> None:
    result = split(offer, discount, cart)
    base = _base(offer, cart)
    per_unit = offer.target is Target.ITEMS and offer.allocation is Allocation.PER_UNIT
    if per_unit:
        expected = _per_unit_expected(offer, discount, cart)
    elif isinstance(discount, Percentage):
        expected = base * discount.basis_points // BASIS_POINTS_WHOLE
    else:
        expected = min(discount.amount, base)
    if isinstance(discount, Percentage) and discount.max_discount is not None:
        expected = min(expected, discount.max_discount)
    assert result.total == expected
    if isinstance(discount, Percentage):
        # In the merchant's favour: never more than the exact percentage of the base.
        assert Fraction(result.total) <= Fraction(base * discount.basis_points, BASIS_POINTS_WHOLE)


def _per_unit_expected(offer: Offer, discount: Discount, cart: Cart) -> int:
    """An independent model: expand every matching unit, cheapest first, take max_quantity."""
    units = sorted(
        (line.unit_price, index)
        for index, line in enumerate(cart.lines)
        if offer.targeting.matches(line)
        for _ in range(line.quantity)
    )
    if offer.max_quantity is not None:
        units = units[: offer.max_quantity]
    if isinstance(discount, FixedAmount):
        return sum(min(discount.amount, price) for price, _ in units)
    return sum(price * discount.basis_points // BASIS_POINTS_WHOLE for price, _ in units)


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=30), st.data())
def test_largest_remainder_rule(weights: list[int], data: st.DataObject) -> None:
    total = data.draw(st.integers(0, sum(weights)))
    shares = largest_remainder(total, weights)
    assert sum(shares) == total
    whole = sum(weights)
    for weight, share in zip(weights, shares, strict=True):
        assert 0 <= share <= weight
        if whole:
            # Within one minor unit of the exact proportional share, never below its floor.
            exact = Fraction(total * weight, whole)
            assert exact - 1 < share < exact + 1
            assert share >= total * weight // whole


def test_largest_remainder_ties_go_to_the_earlier_line() -> None:
    assert largest_remainder(1, [1, 1, 1]) == [1, 0, 0]
    assert largest_remainder(2, [1, 1, 1]) == [1, 1, 0]


def test_largest_remainder_example() -> None:
    # 10 over three equal lines of 100: 3.33 each, the one left over goes to the first line.
    assert largest_remainder(10, [100, 100, 100]) == [4, 3, 3]
    # 5 over 3/3/4: exact 1.5/1.5/2 -> floors 1/1/2, one unit to the tie's earlier line.
    assert largest_remainder(5, [3, 3, 4]) == [2, 1, 2]


SHOES = CartLine("s1", 2, 5000, "p1", ("shoes",))
SHIRT = CartLine("t1", 1, 3000, "p2", ("shirts",))


def test_twenty_percent_off_shoes_falls_on_the_shoes_only() -> None:
    offer = Offer(Target.ITEMS, Targeting(include_categories=frozenset({"shoes"})))
    result = quote(offer, Percentage(2000), Cart((SHOES, SHIRT), 500))
    assert result.reason == ""
    assert result.split.total == 2000
    assert result.split.lines == (2000, 0)
    assert result.split.shipping == 0


def test_free_shipping() -> None:
    offer = Offer(Target.SHIPPING)
    result = quote(offer, Percentage(BASIS_POINTS_WHOLE), Cart((SHOES,), 499))
    assert (result.split.total, result.split.lines, result.split.shipping) == (499, (0,), 499)
    assert quote(offer, Percentage(10000), Cart((SHOES,), 0)).reason == NO_MATCHING_ITEMS


def test_per_unit_takes_the_cheapest_units_up_to_the_maximum() -> None:
    offer = Offer(Target.ITEMS, allocation=Allocation.PER_UNIT, max_quantity=2)
    result = quote(offer, FixedAmount(1000), Cart((SHOES, SHIRT)))
    # Cheapest first: the shirt (3000), then one pair of shoes (5000): 1000 each.
    assert result.split.lines == (1000, 1000)
    assert result.split.total == 2000


def test_conditions_minimum_units_and_amount_of_matching_items() -> None:
    spring = Targeting(include_categories=frozenset({"spring"}))
    items = tuple(CartLine(f"k{i}", 1, 1000, "p", ("spring",)) for i in range(3))
    three = Offer(Target.ORDER, spring, min_item_quantity=3)
    assert quote(three, FixedAmount(1000), Cart(items)).reason == ""
    assert quote(three, FixedAmount(1000), Cart(items[:2])).reason == ITEMS_BELOW_MINIMUM
    amount = Offer(Target.ITEMS, spring, min_item_amount=3001)
    assert quote(amount, FixedAmount(1000), Cart(items)).reason == ITEMS_BELOW_MINIMUM
    assert quote(three, FixedAmount(1000), Cart((SHIRT,))).reason == NO_MATCHING_ITEMS


def test_exclusion_beats_inclusion() -> None:
    targeting = Targeting(
        include_products=frozenset({"p1"}), exclude_categories=frozenset({"shoes"})
    )
    assert not targeting.matches(SHOES)
    assert Targeting().matches(SHOES)
    assert Targeting(include_skus=frozenset({"t1"})).matches(SHIRT)
    assert not Targeting(exclude_skus=frozenset({"t1"})).matches(SHIRT)


@given(discounts, st.integers(1, 10**9))
def test_an_amount_only_cart_keeps_the_old_discount(discount: Discount, amount: int) -> None:
    result = split(Offer(), discount, Cart.of_amount(amount))
    assert result.total == discount.discount(amount)
    assert result.lines == (result.total,)
