"""One currency rule for every service: active ISO 4217 codes that have a minor unit."""

import pytest

from promo_libs.identifiers import MINOR_UNIT_EXPONENTS, check_currency


@pytest.mark.parametrize("code", ["EUR", "USD", "JPY", "KWD", "CHF", "CLF"])
def test_active_codes_pass(code: str) -> None:
    assert check_currency(code) == code


@pytest.mark.parametrize(
    "code",
    [
        "ABC",  # three capitals, no currency: used to pass and split analytics in two
        "DEM",  # withdrawn (Deutsche Mark, replaced by EUR)
        "XXX",  # "no currency"
        "XTS",  # reserved for testing
        "XAU",  # gold: no minor unit
        "eur",
        "EURO",
        "",
    ],
)
def test_everything_else_is_refused(code: str) -> None:
    with pytest.raises(ValueError):
        check_currency(code)


def test_amount_minor_counts_the_minor_unit_of_each_currency() -> None:
    # What amount_minor means (protos/promo/v1/common.proto): 10^exponent make one unit.
    assert (MINOR_UNIT_EXPONENTS["EUR"], MINOR_UNIT_EXPONENTS["JPY"]) == (2, 0)
    assert MINOR_UNIT_EXPONENTS["KWD"] == 3
