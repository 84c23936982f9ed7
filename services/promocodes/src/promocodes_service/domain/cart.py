"""Carts, targeting and the exact split of a discount over a cart's lines. Pure: no I/O.

A cart is lines (`quantity` units of one sku at `unit_price`: promo_libs.carts.CartLine, the line
every service checks alike) plus a shipping amount; its subtotal is the sum. An offer (the cart
part of a code's rules) says what the discount applies to (the ORDER subtotal, the matching ITEMS,
or SHIPPING), which lines match (include / exclude lists of products, categories, skus), the
conditions on the matching lines (minimum units, minimum amount) and how an ITEMS discount is
computed (ACROSS the matching lines at once, or PER_UNIT with an optional maximum number of
units).

The rounding rule, always in the merchant's favour, and the guarantees it gives (`Split`):
- the total is floored: a percentage gives floor(base * bp / 10000), then the cap; a fixed amount
  never exceeds its base; PER_UNIT floors each unit's discount (cheapest units first, ties in line
  order, at most max_quantity units) and caps their sum;
- the shares: each weighted line (its amount; per unit: its uncapped units' discount) gets
  floor(total * weight / sum of weights); the minor units left over (fewer than the number of
  lines with a non-zero remainder) go one each to the largest remainders, ties to the earlier
  line. Because total <= sum of weights and weight <= line amount, a share never exceeds its line;
  shares are never negative and add up to the total exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from promo_libs.carts import CartLine
from promocodes_service.domain.rules import BASIS_POINTS_WHOLE, Discount, FixedAmount, Percentage

MAX_TARGETING_IDS = 1000

NO_MATCHING_ITEMS = "NO_MATCHING_ITEMS"
ITEMS_BELOW_MINIMUM = "ITEMS_BELOW_MINIMUM"
FIRST_ORDER_ONLY = "FIRST_ORDER_ONLY"


class Target(Enum):
    ORDER = "ORDER"
    ITEMS = "ITEMS"
    SHIPPING = "SHIPPING"


class Allocation(Enum):
    ACROSS = "ACROSS"
    PER_UNIT = "PER_UNIT"


@dataclass(frozen=True, slots=True)
class Cart:
    lines: tuple[CartLine, ...]
    shipping: int = 0

    @classmethod
    def of_amount(cls, amount: int) -> Cart:
        """The cart of an amount-only request: one line, no sku, quantity 1."""
        return cls((CartLine("", 1, amount),))

    @property
    def items_amount(self) -> int:
        return sum(line.amount for line in self.lines)

    @property
    def subtotal(self) -> int:
        return self.items_amount + self.shipping


@dataclass(frozen=True, slots=True)
class Targeting:
    include_products: frozenset[str] = frozenset()
    include_categories: frozenset[str] = frozenset()
    include_skus: frozenset[str] = frozenset()
    exclude_products: frozenset[str] = frozenset()
    exclude_categories: frozenset[str] = frozenset()
    exclude_skus: frozenset[str] = frozenset()

    @property
    def restricts(self) -> bool:
        return any(
            (
                self.include_products,
                self.include_categories,
                self.include_skus,
                self.exclude_products,
                self.exclude_categories,
                self.exclude_skus,
            )
        )

    def matches(self, line: CartLine) -> bool:
        """Included by any include list (every line when all are empty), excluded by none."""
        categories = set(line.category_ids)
        if (
            line.sku in self.exclude_skus
            or (line.product_id and line.product_id in self.exclude_products)
            or categories & self.exclude_categories
        ):
            return False
        if not (self.include_products or self.include_categories or self.include_skus):
            return True
        return bool(
            line.sku in self.include_skus
            or (line.product_id and line.product_id in self.include_products)
            or categories & self.include_categories
        )


@dataclass(frozen=True, slots=True)
class Offer:
    """The cart part of a code's rules. The default is the pre-cart behaviour: the whole order."""

    target: Target = Target.ORDER
    targeting: Targeting = Targeting()
    allocation: Allocation = Allocation.ACROSS
    max_quantity: int | None = None
    min_item_quantity: int | None = None
    min_item_amount: int | None = None
    first_order_only: bool = False


@dataclass(frozen=True, slots=True)
class Split:
    """A discount and where it falls: `lines[i]` is the share of cart line i."""

    total: int
    lines: tuple[int, ...]
    shipping: int = 0

    @classmethod
    def nothing(cls, cart: Cart) -> Split:
        return cls(0, (0,) * len(cart.lines))


@dataclass(frozen=True, slots=True)
class CartQuote:
    split: Split
    reason: str = ""


def conditions(offer: Offer, cart: Cart) -> str:
    """The first failing cart condition's reason, or "" (first-order is checked by the caller,
    which alone knows the user's history)."""
    if offer.target is Target.SHIPPING and cart.shipping <= 0:
        return NO_MATCHING_ITEMS
    matching = [line for line in cart.lines if offer.targeting.matches(line)]
    if (offer.target is Target.ITEMS or offer.targeting.restricts) and not any(
        line.amount > 0 for line in matching
    ):
        return NO_MATCHING_ITEMS
    units = sum(line.quantity for line in matching)
    amount = sum(line.amount for line in matching)
    if offer.min_item_quantity is not None and units < offer.min_item_quantity:
        return ITEMS_BELOW_MINIMUM
    if offer.min_item_amount is not None and amount < offer.min_item_amount:
        return ITEMS_BELOW_MINIMUM
    return ""


def quote(offer: Offer, discount: Discount, cart: Cart) -> CartQuote:
    """The conditions, then the discount and its split (see the module docstring)."""
    reason = conditions(offer, cart)
    if reason:
        return CartQuote(Split.nothing(cart), reason)
    return CartQuote(split(offer, discount, cart))


def split(offer: Offer, discount: Discount, cart: Cart) -> Split:
    if offer.target is Target.SHIPPING:
        total = discount.discount(cart.shipping)
        return Split(total, (0,) * len(cart.lines), total)
    if offer.target is Target.ORDER:
        # The subtotal, shipping included, shares by amount; shipping is the last weight.
        weights = [line.amount for line in cart.lines] + [cart.shipping]
        total = discount.discount(cart.subtotal)
        shares = largest_remainder(total, weights)
        return Split(total, tuple(shares[:-1]), shares[-1])
    matching = [offer.targeting.matches(line) for line in cart.lines]
    if offer.allocation is Allocation.PER_UNIT:
        weights = _per_unit(offer, discount, cart, matching)
        total = sum(weights)
        if isinstance(discount, Percentage) and discount.max_discount is not None:
            total = min(total, discount.max_discount)
        return Split(total, tuple(largest_remainder(total, weights)))
    weights = [line.amount if hit else 0 for line, hit in zip(cart.lines, matching, strict=True)]
    total = discount.discount(sum(weights))
    return Split(total, tuple(largest_remainder(total, weights)))


def _per_unit(offer: Offer, discount: Discount, cart: Cart, matching: Sequence[bool]) -> list[int]:
    """Each line's uncapped per-unit discount: cheapest units first (ties in line order), at most
    max_quantity units. Fixed: min(amount, unit price) a unit; percentage: floored per unit."""
    weights = [0] * len(cart.lines)
    left = offer.max_quantity
    order = sorted(
        (i for i, hit in enumerate(matching) if hit), key=lambda i: (cart.lines[i].unit_price, i)
    )
    for index in order:
        line = cart.lines[index]
        units = line.quantity if left is None else min(line.quantity, left)
        if isinstance(discount, FixedAmount):
            per_unit = min(discount.amount, line.unit_price)
        else:
            per_unit = line.unit_price * discount.basis_points // BASIS_POINTS_WHOLE
        weights[index] = units * per_unit
        if left is not None:
            left -= units
            if left == 0:
                break
    return weights


def largest_remainder(total: int, weights: Sequence[int]) -> list[int]:
    """`total` split in proportion to `weights` (0 <= total <= sum(weights)): floors, then one
    minor unit each to the largest remainders, ties to the lower index. Exact integers only."""
    whole = sum(weights)
    if total < 0 or total > whole:
        raise ValueError("total must be within 0..sum(weights)")
    if whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    left = total - sum(shares)
    if left:
        ranked = sorted(range(len(weights)), key=lambda i: (-(total * weights[i] % whole), i))
        for index in ranked[:left]:
            shares[index] += 1
    return shares
