"""Request checks shared by the use cases: a CodeSpec becomes a RuleSet or field violations."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from promo_libs import carts, errors
from promo_libs.carts import LineInput, MoneyValue, check_text
from promo_libs.errors import checked
from promo_libs.identifiers import check_currency, check_id
from promocodes_service.domain import cart, rules
from promocodes_service.domain.commands import CodeSpec
from promocodes_service.domain.model import CURRENCY_MISMATCH, OFFER_FIELDS, RuleSet

# The PromoCode fields an operator sets (update_mask paths); "code" is immutable.
RULE_FIELDS = frozenset(
    {
        "description",
        "percentage",
        "fixed_amount",
        "valid_from",
        "valid_until",
        "min_order_amount",
        "max_uses",
        "max_uses_per_user",
        "budget",
        "eligible_user_ids",
        "active",
    }
    | OFFER_FIELDS
)
IMMUTABLE_FIELDS = frozenset(
    {
        "id",
        "code",
        "campaign_id",
        "uses",
        "discount_granted",
        "batch_id",
        "create_time",
        "update_time",
    }
)


def require_id(value: str, field: str, what: str) -> None:
    """INVALID_ARGUMENT naming `field` unless `value` is a well-formed id of `what`."""
    violations = errors.Violations()
    check_id_field(violations, field, value, what)
    violations.raise_if_any()


def check_id_field(violations: errors.Violations, field: str, value: str, what: str) -> None:
    checked(violations, field, lambda v: check_id(v, what), value)


def require(violations: errors.Violations) -> None:
    violations.raise_if_any()


def check_money(
    violations: errors.Violations, path: str, money: MoneyValue | None, minimum: int
) -> MoneyValue | None:
    """A Money field: currency and amount each checked, violations on their own paths."""
    if money is None:
        return None
    currency = checked(violations, f"{path}.currency_code", check_currency, money.currency_code)
    amount = checked(
        violations,
        f"{path}.amount_minor",
        lambda v: rules.check_amount(v, minimum),
        money.amount_minor,
    )
    if currency is None or amount is None:
        return None
    return MoneyValue(currency, amount)


def check_order_amount(
    violations: errors.Violations, money: MoneyValue | None
) -> MoneyValue | None:
    if money is None:
        violations.add("order_amount", "is required")
        return None
    return check_money(violations, "order_amount", money, 1)


@dataclass(frozen=True, slots=True)
class CheckedCart:
    currency: str
    basket: cart.Cart


def check_cart_request(
    violations: errors.Violations,
    amount: MoneyValue | None,
    lines: tuple[LineInput, ...],
    shipping: MoneyValue | None,
) -> CheckedCart | None:
    """The request's cart (promo_libs.carts has the rules). Without lines and shipping it is the
    one-line cart of order_amount, checked exactly as before carts existed. order_amount is
    always the subtotal: with shipping and no lines, the one line is order_amount - shipping."""
    if not lines and shipping is None:
        money = check_order_amount(violations, amount)
        if money is None:
            return None
        return CheckedCart(money.currency_code, cart.Cart.of_amount(money.amount_minor))
    given = carts.check_cart(
        violations, amount=amount, lines=lines, shipping=shipping, amount_path="order_amount"
    )
    if given is None:
        return None
    return CheckedCart(given.currency, cart.Cart(given.lines, given.shipping))


def build_rules(
    spec: CodeSpec,
    root: str,
    violations: errors.Violations,
    *,
    base: RuleSet | None = None,
    fields: frozenset[str] = RULE_FIELDS,
) -> RuleSet | None:
    """The rule set after taking `fields` from `spec` (the rest from `base`; everything when
    there is no base). Violations name paths under `root` (e.g. "promo_code.percentage")."""
    return _RuleBuilder(spec, root, violations, base, fields).build()


class _RuleBuilder:
    def __init__(
        self,
        spec: CodeSpec,
        root: str,
        violations: errors.Violations,
        base: RuleSet | None,
        fields: frozenset[str],
    ) -> None:
        self.spec = spec
        self.root = root
        self.violations = violations
        self.base = base
        self.fields = fields
        self.currencies: list[tuple[str, str]] = []  # (currency_code path or "", currency)

    def take(self, name: str) -> bool:
        return self.base is None or name in self.fields

    def inherit_currency(self, amount: int | None) -> None:
        if amount is not None and self.base is not None and self.base.currency is not None:
            self.currencies.append(("", self.base.currency))

    def money(
        self, name: str, given: MoneyValue | None, minimum: int, old: int | None
    ) -> int | None:
        if not self.take(name.partition(".")[0]):
            self.inherit_currency(old)
            return old
        path = f"{self.root}.{name}"
        value = check_money(self.violations, path, given, minimum)
        if value is None:
            return None
        self.currencies.append((f"{path}.currency_code", value.currency_code))
        return value.amount_minor

    def discount(self) -> rules.Discount | None:
        spec, base = self.spec, self.base
        if base is None:
            kind = spec.discount
            if not kind:
                self.violations.add(
                    f"{self.root}.percentage", "one of percentage or fixed_amount is required"
                )
                return None
        else:
            kind = next((k for k in ("percentage", "fixed_amount") if k in self.fields), "")
            if not kind:
                old = base.discount
                self.inherit_currency(
                    old.max_discount if isinstance(old, rules.Percentage) else old.amount
                )
                return old
            if spec.discount != kind:
                self.violations.add(f"{self.root}.{kind}", "is required when update_mask names it")
                return None
        if kind == "percentage":
            bp = checked(
                self.violations,
                f"{self.root}.percentage.basis_points",
                rules.check_basis_points,
                spec.basis_points,
            )
            cap = self.money("percentage.max_discount", spec.max_discount, 1, None)
            return rules.Percentage(bp, cap) if bp is not None else None
        if spec.fixed_amount is None:
            self.violations.add(f"{self.root}.fixed_amount", "is required")
            return None
        amount = self.money("fixed_amount", spec.fixed_amount, 1, None)
        return rules.FixedAmount(amount) if amount is not None else None

    def window(self) -> tuple[datetime | None, datetime | None]:
        bounds = {
            "valid_from": self.base.valid_from if self.base else None,
            "valid_until": self.base.valid_until if self.base else None,
        }
        for name in bounds:
            if self.take(name):
                bounds[name] = getattr(self.spec, name)
        start, end = bounds["valid_from"], bounds["valid_until"]
        if start is not None and end is not None and end <= start:
            self.violations.add(f"{self.root}.valid_until", "must be after valid_from")
        return start, end

    def limit(self, name: str) -> int | None:
        if not self.take(name):
            old: int | None = getattr(self.base, name)
            return old
        given: int | None = getattr(self.spec, name)
        if given is None:
            return None
        return checked(self.violations, f"{self.root}.{name}", rules.check_limit, given)

    def eligible(self) -> tuple[str, ...]:
        if not self.take("eligible_user_ids"):
            return self.base.eligible_user_ids if self.base else ()
        ids = self.spec.eligible_user_ids
        if len(ids) > rules.MAX_ELIGIBLE_USERS:
            self.violations.add(
                f"{self.root}.eligible_user_ids",
                f"must hold at most {rules.MAX_ELIGIBLE_USERS} ids",
            )
            return ()
        for index, user_id in enumerate(ids):
            checked(
                self.violations,
                f"{self.root}.eligible_user_ids[{index}]",
                lambda v: check_id(v, "user id"),
                user_id,
            )
        return tuple(dict.fromkeys(ids))

    def offer(self) -> cart.Offer:
        """The cart part: every field taken from the spec or kept from the base, then checked
        as a whole (per-unit and its maximum only for target ITEMS)."""
        spec, root = self.spec, self.root
        old = self.base.offer if self.base else cart.Offer()
        target = old.target
        if self.take("target"):
            target = _enum(self.violations, f"{root}.target", cart.Target, spec.target, "ORDER")
        allocation = old.allocation
        if self.take("allocation"):
            allocation = _enum(
                self.violations, f"{root}.allocation", cart.Allocation, spec.allocation, "ACROSS"
            )
        targeting = old.targeting
        if self.take("targeting"):
            targeting = self.targeting()
        max_quantity = self.offer_limit("max_quantity", old.max_quantity)
        min_quantity = self.offer_limit("min_item_quantity", old.min_item_quantity)
        min_amount = self.money("min_item_amount", spec.min_item_amount, 0, old.min_item_amount)
        first = spec.first_order_only if self.take("first_order_only") else old.first_order_only
        if allocation is cart.Allocation.PER_UNIT and target is not cart.Target.ITEMS:
            self.violations.add(f"{root}.allocation", "PER_UNIT needs target ITEMS")
        if max_quantity is not None and allocation is not cart.Allocation.PER_UNIT:
            self.violations.add(f"{root}.max_quantity", "is only for allocation PER_UNIT")
        return cart.Offer(
            target=target,
            targeting=targeting,
            allocation=allocation,
            max_quantity=max_quantity,
            min_item_quantity=min_quantity,
            min_item_amount=min_amount,
            first_order_only=first,
        )

    def offer_limit(self, name: str, old: int | None) -> int | None:
        if not self.take(name):
            return old
        given: int | None = getattr(self.spec, name)
        if given is None:
            return None
        return checked(self.violations, f"{self.root}.{name}", rules.check_limit, given)

    def targeting(self) -> cart.Targeting:
        given = self.spec.targeting
        path = f"{self.root}.targeting"
        lists = {
            "include_product_ids": given.include_product_ids,
            "include_category_ids": given.include_category_ids,
            "include_skus": given.include_skus,
            "exclude_product_ids": given.exclude_product_ids,
            "exclude_category_ids": given.exclude_category_ids,
            "exclude_skus": given.exclude_skus,
        }
        if sum(len(ids) for ids in lists.values()) > cart.MAX_TARGETING_IDS:
            self.violations.add(path, f"must hold at most {cart.MAX_TARGETING_IDS} ids in all")
            return cart.Targeting()
        for name, ids in lists.items():
            for index, value in enumerate(ids):
                problem = check_text(value, True)
                if problem:
                    self.violations.add(f"{path}.{name}[{index}]", problem)
        return cart.Targeting(
            include_products=frozenset(given.include_product_ids),
            include_categories=frozenset(given.include_category_ids),
            include_skus=frozenset(given.include_skus),
            exclude_products=frozenset(given.exclude_product_ids),
            exclude_categories=frozenset(given.exclude_category_ids),
            exclude_skus=frozenset(given.exclude_skus),
        )

    def currency(self) -> str | None:
        distinct = {currency for _, currency in self.currencies}
        if len(distinct) <= 1:
            return next(iter(distinct), None)
        mismatch = [
            errors.FieldViolation(path, "all Money fields of a promo code share one currency")
            for path, _ in self.currencies
            if path
        ]
        if self.violations:
            self.violations.items.extend(mismatch)
            return None
        error = errors.InvalidArgument(mismatch)
        error.reason = CURRENCY_MISMATCH
        raise error

    def build(self) -> RuleSet | None:
        base, spec = self.base, self.spec
        description = base.description if base else ""
        if self.take("description"):
            description = (
                checked(
                    self.violations,
                    f"{self.root}.description",
                    rules.check_description,
                    spec.description,
                )
                or ""
            )
        discount = self.discount()
        valid_from, valid_until = self.window()
        minimum = self.money(
            "min_order_amount", spec.min_order_amount, 0, base.min_order_amount if base else None
        )
        budget = self.money("budget", spec.budget, 1, base.budget if base else None)
        max_uses = self.limit("max_uses")
        per_user = self.limit("max_uses_per_user")
        eligible = self.eligible()
        offer = self.offer()
        active = (
            spec.active
            if base is not None and "active" in self.fields
            else (base.active if base else True)
        )
        currency = self.currency()
        if self.violations or discount is None:
            return None
        return RuleSet(
            description=description,
            discount=discount,
            currency=currency,
            valid_from=valid_from,
            valid_until=valid_until,
            min_order_amount=minimum,
            max_uses=max_uses,
            max_uses_per_user=per_user,
            budget=budget,
            eligible_user_ids=eligible,
            active=active,
            offer=offer,
        )


_E = TypeVar("_E", cart.Target, cart.Allocation)


def _enum(violations: errors.Violations, path: str, kind: type[_E], name: str, default: str) -> _E:
    """An enum value by name; "" and UNSPECIFIED mean the default."""
    if name in ("", "UNSPECIFIED"):
        return kind(default)
    try:
        return kind(name)
    except ValueError:
        violations.add(path, "is not a known value")
        return kind(default)
