"""Field rules every service applies alike: ids, promo codes and currency codes. Pure, no I/O.

Each raises ValueError with the text of a field violation (the caller names the field), so the
same id is accepted or refused with the same words by every service.

Currencies are the active codes of ISO 4217 (its list one, from the `iso4217` package, pinned and
dated by the list it ships) that have a minor unit. `Money.amount_minor` counts that minor unit:
10^exponent of them make one unit of the currency, so 5000 is 50.00 EUR (exponent 2), 5000 JPY
(exponent 0) and 5.000 KWD (exponent 3). Codes without a minor unit (gold XAU, XDR, the testing
code XTS, "no currency" XXX, ...) cannot be counted that way and are refused, as are withdrawn
codes and any other three letters: "ABC" used to pass, and then split analytics in two.
"""

from __future__ import annotations

import re
from types import MappingProxyType

from iso4217 import Currency

# Ids are what the services generate (24 hex characters) or what a caller chose before, up to 64
# ASCII letters and digits: nothing that needs escaping in a log, a key or a query.
MAX_ID_LENGTH = 64

# Promo codes: 3..64 characters of A-Z, 0-9, '-' and '_', compared case-insensitively (upper
# case is the stored form). Orders check a code the way PromoCodeService does, so a code it
# would refuse is refused before anything is written.
MIN_CODE_LENGTH = 3
MAX_CODE_LENGTH = 64
CODE_RE = re.compile(r"^[A-Z0-9_-]*$")

# code -> exponent of its minor unit (how many decimal places amount_minor stands for).
MINOR_UNIT_EXPONENTS = MappingProxyType(
    {c.code: c.exponent for c in Currency if c.exponent is not None}
)


def check_id(value: str, what: str = "id") -> str:
    if not value:
        raise ValueError("is required")
    if len(value) > MAX_ID_LENGTH or not value.isascii() or not value.isalnum():
        raise ValueError(f"is not a valid {what}")
    return value


def normalize_code(raw: str) -> str:
    """A promo code in its stored form (upper case)."""
    if not raw:
        raise ValueError("is required")
    code = raw.upper()
    if not raw.isascii() or not CODE_RE.match(code):
        raise ValueError("may only contain A-Z, 0-9, '-' and '_'")
    if not MIN_CODE_LENGTH <= len(code) <= MAX_CODE_LENGTH:
        raise ValueError(f"must be {MIN_CODE_LENGTH}..{MAX_CODE_LENGTH} characters")
    return code


def check_currency(value: str) -> str:
    if not value:
        raise ValueError("is required")
    if value not in MINOR_UNIT_EXPONENTS:
        raise ValueError("must be an active ISO 4217 currency code in upper case, e.g. EUR")
    return value
