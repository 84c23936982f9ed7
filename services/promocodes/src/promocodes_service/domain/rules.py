"""Input rules and discount arithmetic of promo codes.

Codes: 3..64 characters of A-Z, 0-9, '-' and '_', stored in upper case and compared
case-insensitively (the normalized text is the uniqueness key): promo_libs.identifiers, whose
rule orders apply too. Generated codes draw their random part from GENERATED_ALPHABET (upper-case
letters and digits without look-alikes).

Money is integer minor units plus an ISO 4217 code; amounts are at most MAX_AMOUNT so that sums
stay far inside MongoDB's int64. Discounts: a percentage in basis points gives
floor(amount * bp / 10000) (rounding down: in the merchant's favour), then the cap; a fixed amount
gives itself; neither ever exceeds the order amount.

Each `check_*`/`normalize_*` returns the normalized value or raises ValueError whose text fits a
field violation.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from promo_libs.identifiers import CODE_RE, MAX_CODE_LENGTH, MAX_ID_LENGTH

CODE_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
GENERATED_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
DEFAULT_RANDOM_LENGTH = 12
MIN_RANDOM_LENGTH = 4
MAX_RANDOM_LENGTH = 32
MAX_GENERATE_COUNT = 10_000
MAX_DESCRIPTION_LENGTH = 1000
MAX_ELIGIBLE_USERS = 1000
MAX_RELEASE_REASON_LENGTH = 500
MAX_AMOUNT = 10**12
MAX_LIMIT = 10**9
BASIS_POINTS_WHOLE = 10_000

# Redemption ids become keys of a map in the code's document: no '.', no '$', bounded length.
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def normalize_prefix(raw: str, max_length: int = MAX_CODE_LENGTH) -> str:
    """A code prefix (generation, list filter): the code charset, possibly empty."""
    prefix = raw.upper()
    if not raw.isascii() or not CODE_RE.match(prefix):
        raise ValueError("may only contain A-Z, 0-9, '-' and '_'")
    if len(prefix) > max_length:
        raise ValueError(f"must be at most {max_length} characters")
    return prefix


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string above every string that starts with `prefix` (code charset only)."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def check_redemption_id(value: str) -> str:
    if not value:
        raise ValueError("is required")
    if len(value) > MAX_ID_LENGTH or not _KEY_RE.match(value):
        raise ValueError(f"must be 1..{MAX_ID_LENGTH} characters of A-Z, a-z, 0-9, '-' and '_'")
    return value


def check_amount(value: int, minimum: int) -> int:
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    if value > MAX_AMOUNT:
        raise ValueError(f"must be at most {MAX_AMOUNT}")
    return value


def check_limit(value: int) -> int:
    if not 1 <= value <= MAX_LIMIT:
        raise ValueError(f"must be 1..{MAX_LIMIT}")
    return value


def check_basis_points(value: int) -> int:
    if not 1 <= value <= BASIS_POINTS_WHOLE:
        raise ValueError(f"must be 1..{BASIS_POINTS_WHOLE}")
    return value


def check_description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION_LENGTH:
        raise ValueError(f"must be at most {MAX_DESCRIPTION_LENGTH} characters")
    return value


@dataclass(frozen=True, slots=True)
class Percentage:
    basis_points: int
    max_discount: int | None = None  # in the code's currency

    def discount(self, amount: int) -> int:
        value = amount * self.basis_points // BASIS_POINTS_WHOLE
        if self.max_discount is not None:
            value = min(value, self.max_discount)
        return min(value, amount)


@dataclass(frozen=True, slots=True)
class FixedAmount:
    amount: int  # in the code's currency

    def discount(self, amount: int) -> int:
        return min(self.amount, amount)


Discount = Percentage | FixedAmount


def random_code(prefix: str, length: int) -> str:
    return prefix + "".join(secrets.choice(GENERATED_ALPHABET) for _ in range(length))


def code_space(length: int) -> int:
    return int(len(GENERATED_ALPHABET) ** length)
