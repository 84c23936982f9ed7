"""How moments are stored in MongoDB: integer milliseconds since the Unix epoch, UTC.

Why not BSON dates: the local MongoDB stand-in (nx-27017 0.8.1) stores a datetime written through
`$set` (update_one, find_one_and_update) as a string, so it reads back as text and compares as
text; only inserts keep it a date. Integers behave the same under insert, `$set`, `$inc`, range
queries and sorting on every server, and millisecond precision is what MongoDB keeps anyway.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_millis(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every moment in this system is timezone-aware UTC")
    return (moment - _EPOCH) // timedelta(milliseconds=1)  # exact: no float rounding


def from_millis(millis: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=millis)


def optional_to_millis(moment: datetime | None) -> int | None:
    return None if moment is None else to_millis(moment)


def optional_from_millis(millis: int | None) -> datetime | None:
    return None if millis is None else from_millis(millis)
