"""Discount arithmetic and input rules: pure functions."""

from __future__ import annotations

import pytest

from promo_libs.identifiers import normalize_code
from promocodes_service.domain import rules

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("basis_points", "cap", "amount", "expected"),
    [
        (1000, None, 999, 99),  # 99.9 rounds down: the merchant's favour
        (1000, None, 1000, 100),
        (1, None, 9999, 0),  # 0.9999 -> 0
        (1, None, 10000, 1),
        (3333, None, 100, 33),
        (10000, None, 12345, 12345),  # 100 % is the whole amount, never more
        (2500, 500, 10000, 500),  # capped
        (2500, 500, 1000, 250),  # below the cap
        (10000, 10**12, 1, 1),
    ],
)
def test_percentage_rounds_down_then_caps(
    basis_points: int, cap: int | None, amount: int, expected: int
) -> None:
    assert rules.Percentage(basis_points, cap).discount(amount) == expected


@pytest.mark.parametrize(("fixed", "amount", "expected"), [(500, 1000, 500), (500, 300, 300)])
def test_fixed_amount_never_exceeds_the_order(fixed: int, amount: int, expected: int) -> None:
    assert rules.FixedAmount(fixed).discount(amount) == expected


def test_codes_are_normalized_to_upper_case() -> None:
    assert normalize_code("summer-2030_x") == "SUMMER-2030_X"


@pytest.mark.parametrize(
    "bad", ["", "ab", "a" * 65, "with space", "ÄBC", "semi;colon", "dot.ted", "$dollar"]
)
def test_bad_codes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_code(bad)


def test_prefix_upper_bound_covers_exactly_the_prefix() -> None:
    bound = rules.prefix_upper_bound("AB")
    assert bound > "AB" and bound > "ABZZZ" and bound > "AB_" and bound <= "AC"


@pytest.mark.parametrize("bad", ["", "a.b", "$x", "a b", "x" * 65])
def test_redemption_ids_are_safe_map_keys(bad: str) -> None:
    with pytest.raises(ValueError):
        rules.check_redemption_id(bad)


def test_generated_codes_use_the_alphabet() -> None:
    code = rules.random_code("PRE-", 12)
    assert code.startswith("PRE-") and len(code) == 16
    assert set(code[4:]) <= set(rules.GENERATED_ALPHABET)
    assert not set("01ILO") & set(rules.GENERATED_ALPHABET)
