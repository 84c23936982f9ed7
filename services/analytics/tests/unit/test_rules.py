"""The contract's rules as pure functions: buckets, ranges, limits, currency, averages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from analytics_service.domain import rules
from analytics_service.domain.model import Granularity, TimeRange
from promo_libs.errors import InvalidArgument, Violations


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "granularity", "start"),
    [
        (at(2024, 3, 10, 5, 30, 7), Granularity.HOUR, at(2024, 3, 10, 5)),
        (at(2024, 3, 10, 23, 59, 59), Granularity.DAY, at(2024, 3, 10)),
        (at(2024, 3, 11), Granularity.DAY, at(2024, 3, 11)),
        (at(2024, 3, 10, 23), Granularity.WEEK, at(2024, 3, 4)),  # Sunday -> Monday before
        (at(2024, 3, 11), Granularity.WEEK, at(2024, 3, 11)),  # Monday 00:00 starts a week
        (at(2024, 12, 31, 23, 59), Granularity.WEEK, at(2024, 12, 30)),
        (at(2024, 2, 29, 12), Granularity.MONTH, at(2024, 2, 1)),
        (at(1970, 1, 1), Granularity.WEEK, at(1969, 12, 29)),
    ],
)
def test_buckets_are_aligned_in_utc(
    moment: datetime, granularity: Granularity, start: datetime
) -> None:
    assert rules.bucket_start(moment, granularity) == start


def test_a_series_covers_the_bucket_of_start_to_the_bucket_before_end() -> None:
    starts = list(rules.buckets(at(2024, 1, 30, 22, 15), at(2024, 3, 1), Granularity.MONTH))
    assert starts == [at(2024, 1, 1), at(2024, 2, 1)]  # end at 1 March 00:00 is exclusive
    days = list(rules.buckets(at(2024, 1, 1, 23, 59, 59), at(2024, 1, 2, 0, 0, 1), Granularity.DAY))
    assert days == [at(2024, 1, 1), at(2024, 1, 2)]
    assert rules.bucket_count(at(2023, 12, 1), at(2025, 1, 1), Granularity.MONTH) == 13


def test_ten_years_of_hours_is_refused_without_enumerating() -> None:
    start = at(2015, 1, 1)
    with pytest.raises(rules.RangeTooLarge) as error:
        list(rules.buckets(start, start + timedelta(days=3650), Granularity.HOUR))
    assert error.value.reason == "RANGE_TOO_LARGE"
    assert error.value.metadata["buckets"] == str(3650 * 24)
    assert len(list(rules.buckets(start, start + timedelta(hours=1000), Granularity.HOUR))) == 1000
    with pytest.raises(rules.RangeTooLarge):
        list(rules.buckets(start, start + timedelta(hours=1000, seconds=1), Granularity.HOUR))


def test_ranges_must_be_ordered_and_inside_what_clickhouse_stores() -> None:
    violations = Violations()
    rules.check_range(violations, TimeRange(at(2024, 1, 2), at(2024, 1, 1)), path="time_range")
    rules.check_range(violations, TimeRange(at(1969, 1, 1), None), path="r")
    rules.check_range(violations, TimeRange(None, None), path="s", required=True)
    assert [v.field for v in violations.items] == [
        "time_range.end_time",
        "r.start_time",
        "s.start_time",
        "s.end_time",
    ]
    with pytest.raises(InvalidArgument):
        violations.raise_if_any()


def test_limits_and_currency_codes() -> None:
    violations = Violations()
    assert rules.top_limit(violations, 0) == rules.DEFAULT_TOP_LIMIT
    assert rules.top_limit(violations, 100) == 100
    assert not violations
    rules.top_limit(violations, 101)
    rules.check_currency(violations, "eur")
    rules.check_currency(violations, "")  # empty: the rule picks it
    assert [v.field for v in violations.items] == ["limit", "currency_code"]


def test_currency_choice() -> None:
    assert rules.choose_currency("USD", {"EUR"}) == "USD"
    assert rules.choose_currency("", {"EUR"}) == "EUR"
    assert rules.choose_currency("", set()) == ""
    with pytest.raises(rules.CurrencyRequired) as error:
        rules.choose_currency("", {"USD", "EUR"})
    assert error.value.reason == "CURRENCY_REQUIRED"
    assert error.value.metadata == {"currencies": "EUR,USD"}


def test_averages_round_down_and_never_divide_by_zero() -> None:
    assert rules.average(1001, 2) == 500
    assert rules.average(5, 0) == 0
