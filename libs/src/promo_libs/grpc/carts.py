"""promo.v1 cart messages (LineItem, LineDiscount) to and from the plain values of promo_libs.carts.

Both OrderService and PromoCodeService take carts; one translation keeps their requests read
alike. Only translation here: the rules are in promo_libs.carts.
"""

from __future__ import annotations

from collections.abc import Sequence

from promo.v1 import common_pb2
from promo_libs.carts import MAX_CATEGORIES, MAX_LINES, LineInput
from promo_libs.grpc.mapping import money, money_value


def line_inputs(lines: Sequence[common_pb2.LineItem]) -> tuple[LineInput, ...]:
    """The lines of a request. At most one more than allowed is converted: enough for the check
    to refuse the cart, so 100,000 lines cost no more than 1001."""
    return tuple(
        LineInput(
            sku=line.sku,
            quantity=line.quantity,
            unit_price=money_value(line.unit_price) if line.HasField("unit_price") else None,
            product_id=line.product_id,
            category_ids=tuple(line.category_ids[: MAX_CATEGORIES + 1]),
        )
        for line in lines[: MAX_LINES + 1]
    )


def line_discounts(
    currency: str, skus: Sequence[str], shares: Sequence[int]
) -> list[common_pb2.LineDiscount]:
    return [
        common_pb2.LineDiscount(sku=sku, discount=money(currency, share))
        for sku, share in zip(skus, shares, strict=True)
    ]
