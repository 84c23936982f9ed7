"""Ids and clocks the use cases are given (they take them as parameters, to stay testable)."""

from __future__ import annotations

from datetime import UTC, datetime

from bson import ObjectId


def new_id() -> str:
    """A new document id: an ObjectId's hex, ordered by creation time."""
    return str(ObjectId())


def utc_now() -> datetime:
    """Now, at the millisecond precision MongoDB stores, so answers equal later reads."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
