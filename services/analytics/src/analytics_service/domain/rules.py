"""The rules of the analytics contract (protos/promo/v1/analytics.proto), as pure functions.

- Ranges are half-open [start, end) in UTC; both bounds must lie where ClickHouse's DateTime
  can hold them (1970-01-01 .. 2106-01-01), and start must be before end. Analytics stores
  whole seconds, so bounds are applied at second precision (fractions are dropped).
- Time-series buckets are aligned in UTC: whole hours, days from 00:00, ISO weeks from Monday
  00:00, months from the 1st. A series has at most MAX_BUCKETS points (RANGE_TOO_LARGE).
- Currency: sums never mix currencies. A requested currency selects its rows; an empty one means
  "the only currency present", and zeros with an empty currency when none is. When several are
  present, the overview, the top list, the discount costs and the time series answer per
  currency (`currencies_to_answer`); a code's or a user's statistics refuse with CURRENCY_REQUIRED.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from analytics_service.domain.model import Granularity, TimeRange
from promo_libs import identifiers
from promo_libs.errors import FieldViolation, InvalidArgument, Violations

MAX_BUCKETS = 1000
DEFAULT_TOP_LIMIT = 10
MAX_TOP_LIMIT = 100
MAX_COST_LIMIT = 1000  # ListDiscountCosts
MAX_ID_LENGTH = 128
MAX_CODE_LENGTH = 64

# ClickHouse DateTime is an unsigned 32-bit count of seconds since the epoch.
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2106, 1, 1, tzinfo=UTC)


class RangeTooLarge(InvalidArgument):
    """More buckets than a series may have; narrow the range or use a coarser granularity."""

    def __init__(self, buckets: int) -> None:
        super().__init__(
            [
                FieldViolation(
                    "time_range",
                    f"the range holds {buckets} buckets at this granularity, "
                    f"at most {MAX_BUCKETS} are allowed",
                )
            ]
        )
        self.reason = "RANGE_TOO_LARGE"
        self.metadata = {"buckets": str(buckets), "max_buckets": str(MAX_BUCKETS)}


class CurrencyRequired(InvalidArgument):
    def __init__(self, currencies: Iterable[str]) -> None:
        listed = ",".join(sorted(currencies))
        super().__init__(
            [
                FieldViolation(
                    "currency_code",
                    f"the selected data holds several currencies ({listed}); choose one",
                )
            ]
        )
        self.reason = "CURRENCY_REQUIRED"
        self.metadata = {"currencies": listed}


# --- request checks ---------------------------------------------------------------------------


def check_range(
    violations: Violations, time_range: TimeRange, *, path: str, required: bool = False
) -> None:
    for name, moment in (("start_time", time_range.start), ("end_time", time_range.end)):
        if moment is None:
            if required:
                violations.add(f"{path}.{name}", "required")
        elif not MIN_TIME <= moment < MAX_TIME:
            violations.add(f"{path}.{name}", "must be between 1970-01-01 and 2106-01-01 UTC")
    if (
        time_range.start is not None
        and time_range.end is not None
        and time_range.start >= time_range.end
    ):
        violations.add(f"{path}.end_time", "must be after start_time")


def check_currency(violations: Violations, currency: str, *, path: str = "currency_code") -> None:
    """Optional here (empty: every currency); when given, the same rule as everywhere else."""
    if currency:
        try:
            identifiers.check_currency(currency)
        except ValueError as problem:
            violations.add(path, str(problem))


def check_identifier(
    violations: Violations, value: str, *, path: str, max_length: int = MAX_ID_LENGTH
) -> None:
    if not value:
        violations.add(path, "required")
    elif len(value) > max_length:
        violations.add(path, f"must be at most {max_length} characters")
    elif not value.isprintable():
        violations.add(path, "must not contain control characters")


def top_limit(
    violations: Violations, limit: int, *, path: str = "limit", maximum: int = MAX_TOP_LIMIT
) -> int:
    if limit == 0:
        return DEFAULT_TOP_LIMIT
    if not 1 <= limit <= maximum:
        violations.add(path, f"must be between 1 and {maximum} (0 means {DEFAULT_TOP_LIMIT})")
    return limit


# --- buckets ----------------------------------------------------------------------------------


def bucket_start(moment: datetime, granularity: Granularity) -> datetime:
    """Start of the UTC bucket that contains `moment`."""
    moment = moment.astimezone(UTC)
    if granularity is Granularity.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity is Granularity.DAY:
        return day
    if granularity is Granularity.WEEK:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_bucket(start: datetime, granularity: Granularity) -> datetime:
    if granularity is Granularity.HOUR:
        return start + timedelta(hours=1)
    if granularity is Granularity.DAY:
        return start + timedelta(days=1)
    if granularity is Granularity.WEEK:
        return start + timedelta(weeks=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def bucket_count(start: datetime, end: datetime, granularity: Granularity) -> int:
    """Buckets from the one holding `start` to the one holding the last instant before `end`.

    Arithmetic, not enumeration: a refused range (say ten years of hours) costs nothing.
    """
    if end <= start:
        return 0
    first = bucket_start(start, granularity)
    last = bucket_start(end - timedelta(microseconds=1), granularity)
    if granularity is Granularity.MONTH:
        return (last.year - first.year) * 12 + last.month - first.month + 1
    width = {
        Granularity.HOUR: timedelta(hours=1),
        Granularity.DAY: timedelta(days=1),
        Granularity.WEEK: timedelta(weeks=1),
    }[granularity]
    return (last - first) // width + 1


def buckets(start: datetime, end: datetime, granularity: Granularity) -> Iterator[datetime]:
    """Every bucket start of [start, end), ascending; at most MAX_BUCKETS (RangeTooLarge)."""
    count = bucket_count(start, end, granularity)
    if count > MAX_BUCKETS:
        raise RangeTooLarge(count)
    current = bucket_start(start, granularity)
    for _ in range(count):
        yield current
        current = next_bucket(current, granularity)


# --- currency and arithmetic ------------------------------------------------------------------


def choose_currency(requested: str, present: Iterable[str]) -> str:
    """The currency an answer covers: the requested one, else the only one present, else ""."""
    if requested:
        return requested
    found = {c for c in present if c}
    if len(found) > 1:
        raise CurrencyRequired(found)
    return next(iter(found), "")


def currencies_to_answer(requested: str, present: Iterable[str]) -> tuple[str, list[str]]:
    """(the currency of the answer, the currencies to answer one by one): ("", [several])
    when no currency was requested and several are present, else (the chosen one, [])."""
    found = sorted({c for c in present if c})
    if not requested and len(found) > 1:
        return "", found
    return choose_currency(requested, found), []


def average(total: int, count: int) -> int:
    """Integer division rounded down; zero when dividing by zero."""
    return total // count if count else 0
