"""Input rules of orders. Each function returns the normalized value or raises ValueError whose
text fits a field violation. Code and id rules match PromoCodeService's, so a request refused by
it is refused here first, before anything is written."""

from __future__ import annotations

import unicodedata

from promo_libs import identifiers

MAX_AMOUNT = 10**12  # minor units; sums stay far inside int64
MAX_IDEMPOTENCY_KEY_LENGTH = 128
MAX_CANCEL_REASON_LENGTH = 500


def check_amount(value: int) -> int:
    if value < 1:
        raise ValueError("must be at least 1")
    if value > MAX_AMOUNT:
        raise ValueError(f"must be at most {MAX_AMOUNT}")
    return value


def normalize_code(raw: str) -> str:
    """The order's code in PromoCodeService's form; optional, so given empty it is refused as
    such (not "is required")."""
    if not raw:
        raise ValueError("must not be empty when given")
    return identifiers.normalize_code(raw)


def check_idempotency_key(value: str) -> str:
    if not value:
        raise ValueError("is required")
    if len(value) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in value):
        raise ValueError("must not contain control characters")
    return value


def check_cancel_reason(value: str) -> str:
    if len(value) > MAX_CANCEL_REASON_LENGTH:
        raise ValueError(f"must be at most {MAX_CANCEL_REASON_LENGTH} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cs") and ch not in "\n\t" for ch in value):
        raise ValueError("must not contain control characters")
    return value
