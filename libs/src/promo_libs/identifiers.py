"""Field rules every service applies alike: ids and currency codes. Pure, no I/O.

Each raises ValueError with the text of a field violation (the caller names the field), so the
same id is accepted or refused with the same words by every service.
"""

from __future__ import annotations

import re

# Ids are what the services generate (24 hex characters) or what a caller chose before, up to 64
# ASCII letters and digits: nothing that needs escaping in a log, a key or a query.
MAX_ID_LENGTH = 64

_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")


def check_id(value: str, what: str = "id") -> str:
    if not value:
        raise ValueError("is required")
    if len(value) > MAX_ID_LENGTH or not value.isascii() or not value.isalnum():
        raise ValueError(f"is not a valid {what}")
    return value


def check_currency(value: str) -> str:
    if not value:
        raise ValueError("is required")
    if not _CURRENCY_RE.match(value):
        raise ValueError("must be a three-letter ISO 4217 code in upper case")
    return value
