"""Page size and opaque page tokens for every List method (AIP-158).

A token remembers the last id of the previous page and a fingerprint of the filter it was issued
for: a token replayed with another filter, or tampered with, is refused with INVALID_PAGE_TOKEN.
Listing is keyset pagination on `_id`, so pages stay stable while documents are added.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from promo_libs.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True, slots=True)
class PageRequest:
    size: int
    after_id: str | None
    filter_fingerprint: str

    def next_token(self, last_id: str) -> str:
        raw = json.dumps({"a": last_id, "f": self.filter_fingerprint}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def fingerprint(filter_values: dict[str, Any]) -> str:
    canonical = json.dumps(filter_values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def page_request(page_size: int, page_token: str, filter_values: dict[str, Any]) -> PageRequest:
    """Validates size and token; a size of 0 means the default, above the maximum is clamped."""
    if page_size < 0:
        raise InvalidArgument([FieldViolation("page_size", "must not be negative")])
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    expected = fingerprint(filter_values)
    if not page_token:
        return PageRequest(size, None, expected)
    after = _decode(page_token, expected)
    return PageRequest(size, after, expected)


def _decode(token: str, expected_fingerprint: str) -> str:
    bad = InvalidArgument([FieldViolation("page_token", "is not a token this list issued")])
    bad.reason = "INVALID_PAGE_TOKEN"
    if len(token) > _MAX_TOKEN_LENGTH:
        raise bad
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise bad from None
    if not isinstance(data, dict) or not isinstance(data.get("a"), str):
        raise bad
    if data.get("f") != expected_fingerprint:
        changed = InvalidArgument(
            [FieldViolation("page_token", "was issued for a different filter")]
        )
        changed.reason = "INVALID_PAGE_TOKEN"
        raise changed
    after: str = data["a"]
    return after
