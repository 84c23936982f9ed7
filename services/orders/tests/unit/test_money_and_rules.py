"""Money arithmetic and input rules: pure functions, no fakes needed."""

import pytest

from orders_service.domain import rules
from orders_service.domain.model import CurrencyMismatch, Money
from promo_libs.identifiers import check_currency


def test_money_subtracts_in_minor_units_of_one_currency() -> None:
    assert Money("EUR", 1999) - Money("EUR", 999) == Money("EUR", 1000)
    with pytest.raises(CurrencyMismatch):
        _ = Money("EUR", 1) - Money("USD", 1)


@pytest.mark.parametrize("raw", ["save10", "SAVE10", "Save-10_x"])
def test_codes_are_upper_cased(raw: str) -> None:
    assert rules.normalize_code(raw) == raw.upper()


@pytest.mark.parametrize("raw", ["", "ab", "x" * 65, "bad code", "ÄBC", "a.b"])
def test_bad_codes_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        rules.normalize_code(raw)


@pytest.mark.parametrize("value", ["", "eur", "EURO", "E1R"])
def test_currency_must_be_three_upper_case_letters(value: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        check_currency(value)


@pytest.mark.parametrize("value", [0, -1, rules.MAX_AMOUNT + 1])
def test_amount_bounds(value: int) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        rules.check_amount(value)


@pytest.mark.parametrize("value", ["", "k" * 129, "a\x00b", "a\nb"])
def test_idempotency_key_rules(value: str) -> None:
    with pytest.raises(ValueError, match=r"\w"):
        rules.check_idempotency_key(value)
