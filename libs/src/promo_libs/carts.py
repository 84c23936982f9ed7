"""The cart of a request (lines, shipping, the amount), checked alike by every service. Pure.

OrderService.CreateOrder, PromoCodeService.ValidatePromoCode and RedeemPromoCode take the same
cart (promo.v1.LineItem): one set of rules here, so a cart the orders service accepts is one the
promo-code service accepts, with the same field violations.

Rules (each broken one is a field violation on its own path; a cart with any is refused whole,
nothing is written, I5):
- at most MAX_LINES lines (checked before any line is looked at: thousands of lines cost one
  violation, not thousands);
- sku 1..128 printable ASCII characters, unique in the cart; product id at most 128 such
  characters; at most MAX_CATEGORIES category ids, each 1..128 such characters;
- quantity 1..MAX_QUANTITY; unit price 0..MAX_AMOUNT in the order's currency; shipping the same;
- the subtotal (lines plus shipping) 1..MAX_AMOUNT, so sums and products stay inside int64;
- the order's currency is `amount`'s when given, else the first line's, else shipping's; `amount`
  is always the subtotal: required without lines, and with lines it must equal their sum;
- a request without lines is one line: empty sku, quantity 1, unit price = amount - shipping.
"""

from __future__ import annotations

from dataclasses import dataclass

from promo_libs import errors
from promo_libs.identifiers import check_currency

MAX_LINES = 1000
MAX_QUANTITY = 1_000_000
MAX_CATEGORIES = 20
MAX_TEXT = 128
MAX_AMOUNT = 10**12


@dataclass(frozen=True, slots=True)
class MoneyValue:
    currency_code: str
    amount_minor: int


@dataclass(frozen=True, slots=True)
class LineInput:
    """One promo.v1.LineItem as given (unit_price None = unset)."""

    sku: str
    quantity: int
    unit_price: MoneyValue | None
    product_id: str = ""
    category_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CartLine:
    sku: str
    quantity: int
    unit_price: int
    product_id: str = ""
    category_ids: tuple[str, ...] = ()

    @property
    def amount(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True, slots=True)
class CheckedCart:
    currency: str
    lines: tuple[CartLine, ...]
    shipping: int = 0

    @property
    def subtotal(self) -> int:
        return sum(line.amount for line in self.lines) + self.shipping


def check_text(value: str, required: bool) -> str | None:
    """A violation text for an sku / product / category id, or None when it is fine."""
    if not value:
        return "is required" if required else None
    if len(value) > MAX_TEXT or not value.isascii() or not value.isprintable():
        return f"must be 1..{MAX_TEXT} printable ASCII characters"
    return None


def _amount(violations: errors.Violations, path: str, value: int) -> bool:
    if not 0 <= value <= MAX_AMOUNT:
        violations.add(path, f"must be 0..{MAX_AMOUNT}")
        return False
    return True


def check_cart(
    violations: errors.Violations,
    *,
    amount: MoneyValue | None,
    lines: list[LineInput] | tuple[LineInput, ...],
    shipping: MoneyValue | None,
    amount_path: str,
    lines_path: str = "lines",
    shipping_path: str = "shipping",
) -> CheckedCart | None:
    """The checked cart, or None with the reasons added to `violations` (module docstring)."""
    if len(lines) > MAX_LINES:
        violations.add(lines_path, f"must hold at most {MAX_LINES} lines")
        return None
    if not lines and amount is None:
        violations.add(amount_path, "is required")
        return None
    currency = _currency(violations, amount, lines, shipping, amount_path, lines_path)
    if currency is None:
        return None
    ship = _shipping(violations, shipping_path, shipping, currency)
    if lines:
        checked = _lines(violations, lines_path, lines, currency)
    else:
        assert amount is not None
        checked = _amount_line(
            violations, f"{amount_path}.amount_minor", amount.amount_minor, ship or 0
        )
    if checked is None or ship is None:
        return None
    cart = CheckedCart(currency, checked, ship)
    subtotal = cart.subtotal
    if not 1 <= subtotal <= MAX_AMOUNT:
        violations.add(lines_path if lines else amount_path, f"subtotal must be 1..{MAX_AMOUNT}")
        return None
    if lines and amount is not None and amount.amount_minor != subtotal:
        violations.add(
            f"{amount_path}.amount_minor", f"must equal the subtotal of the lines ({subtotal})"
        )
        return None
    return cart


def _amount_line(
    violations: errors.Violations, path: str, value: int, shipping: int
) -> tuple[CartLine, ...] | None:
    """A request without lines: `amount` is still the subtotal, so its one line (empty sku,
    quantity 1) is the amount less shipping."""
    if not 1 <= value <= MAX_AMOUNT:
        violations.add(path, f"must be 1..{MAX_AMOUNT}")
        return None
    if value < shipping:
        violations.add(path, "must be at least the shipping amount")
        return None
    return (CartLine("", 1, value - shipping),)


def _lines(
    violations: errors.Violations,
    lines_path: str,
    lines: list[LineInput] | tuple[LineInput, ...],
    currency: str,
) -> tuple[CartLine, ...] | None:
    before = len(violations.items)
    checked: list[CartLine] = []
    seen: dict[str, int] = {}
    for index, line in enumerate(lines):
        path = f"{lines_path}[{index}]"
        first = seen.setdefault(line.sku, index)
        if first != index:
            violations.add(f"{path}.sku", f"duplicates {lines_path}[{first}].sku")
        item = _line(violations, path, line, currency)
        if item is not None:
            checked.append(item)
    return None if violations.items[before:] else tuple(checked)


def _shipping(
    violations: errors.Violations, path: str, shipping: MoneyValue | None, currency: str
) -> int | None:
    if shipping is None:
        return 0
    if shipping.currency_code != currency:
        violations.add(f"{path}.currency_code", f"must be the order's ({currency})")
        return None
    if not _amount(violations, f"{path}.amount_minor", shipping.amount_minor):
        return None
    return shipping.amount_minor


def _currency(
    violations: errors.Violations,
    amount: MoneyValue | None,
    lines: list[LineInput] | tuple[LineInput, ...],
    shipping: MoneyValue | None,
    amount_path: str,
    lines_path: str,
) -> str | None:
    if amount is not None:
        path, given = f"{amount_path}.currency_code", amount.currency_code
    elif lines[0].unit_price is not None:
        path, given = f"{lines_path}[0].unit_price.currency_code", lines[0].unit_price.currency_code
    elif shipping is not None:
        path, given = "shipping.currency_code", shipping.currency_code
    else:
        violations.add(f"{lines_path}[0].unit_price", "is required")
        return None
    try:
        return check_currency(given)
    except ValueError as exc:
        violations.add(path, str(exc))
        return None


def _texts(violations: errors.Violations, path: str, line: LineInput) -> None:
    for name, value, required in (("sku", line.sku, True), ("product_id", line.product_id, False)):
        problem = check_text(value, required)
        if problem:
            violations.add(f"{path}.{name}", problem)
    if len(line.category_ids) > MAX_CATEGORIES:
        violations.add(f"{path}.category_ids", f"must hold at most {MAX_CATEGORIES} ids")
        return
    for number, category in enumerate(line.category_ids):
        problem = check_text(category, True)
        if problem:
            violations.add(f"{path}.category_ids[{number}]", problem)


def _line(
    violations: errors.Violations, path: str, line: LineInput, currency: str
) -> CartLine | None:
    before = len(violations.items)
    _texts(violations, path, line)
    if not 1 <= line.quantity <= MAX_QUANTITY:
        violations.add(f"{path}.quantity", f"must be 1..{MAX_QUANTITY}")
    price = line.unit_price
    if price is None:
        violations.add(f"{path}.unit_price", "is required")
    elif price.currency_code != currency:
        violations.add(f"{path}.unit_price.currency_code", f"must be the order's ({currency})")
    else:
        _amount(violations, f"{path}.unit_price.amount_minor", price.amount_minor)
    if violations.items[before:] or price is None:
        return None
    return CartLine(
        line.sku, line.quantity, price.amount_minor, line.product_id, tuple(line.category_ids)
    )
