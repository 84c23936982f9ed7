"""The analytics SQL, as text builders: one place, no I/O, runnable by any ClickHouse.

Every statement runs on the local ClickHouse 18.16 and on current ClickHouse (a test runs them
all through chdb):
- latest state in one of two ways, chosen by how much of the table a query keeps (`_keeps_most`):
  argMax(column, version) grouped by entity id when it keeps little (one user, one code, a short
  range), FINAL when it keeps most of it (no user or code, a range of 45 days or more, or an open
  one). FINAL merges every part of the partitions it reads before filtering; argMax groups only
  the rows that pass. Measured on 18.16 with a million orders: all time 346 ms (FINAL) against
  636 ms (argMax), 90 days 410 against 535, 31 days even, one day 68 against 24, one user 232
  against 14;
- conditions inside the de-duplicating subquery only on columns every version of an entity
  shares (create_time and its date, user_id, currency); conditions on columns that change
  (status, promo_code_id) outside it;
- range conditions repeated on the partition's date column, so partitions outside are skipped;
- datetimes as naive UTC literals wrapped in toDateTime(..., 'UTC');
- buckets by integer arithmetic on the epoch seconds (no toStartOfInterval, no dependence on the
  server's time zone); months through toYYYYMM of a Date built from the day number;
- a range read from the rollups splits into whole months (the monthly rollups), the whole days
  of its partial months (the daily rollups) and the partial days at its edges (raw rows,
  argMax): rows read grow with the months of the range, not with its days or orders
  (`_rollup_ranges`); day and week buckets read days only, hour buckets raw rows;
- one user's figures (GetUserStats) come from users_analytics for the whole days of the range
  (sorted by user: that user's rows only) and from the user's raw rows for the partial days;
- ListDiscountCosts reads line_costs_monthly and line_costs_daily for whole months and days,
  the order lines themselves (order_lines, argMax) for the partial edges, categories expanded
  by arrayJoin;
- results as plain String, Int64 and UInt32 columns (and one Array(String)), no LowCardinality,
  no DateTime64; UNION ALL branches cast to identical types.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from analytics_service.domain.model import CostGrouping, Granularity, Ranking, TimeRange
from promo_libs import analytics_schema as tables
from promo_libs.clickhouse.client import ch_date, ch_datetime

# What the queries read: the service is ready once these exist (sync-consumer migrates them).
REQUIRED_TABLES = (
    tables.ORDERS,
    tables.USAGES,
    tables.PROMO_CODES,
    tables.USERS_ANALYTICS,
    tables.ORDERS_DAILY,
    tables.USAGES_DAILY,
    tables.CODE_ORDERS_DAILY,
    *tables.MONTHLY_TABLES,
    tables.CODE_DICTIONARY,
    tables.CAMPAIGNS,
    tables.ORDER_LINES,
    tables.LINE_COSTS_DAILY,
)


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def quote_list(values: Sequence[str]) -> str:
    return "(" + ", ".join(quote(v) for v in values) + ")"


def _moment(moment: datetime) -> str:
    return f"toDateTime({quote(ch_datetime(moment))}, 'UTC')"


def in_range(column: str, time_range: TimeRange, date_column: str = "") -> str:
    """`column` in [start, end); `date_column`, the UTC date of `column` and the partition key,
    repeats the bounds by day so that ClickHouse skips the partitions outside."""
    conditions = []
    if time_range.start is not None:
        conditions.append(f"{column} >= {_moment(time_range.start)}")
        if date_column:
            conditions.append(f"{date_column} >= toDate({quote(ch_date(time_range.start))})")
    if time_range.end is not None:
        conditions.append(f"{column} < {_moment(time_range.end)}")
        if date_column:
            conditions.append(f"{date_column} <= toDate({quote(ch_date(time_range.end))})")
    return " AND ".join(conditions) or "1"


def _where(*conditions: str) -> str:
    return " AND ".join(c for c in conditions if c) or "1"


def _latest_rows(table: str, *key_conditions: str) -> str:
    """`table FINAL` narrowed by conditions on its sorting-key columns only, as PREWHERE: 18.16
    merges every row of the granules a FINAL query reads before it applies a WHERE, while a
    PREWHERE narrows the granules first; a key condition holds alike for every row of a key,
    so FINAL's answer is the same. At 10M orders, one code's 30 days of code_orders_daily took
    62-85 ms with WHERE against 26-33 ms with PREWHERE."""
    condition = _where(*key_conditions)
    return f"{table} FINAL" if condition == "1" else f"{table} FINAL PREWHERE {condition}"


def _bucket(granularity: Granularity, epoch: str = "toInt64(toUInt32(created))") -> str:
    """Bucket start (epoch seconds for hour/day/week; YYYYMM for month) of `epoch` seconds."""
    return {
        Granularity.HOUR: f"intDiv({epoch}, 3600) * 3600",
        Granularity.DAY: f"intDiv({epoch}, 86400) * 86400",
        # 1970-01-01 was a Thursday: shift by three days so weeks start on Monday.
        Granularity.WEEK: f"intDiv({epoch} + 259200, 604800) * 604800 - 259200",
        Granularity.MONTH: f"toInt64(toYYYYMM(toDate(toUInt16(intDiv({epoch}, 86400)))))",
    }[granularity]


_FINAL_FROM = timedelta(days=45)


def _keeps_most(time_range: TimeRange, *filters: str | None) -> bool:
    """Whether a query keeps most of a table: no entity filter, and a long or open range."""
    if any(f is not None for f in filters):
        return False
    if time_range.start is None or time_range.end is None:
        return True
    return time_range.end - time_range.start >= _FINAL_FROM


def latest_orders(
    database: str,
    time_range: TimeRange,
    *,
    user_id: str | None = None,
    promo_code_id: str | None = None,
    code_set: str | None = None,
) -> str:
    """One row per order created in the range, with its current state; `code_set` (a
    subquery of code ids) keeps the orders whose code now is one of them."""
    if _keeps_most(time_range, user_id, promo_code_id, code_set):
        # Conditions only on columns every version shares: FINAL may filter before it merges.
        return (
            "SELECT order_id, create_time AS created, user_id AS buyer, currency_code AS currency,"
            " status AS state, total_minor AS total, discount_minor AS off,"
            " promo_code_id AS code_id"
            f" FROM {database}.{tables.ORDERS} FINAL"
            f" WHERE {in_range('create_time', time_range, 'order_date')}"
        )
    conditions = [in_range("create_time", time_range, "order_date")]
    if user_id is not None:
        conditions.append(f"user_id = {quote(user_id)}")
    if promo_code_id is not None:
        # Narrows the scan; the code of the latest version is checked outside.
        # The range again inside: the subquery reads only the range's partitions and days.
        conditions.append(
            f"order_id IN (SELECT order_id FROM {database}.{tables.ORDERS}"
            f" WHERE promo_code_id = {quote(promo_code_id)} AND {conditions[0]})"
        )
    if code_set is not None:
        conditions.append(
            f"order_id IN (SELECT order_id FROM {database}.{tables.ORDERS}"
            f" WHERE promo_code_id IN {code_set} AND {conditions[0]})"
        )
    latest = [f"code_id = {quote(promo_code_id)}"] if promo_code_id is not None else []
    if code_set is not None:
        latest.append(f"code_id IN {code_set}")
    outer = f" WHERE {_where(*latest)}" if latest else ""
    # Aliases never repeat a column name: current ClickHouse would read them in WHERE too.
    return (
        "SELECT * FROM (SELECT order_id,"
        " any(create_time) AS created,"
        " any(user_id) AS buyer,"
        " any(currency_code) AS currency,"
        " argMax(status, version) AS state,"
        " argMax(total_minor, version) AS total,"
        " argMax(discount_minor, version) AS off,"
        " argMax(promo_code_id, version) AS code_id"
        f" FROM {database}.{tables.ORDERS} WHERE {_where(*conditions)} GROUP BY order_id){outer}"
    )


# A series point has no distinct users (TimeSeriesPoint): its measures leave them out, so a
# series (and the ranking's order totals) never reads the buyers (at 10M orders, merging the
# daily buyer arrays of 90 days was most of GetOrdersTimeSeries' 750 ms).
_ORDER_SERIES_MEASURES = (
    "toInt64(count()) AS orders,"
    " toInt64(countIf(state = 'CONFIRMED')) AS confirmed,"
    " toInt64(countIf(state = 'REJECTED')) AS rejected,"
    " toInt64(countIf(state = 'CANCELLED')) AS cancelled,"
    " toInt64(sumIf(total, state = 'CONFIRMED')) AS revenue,"
    " toInt64(sumIf(off, state = 'CONFIRMED')) AS discount"
)
_ORDER_MEASURES = f"{_ORDER_SERIES_MEASURES}, toInt64(uniqExact(buyer)) AS users"


_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)


def _midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _hour_start(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def whole_days(time_range: TimeRange) -> tuple[TimeRange | None, list[TimeRange]]:
    """The UTC days wholly inside the range, as a range of midnights (None: not one), and the
    partial edges around them (at most two, each shorter than a day)."""
    return _whole(time_range, _midnight, _DAY)


def whole_hours(time_range: TimeRange) -> tuple[TimeRange | None, list[TimeRange]]:
    """The UTC hours wholly inside the range, and the partial edges around them (at most two,
    each shorter than an hour), as `whole_days` splits by day."""
    return _whole(time_range, _hour_start, _HOUR)


def _whole(
    time_range: TimeRange, floor: Callable[[datetime], datetime], step: timedelta
) -> tuple[TimeRange | None, list[TimeRange]]:
    start, end = time_range.start, time_range.end
    first = None if start is None else floor(start)
    if start is not None and first is not None and first < start:
        first += step
    last = None if end is None else floor(end)
    if first is not None and last is not None and first >= last:
        return None, [time_range]
    edges = []
    if start is not None and first is not None and start < first:
        edges.append(TimeRange(start, first))
    if end is not None and last is not None and last < end:
        edges.append(TimeRange(last, end))
    return TimeRange(first, last), edges


def _first_of_month(moment: datetime) -> datetime:
    return _midnight(moment).replace(day=1)


def _next_month(moment: datetime) -> datetime:
    return (moment.replace(day=1) + timedelta(days=32)).replace(day=1)


def whole_months(days: TimeRange) -> tuple[TimeRange | None, list[TimeRange]]:
    """The UTC months wholly inside a range of midnights, as a range of first days (None: not
    one), and the whole days around them (at most two ranges, each shorter than a month)."""
    start, end = days.start, days.end
    first = None if start is None else _first_of_month(start)
    if start is not None and first is not None and first < start:
        first = _next_month(first)
    last = None if end is None else _first_of_month(end)
    if first is not None and last is not None and first >= last:
        return None, [days]
    around = []
    if start is not None and first is not None and start < first:
        around.append(TimeRange(start, first))
    if end is not None and last is not None and last < end:
        around.append(TimeRange(last, end))
    return TimeRange(first, last), around


def _rollup_ranges(
    time_range: TimeRange, by_month: bool = True
) -> tuple[list[TimeRange], list[TimeRange], TimeRange | None]:
    """The range split for reading: partial days (raw rows), ranges of whole days (daily
    rollups) and a range of whole months (monthly rollups; none when `by_month` is false, for
    buckets a month does not lie in). Rows read grow with the months, not the days or orders."""
    days, edges = whole_days(time_range)
    if days is None:
        return edges, [], None
    if not by_month:
        return edges, [days], None
    months, around = whole_months(days)
    return edges, around, months


def _rollups(
    database: str,
    daily: str,
    monthly: str,
    select: str,
    time_range: TimeRange,
    promo_code_id: str | None = None,
    extra: str = "",
    by_month: bool = True,
) -> list[str]:
    """SELECT branches over the whole days and months of the range: `select` names the columns
    (`day` is the row's first day: the day, or the month's first day), `extra` a further
    condition on key columns. The partial edges are the caller's (raw rows)."""
    _, day_ranges, months = _rollup_ranges(time_range, by_month)
    branches = [
        f"SELECT {select.replace('{day}', 'day')} FROM"
        f" {_latest_rows(f'{database}.{daily}', _day_range(days, promo_code_id), extra)}"
        for days in day_ranges
    ]
    if months is not None:
        rows = _latest_rows(
            f"{database}.{monthly}", _day_range(months, promo_code_id, "month"), extra
        )
        branches.append(f"SELECT {select.replace('{day}', 'month')} FROM {rows}")
    return branches


# One raw order (a row of latest_orders) as the additive facts of a rollup row: orders,
# confirmed, rejected, cancelled, confirmed revenue and discount.
_ONE_ORDER_FACTS = (
    "toInt64(1) AS n, toInt64(state = 'CONFIRMED') AS c, toInt64(state = 'REJECTED') AS r,"
    " toInt64(state = 'CANCELLED') AS x, toInt64(if(state = 'CONFIRMED', total, 0)) AS rev,"
    " toInt64(if(state = 'CONFIRMED', off, 0)) AS dis"
)


def _order_facts(
    database: str,
    time_range: TimeRange,
    promo_code_id: str | None = None,
    by_code: bool = False,
    by_month: bool = True,
    code_set: str | None = None,
    with_buyers: bool = True,
) -> str:
    """Orders created in the range as additive facts (epoch, currency, code_id, n, c, r, x,
    rev, dis, buyers): one row per month or day and currency (and code: the code_orders
    rollups, for one code or `by_code`) from the rollups for the whole months and days, one
    row per order (latest state) for the partial edges. Every measure is a sum, except the
    distinct buyers, counted over the union of the arrays. `by_month` false: days only (for
    buckets a month does not lie in). `with_buyers` false: no buyers column (not read)."""
    edges, _, _ = _rollup_ranges(time_range, by_month)
    raw_buyers, rollup_buyers = (", [buyer] AS buyers", ", buyers") if with_buyers else ("", "")
    per_code = by_code or promo_code_id is not None or code_set is not None
    branches = [
        "SELECT toInt64(toUInt32(created)) AS epoch, currency, code_id,"
        f" {_ONE_ORDER_FACTS}{raw_buyers}"
        f" FROM ({latest_orders(database, edge, promo_code_id=promo_code_id, code_set=code_set)})"
        for edge in edges
    ]
    daily, monthly, code = (
        (tables.CODE_ORDERS_DAILY, tables.CODE_ORDERS_MONTHLY, "promo_code_id")
        if per_code
        else (tables.ORDERS_DAILY, tables.ORDERS_MONTHLY, "''")
    )
    select = (
        "toInt64(toUInt16({day})) * 86400 AS epoch, currency_code AS currency,"
        f" {code} AS code_id, orders AS n, confirmed AS c, rejected AS r, cancelled AS x,"
        f" revenue_minor AS rev, discounts_minor AS dis{rollup_buyers}"
    )
    branches += _rollups(
        database,
        daily,
        monthly,
        select,
        time_range,
        promo_code_id,
        _in_set(code_set),
        by_month=by_month,
    )
    return " UNION ALL ".join(branches)


def _in_set(code_set: str | None) -> str:
    return "" if code_set is None else f"promo_code_id IN {code_set}"


def _day_range(days: TimeRange, promo_code_id: str | None = None, column: str = "day") -> str:
    """A rollup's `day` (or `month`) column in a range of midnights (and its code, if one is
    asked for)."""
    conditions = [] if promo_code_id is None else [f"promo_code_id = {quote(promo_code_id)}"]
    if days.start is not None:
        conditions.append(f"{column} >= toDate({quote(ch_date(days.start))})")
    if days.end is not None:
        conditions.append(f"{column} < toDate({quote(ch_date(days.end))})")
    return _where(*conditions)


_FACT_SERIES_MEASURES = (
    "toInt64(sum(n)) AS orders, toInt64(sum(c)) AS confirmed, toInt64(sum(r)) AS rejected,"
    " toInt64(sum(x)) AS cancelled, toInt64(sum(rev)) AS revenue, toInt64(sum(dis)) AS discount"
)
_FACT_MEASURES = f"{_FACT_SERIES_MEASURES}, toInt64(uniqExactArray(buyers)) AS users"


def order_totals(
    database: str,
    time_range: TimeRange,
    *,
    user_id: str | None = None,
    promo_code_id: str | None = None,
) -> str:
    if user_id is None:
        # Whole days from a rollup: cost by the number of days, not of orders.
        return (
            f"SELECT currency AS currency_code, {_FACT_MEASURES}"
            f" FROM ({_order_facts(database, time_range, promo_code_id)})"
            " GROUP BY currency_code ORDER BY currency_code"
        )
    if promo_code_id is None:
        return _user_order_totals(database, time_range, user_id)
    source = latest_orders(database, time_range, user_id=user_id, promo_code_id=promo_code_id)
    return (
        f"SELECT currency AS currency_code, {_ORDER_MEASURES} FROM ({source})"
        " GROUP BY currency_code ORDER BY currency_code"
    )


def _user_days(
    database: str, columns: Sequence[tuple[str, str]], days: TimeRange | None, user_id: str
) -> list[str]:
    """A branch over one user's rows of users_analytics for the whole days of a range (none
    when it has no whole day), `columns` as (column, alias), with `currency`: the table is
    sorted by user, so this reads that user's rows. The latest row per day and currency by
    argMax of the state version, not FINAL: at 10M orders (a user with 90 days of rows) 11-12
    ms against 25-36 ms for FINAL PREWHERE and 80-127 ms for FINAL WHERE."""
    if days is None:
        return []
    latest = ", ".join(f"argMax({column}, state_version) AS {alias}" for column, alias in columns)
    return [
        f"SELECT currency_code AS currency, {latest} FROM {database}.{tables.USERS_ANALYTICS}"
        f" WHERE {_where(f'user_id = {quote(user_id)}', _day_range(days))}"
        " GROUP BY day, currency_code"
    ]


def _user_order_totals(database: str, time_range: TimeRange, user_id: str) -> str:
    """One user's orders of the range: whole days from users_analytics, the partial edges from
    the user's raw orders (latest state)."""
    days, edges = whole_days(time_range)
    branches = [
        f"SELECT currency, {_ONE_ORDER_FACTS}"
        f" FROM ({latest_orders(database, edge, user_id=user_id)})"
        for edge in edges
    ]
    branches += _user_days(
        database,
        (
            ("placed_orders", "n"),
            ("orders", "c"),
            ("rejected_orders", "r"),
            ("cancelled_orders", "x"),
            ("revenue_minor", "rev"),
            ("discounts_minor", "dis"),
        ),
        days,
        user_id,
    )
    # A day with usages only has a row with no orders: such a currency has no order totals.
    return (
        "SELECT currency AS currency_code, toInt64(sum(n)) AS orders,"
        " toInt64(sum(c)) AS confirmed, toInt64(sum(r)) AS rejected,"
        " toInt64(sum(x)) AS cancelled, toInt64(sum(rev)) AS revenue,"
        " toInt64(sum(dis)) AS discount, toInt64(sum(n) > 0) AS users"
        f" FROM ({' UNION ALL '.join(branches)})"
        " GROUP BY currency_code HAVING orders > 0 ORDER BY currency_code"
    )


def _user_usage_totals(database: str, time_range: TimeRange, user_id: str) -> str:
    """One user's usages of the range, as `_user_order_totals` reads orders; the distinct code
    ids and texts over the union of the days' arrays."""
    days, edges = whole_days(time_range)
    branches = [
        "SELECT currency, toInt64(1) AS n, toInt64(if(state = 'ACTIVE', off, 0)) AS dis,"
        " [code_id] AS ids, [code_text] AS texts"
        f" FROM ({_latest_usages(database, _usage_filters(edge, user_id, None))})"
        for edge in edges
    ]
    branches += _user_days(
        database,
        (
            ("usages", "n"),
            ("active_discount_minor", "dis"),
            ("code_ids", "ids"),
            ("code_texts", "texts"),
        ),
        days,
        user_id,
    )
    return (
        "SELECT currency AS currency_code, toInt64(sum(n)) AS redemptions,"
        " toInt64(sum(n) > 0) AS users, toInt64(uniqExactArray(ids)) AS codes,"
        " toInt64(sum(dis)) AS active_discount, groupUniqArrayArray(texts) AS code_texts"
        f" FROM ({' UNION ALL '.join(branches)})"
        " GROUP BY currency_code HAVING redemptions > 0 ORDER BY currency_code"
    )


def order_totals_by_code(database: str, time_range: TimeRange) -> str:
    """Order totals per currency and code, without distinct users: the ranking, their one
    reader, reports the code's holders, not its buyers, and merging every code's buyer
    arrays was most of the statement."""
    facts = _order_facts(database, time_range, by_code=True, with_buyers=False)
    return (
        f"SELECT currency AS currency_code, code_id AS promo_code_id, {_FACT_SERIES_MEASURES}"
        f" FROM ({facts}) WHERE code_id != ''"
        " GROUP BY currency_code, promo_code_id HAVING orders > 0"
        " ORDER BY currency_code, promo_code_id"
    )


def order_series(
    database: str,
    time_range: TimeRange,
    granularity: Granularity,
    promo_code_id: str | None = None,
) -> str:
    if granularity is not Granularity.HOUR:
        # A day lies in one day, week and month bucket, a month in one month bucket only.
        facts = _order_facts(
            database,
            time_range,
            promo_code_id,
            by_month=granularity is Granularity.MONTH,
            with_buyers=False,
        )
        return (
            f"SELECT currency AS currency_code, {_bucket(granularity, 'epoch')} AS bucket,"
            f" {_FACT_SERIES_MEASURES} FROM ({facts})"
            " GROUP BY currency_code, bucket ORDER BY currency_code, bucket"
        )
    return _hourly_series(database, time_range, promo_code_id)


def _hourly_series(database: str, time_range: TimeRange, promo_code_id: str | None) -> str:
    """Whole hours from orders_hourly (code_orders_hourly for one code, sorted by code), the
    partial hours at the edges from raw orders (latest state): rows read grow with the hours
    of the range, not with its orders."""
    hours, edges = whole_hours(time_range)
    branches = [
        f"SELECT toInt64(toUInt32(created)) AS epoch, currency, {_ONE_ORDER_FACTS}"
        f" FROM ({latest_orders(database, edge, promo_code_id=promo_code_id)})"
        for edge in edges
    ]
    if hours is not None:
        table = tables.ORDERS_HOURLY if promo_code_id is None else tables.CODE_ORDERS_HOURLY
        key = [] if promo_code_id is None else [f"promo_code_id = {quote(promo_code_id)}"]
        rows = _latest_rows(f"{database}.{table}", *key, in_range("hour", hours))
        branches.append(
            "SELECT toInt64(toUInt32(hour)) AS epoch, currency_code AS currency, orders AS n,"
            " confirmed AS c, rejected AS r, cancelled AS x, revenue_minor AS rev,"
            f" discounts_minor AS dis FROM {rows}"
        )
    return (
        f"SELECT currency AS currency_code, {_bucket(Granularity.HOUR, 'epoch')} AS bucket,"
        f" {_FACT_SERIES_MEASURES} FROM ({' UNION ALL '.join(branches)})"
        " GROUP BY currency_code, bucket ORDER BY currency_code, bucket"
    )


def _latest_usages(database: str, conditions: Sequence[str], keeps_most: bool = False) -> str:
    if keeps_most:
        return (
            "SELECT usage_id, promo_code_id AS code_id, code AS code_text, user_id AS holder,"
            " currency_code AS currency, status AS state, discount_minor AS off"
            f" FROM {database}.{tables.USAGES} FINAL WHERE {_where(*conditions)}"
        )
    return (
        "SELECT usage_id,"
        " any(promo_code_id) AS code_id,"
        " any(code) AS code_text,"
        " any(user_id) AS holder,"
        " any(currency_code) AS currency,"
        " argMax(status, version) AS state,"
        " argMax(discount_minor, version) AS off"
        f" FROM {database}.{tables.USAGES} WHERE {_where(*conditions)} GROUP BY usage_id"
    )


_USAGE_MEASURES = (
    "toInt64(count()) AS redemptions,"
    " toInt64(uniqExact(holder)) AS users,"
    " toInt64(uniqExact(code_id)) AS codes,"
    " toInt64(sumIf(off, state = 'ACTIVE')) AS active_discount"
)


def _usage_filters(
    time_range: TimeRange, user_id: str | None, promo_code_id: str | None
) -> list[str]:
    conditions = [in_range("create_time", time_range, "usage_date")]
    if user_id is not None:
        conditions.append(f"user_id = {quote(user_id)}")
    if promo_code_id is not None:
        conditions.append(f"promo_code_id = {quote(promo_code_id)}")
    return conditions


def _usage_facts(
    database: str, time_range: TimeRange, promo_code_id: str | None, code_set: str | None = None
) -> str:
    """Usages created in the range as additive facts (currency, code_id, n, dis, holders,
    texts): one row per day, currency and code from usages_daily for the whole days, one row
    per usage (latest state) for the partial edges. Distinct holders and texts are counted
    over the union of the arrays; a rollup row with n = 0 holds releases only."""
    edges, _, _ = _rollup_ranges(time_range)
    codes = _in_set(code_set)
    branches = [
        "SELECT currency, code_id, toInt64(1) AS n,"
        " toInt64(if(state = 'ACTIVE', off, 0)) AS dis, [holder] AS holders,"
        " [code_text] AS texts"
        f" FROM ({_latest_usages(database, [*_usage_filters(edge, None, promo_code_id), codes])})"
        for edge in edges
    ]
    select = (
        "currency_code AS currency, promo_code_id AS code_id, redemptions AS n,"
        " active_discount_minor AS dis, holders, code_texts AS texts"
    )
    branches += _rollups(
        database,
        tables.USAGES_DAILY,
        tables.USAGES_MONTHLY,
        select,
        time_range,
        promo_code_id,
        _in_set(code_set),
    )
    return " UNION ALL ".join(branches)


_USAGE_FACT_MEASURES = (
    "toInt64(sum(n)) AS redemptions,"
    " toInt64(uniqExactArray(holders)) AS users,"
    " toInt64(uniqExactIf(code_id, n > 0)) AS codes,"
    " toInt64(sum(dis)) AS active_discount"
)


def usage_totals(
    database: str,
    time_range: TimeRange,
    *,
    user_id: str | None = None,
    promo_code_id: str | None = None,
    with_code_texts: bool = False,
) -> str:
    if user_id is None:
        # Whole days from the rollup; `HAVING`: a currency with releases only has no usages.
        texts = ", arraySort(groupUniqArrayArray(texts)) AS code_texts" if with_code_texts else ""
        return (
            f"SELECT currency AS currency_code, {_USAGE_FACT_MEASURES}{texts}"
            f" FROM ({_usage_facts(database, time_range, promo_code_id)})"
            " GROUP BY currency_code HAVING redemptions > 0 ORDER BY currency_code"
        )
    if promo_code_id is None:
        return _user_usage_totals(database, time_range, user_id)
    source = _latest_usages(
        database,
        _usage_filters(time_range, user_id, promo_code_id),
        _keeps_most(time_range, user_id, promo_code_id),
    )
    texts = ", groupUniqArray(code_text) AS code_texts" if with_code_texts else ""
    return (
        f"SELECT currency AS currency_code, {_USAGE_MEASURES}{texts} FROM ({source})"
        " GROUP BY currency_code ORDER BY currency_code"
    )


def usage_totals_by_code(database: str, time_range: TimeRange, with_code_text: bool = False) -> str:
    text = ", arrayElement(groupUniqArrayArray(texts), 1) AS code_text" if with_code_text else ""
    return (
        f"SELECT currency AS currency_code, code_id AS promo_code_id, {_USAGE_FACT_MEASURES}"
        f"{text} FROM ({_usage_facts(database, time_range, None)})"
        " GROUP BY currency_code, promo_code_id HAVING redemptions > 0"
        " ORDER BY currency_code, promo_code_id"
    )


def _releases(
    database: str,
    time_range: TimeRange,
    promo_code_id: str | None,
    by_code: bool,
    code_set: str | None = None,
) -> str:
    """Usages released in the range: whole days from usages_daily (by day of release), raw
    rows for the partial edges. RELEASED is a usage's last state and only that version has a
    release_time; a usage is released after it was created, so the edge's end bounds the
    partitions read."""
    edges, _, _ = _rollup_ranges(time_range)
    code = [] if promo_code_id is None else [f"promo_code_id = {quote(promo_code_id)}"]
    branches = []
    for edge in edges:
        conditions = ["status = 'RELEASED'", in_range("release_time", edge), *code]
        conditions.append(_in_set(code_set))
        if edge.end is not None:
            conditions.append(f"usage_date <= toDate({quote(ch_date(edge.end))})")
        branches.append(
            "SELECT currency_code, promo_code_id, toInt64(uniqExact(usage_id)) AS x"
            f" FROM {database}.{tables.USAGES} WHERE {_where(*conditions)}"
            " GROUP BY currency_code, promo_code_id"
        )
    branches += _rollups(
        database,
        tables.USAGES_DAILY,
        tables.USAGES_MONTHLY,
        "currency_code, promo_code_id, releases AS x",
        time_range,
        promo_code_id,
        _where("releases > 0", _in_set(code_set)),
    )
    keys = "currency_code, promo_code_id" if by_code else "currency_code"
    return (
        f"SELECT {keys}, toInt64(sum(x)) AS releases FROM ({' UNION ALL '.join(branches)})"
        f" GROUP BY {keys} HAVING releases > 0 ORDER BY {keys}"
    )


def release_counts(database: str, time_range: TimeRange, promo_code_id: str | None = None) -> str:
    return _releases(database, time_range, promo_code_id, by_code=False)


def release_counts_by_code(database: str, time_range: TimeRange) -> str:
    return _releases(database, time_range, None, by_code=True)


_RANK_MEASURES = {
    Ranking.REDEMPTIONS: "redemptions",
    Ranking.DISCOUNT: "active_discount",
    Ranking.REVENUE: "revenue",
}


def top_promo_codes(database: str, time_range: TimeRange, ranking: Ranking, limit: int) -> str:
    """The best `limit` codes of every currency, ranked and cut in SQL (never an id list).

    Candidates are the codes with usages, releases or confirmed orders in the range (as in
    ListTopPromoCodes' contract); best first by the measure, ties by ascending code text (the
    dimension's current text, else one the usages carry), then id. `LIMIT n BY currency` keeps
    each currency's own top list, so the caller applies the currency rule afterwards.
    """
    usages = usage_totals_by_code(database, time_range, with_code_text=True)
    releases = release_counts_by_code(database, time_range)
    orders = order_totals_by_code(database, time_range)
    zero = "toInt64(0)"
    measure = _RANK_MEASURES[ranking]
    return (
        "SELECT currency_code, promo_code_id, redemptions, users, codes, active_discount,"
        " releases, confirmed, revenue, if(dim_text != '', dim_text, seen_text) AS rank_text"
        " FROM (SELECT currency_code, promo_code_id,"
        " toInt64(sum(r)) AS redemptions, toInt64(sum(u)) AS users, toInt64(sum(k)) AS codes,"
        " toInt64(sum(a)) AS active_discount, toInt64(sum(x)) AS releases,"
        " toInt64(sum(c)) AS confirmed, toInt64(sum(v)) AS revenue, max(t) AS seen_text"
        " FROM ("
        "SELECT currency_code, promo_code_id, redemptions AS r, users AS u, codes AS k,"
        f" active_discount AS a, {zero} AS x, {zero} AS c, {zero} AS v, code_text AS t"
        f" FROM ({usages})"
        f" UNION ALL SELECT currency_code, promo_code_id, {zero} AS r, {zero} AS u, {zero} AS k,"
        f" {zero} AS a, releases AS x, {zero} AS c, {zero} AS v, '' AS t FROM ({releases})"
        f" UNION ALL SELECT currency_code, promo_code_id, {zero} AS r, {zero} AS u, {zero} AS k,"
        f" {zero} AS a, {zero} AS x, confirmed AS c, revenue AS v, '' AS t FROM ({orders})"
        " WHERE confirmed > 0"
        ") GROUP BY currency_code, promo_code_id) AS totals"
        " ANY LEFT JOIN (SELECT promo_code_id, argMax(code, version) AS dim_text"
        f" FROM {database}.{tables.PROMO_CODES} GROUP BY promo_code_id) AS dimension"
        " USING promo_code_id"
        f" ORDER BY currency_code, {measure} DESC, rank_text, promo_code_id"
        f" LIMIT {int(limit)} BY currency_code"
    )


def latest_lines(database: str, time_range: TimeRange, campaign_id: str | None = None) -> str:
    """One row per line of the orders created in the range, with its order's current state.

    A line's latest version is its order's latest version (every order event writes all its
    lines). Conditions inside the de-duplication only on columns every version of a line
    shares (creation time and date); status, discount share and campaign change, so they are
    read as of the latest version and filtered outside."""
    created = in_range("create_time", time_range, "order_date")
    if _keeps_most(time_range, campaign_id):
        return (
            "SELECT order_id AS oid, currency_code AS currency, product_id AS product,"
            " category_ids AS categories, quantity AS qty, unit_price_minor AS price,"
            " discount_minor AS share, status AS state, campaign_id AS campaign"
            f" FROM {database}.{tables.ORDER_LINES} FINAL WHERE {created}"
        )
    conditions = [created]
    if campaign_id is not None:
        # Narrows the scan to lines that ever named the campaign; the latest is checked outside.
        conditions.append(
            f"line_id IN (SELECT line_id FROM {database}.{tables.ORDER_LINES}"
            f" WHERE campaign_id = {quote(campaign_id)} AND {created})"
        )
    return (
        "SELECT any(order_id) AS oid, any(currency_code) AS currency, any(product_id) AS product,"
        " any(category_ids) AS categories, any(quantity) AS qty, any(unit_price_minor) AS price,"
        " argMax(discount_minor, version) AS share, argMax(status, version) AS state,"
        " argMax(campaign_id, version) AS campaign"
        f" FROM {database}.{tables.ORDER_LINES} WHERE {_where(*conditions)} GROUP BY line_id"
    )


_COST_KEYS = {
    CostGrouping.PRODUCT: "product",
    # A line counts once in each of its categories (arrayDistinct: a category listed twice
    # on one line is still one category of it).
    CostGrouping.CATEGORY: "arrayJoin(arrayDistinct(categories))",
}
# The grouping's `kind` in line_costs_daily and line_costs_monthly.
_COST_KINDS = {CostGrouping.PRODUCT: "product", CostGrouping.CATEGORY: "category"}


def discount_costs(
    database: str,
    time_range: TimeRange,
    grouping: CostGrouping,
    limit: int,
    campaign_id: str | None = None,
) -> str:
    """Per currency, the `limit` keys (product or category ids) with the largest discount over
    the lines of the orders created in the range and CONFIRMED now, ties by ascending key;
    `LIMIT n BY currency` keeps every currency's own list (the caller applies the currency
    rule). Keys without discount, and the empty key (a line without product id), left out.

    Whole months from line_costs_monthly, the whole days of the partial months from
    line_costs_daily, raw lines (latest state) only for the partial days at the edges: rows
    read grow with the months of the range and the keys, not with its lines. Every measure
    is a sum over the branches: the distinct orders too, since the branches cover disjoint
    days and an order has one creation day. The rollups hold the campaign in their key (the
    line's latest campaign), so a campaign filter reads them too, exactly; without one, a
    key's campaigns are summed (an order has one latest campaign)."""
    edges, _, _ = _rollup_ranges(time_range)
    kept = ["state = 'CONFIRMED'"]
    if campaign_id is not None:
        kept.append(f"campaign = {quote(campaign_id)}")
    branches = [
        f"SELECT currency, {_COST_KEYS[grouping]} AS ck, toInt64(sum(share)) AS dis,"
        " toInt64(sum(qty * price)) AS gro, toInt64(sum(qty)) AS uni,"
        " toInt64(uniqExact(oid)) AS ord"
        f" FROM ({latest_lines(database, edge, campaign_id)}) WHERE {_where(*kept)}"
        " GROUP BY currency, ck"
        for edge in edges
    ]
    rollup = [f"kind = {quote(_COST_KINDS[grouping])}"]
    if campaign_id is not None:
        rollup.append(f"campaign_id = {quote(campaign_id)}")
    branches += _rollups(
        database,
        tables.LINE_COSTS_DAILY,
        tables.LINE_COSTS_MONTHLY,
        "currency_code AS currency, cost_key AS ck, discount_minor AS dis, gross_minor AS gro,"
        " units AS uni, orders AS ord",
        time_range,
        extra=_where(*rollup),
    )
    return (
        "SELECT currency AS currency_code, ck AS cost_key, toInt64(sum(dis)) AS discount,"
        " toInt64(sum(gro)) AS gross, toInt64(sum(uni)) AS units, toInt64(sum(ord)) AS orders"
        f" FROM ({' UNION ALL '.join(branches)})"
        " GROUP BY currency_code, cost_key HAVING discount > 0 AND cost_key != ''"
        " ORDER BY currency_code, discount DESC, cost_key"
        f" LIMIT {int(limit)} BY currency_code"
    )


def consumption(database: str, ids: Sequence[str]) -> str:
    """Active uses and their discount per code, all time: the sum of its usages_monthly rows."""
    monthly = f"{database}.{tables.USAGES_MONTHLY}"
    return (
        "SELECT promo_code_id, toInt64(sum(active)) AS active_uses,"
        " toInt64(sum(active_discount_minor)) AS discount_granted"
        f" FROM {_latest_rows(monthly, f'promo_code_id IN {quote_list(ids)}')}"
        " GROUP BY promo_code_id HAVING sum(redemptions) > 0"
        " ORDER BY promo_code_id"
    )


def promo_codes(database: str, ids: Sequence[str]) -> str:
    """Current dimension rows of these codes."""
    return (
        "SELECT promo_code_id AS code_id,"
        " argMax(code, version) AS code_text,"
        " argMax(currency_code, version) AS currency,"
        " toInt64(argMax(max_uses, version)) AS uses_cap,"
        " toInt64(argMax(budget_minor, version)) AS budget_cap"
        f" FROM {database}.{tables.PROMO_CODES} WHERE promo_code_id IN {quote_list(ids)}"
        " GROUP BY code_id ORDER BY code_id"
    )


def promo_code_texts(database: str, ids: Sequence[str]) -> str:
    """The text of codes that only usages or orders name (their creation event not stored)."""
    wanted = quote_list(ids)
    return (
        "SELECT code_id AS promo_code_id, any(code_text) AS code FROM ("
        "SELECT promo_code_id AS code_id, code AS code_text"
        f" FROM {database}.{tables.USAGES} WHERE promo_code_id IN {wanted}"
        " UNION ALL SELECT promo_code_id AS code_id, promo_code AS code_text"
        f" FROM {database}.{tables.ORDERS} WHERE promo_code_id IN {wanted})"
        " GROUP BY promo_code_id ORDER BY promo_code_id"
    )


def find_promo_code_id(database: str, code: str) -> str:
    """Ids whose text is `code`: dimension first (newest code first), then usages, orders (first
    seen first), from the code dictionary: one primary-key range, whatever the history."""
    return (
        "SELECT promo_code_id, source AS rank,"
        f" toUInt32(if(source = 0, max(since), min(since))) AS seen"
        f" FROM {database}.{tables.CODE_DICTIONARY} WHERE code = {quote(code)}"
        " GROUP BY promo_code_id, source ORDER BY rank, seen DESC, promo_code_id LIMIT 1"
    )


# --- campaigns (GetCampaignStats) ---------------------------------------------------------------
#
# A code's campaign never changes (PromoCode.campaign_id is immutable), so a campaign's usages
# are its codes' usages and its orders the orders whose code now is one of them: the per-code
# rollups answer for the campaign's set of codes (a subquery, never a list of ids, however many
# codes it generated), raw rows only for the partial days at the edges, as for one code. Rows
# read grow with the months of the range and the campaign's codes, not with its usages.


def campaign_codes(database: str, campaign_id: str) -> str:
    """The campaign's codes, as a subquery (every version of a code names its campaign)."""
    return (
        f"(SELECT promo_code_id FROM {database}.{tables.PROMO_CODES}"
        f" WHERE campaign_id = {quote(campaign_id)})"
    )


def campaign(database: str, campaign_id: str) -> str:
    """One row: the campaign's current rules (latest version; `rules` 0 when no campaign event
    is stored), its codes now, and `named`, how many codes ever named it. A campaign known
    only from its codes has no name and no limits."""
    wanted = quote(campaign_id)
    zero = "toInt64(0)"
    return (
        "SELECT toInt64(sum(in_rules)) AS rules, toInt64(sum(in_codes)) AS codes,"
        " toInt64(sum(in_named)) AS named, anyIf(in_name, in_rules = 1) AS name,"
        " toInt64(sumIf(in_has_uses, in_rules = 1)) AS has_uses_cap,"
        " toInt64(sumIf(in_uses_cap, in_rules = 1)) AS uses_cap,"
        " toInt64(sumIf(in_has_budget, in_rules = 1)) AS has_budget_cap,"
        " toInt64(sumIf(in_budget_cap, in_rules = 1)) AS budget_cap,"
        " anyIf(budget_currency, in_rules = 1) AS currency FROM ("
        f"SELECT toInt64(1) AS in_rules, {zero} AS in_codes, {zero} AS in_named,"
        " argMax(display_name, version) AS in_name,"
        " toInt64(argMax(has_max_uses, version)) AS in_has_uses,"
        " toInt64(argMax(max_uses, version)) AS in_uses_cap,"
        " toInt64(argMax(has_budget, version)) AS in_has_budget,"
        " toInt64(argMax(budget_minor, version)) AS in_budget_cap,"
        " argMax(currency_code, version) AS budget_currency"
        f" FROM {database}.{tables.CAMPAIGNS} WHERE campaign_id = {wanted} GROUP BY campaign_id"
        f" UNION ALL SELECT {zero} AS in_rules, toInt64(countIf(now_in = {wanted})) AS in_codes,"
        f" toInt64(count()) AS in_named, '' AS in_name, {zero} AS in_has_uses,"
        f" {zero} AS in_uses_cap,"
        f" {zero} AS in_has_budget, {zero} AS in_budget_cap, '' AS budget_currency"
        " FROM (SELECT promo_code_id, argMax(campaign_id, version) AS now_in"
        f" FROM {database}.{tables.PROMO_CODES} WHERE promo_code_id IN (SELECT promo_code_id"
        f" FROM {database}.{tables.PROMO_CODES} WHERE campaign_id = {wanted})"
        " GROUP BY promo_code_id))"
    )


def campaign_usage_totals(database: str, time_range: TimeRange, campaign_id: str) -> str:
    facts = _usage_facts(database, time_range, None, campaign_codes(database, campaign_id))
    return (
        f"SELECT currency AS currency_code, {_USAGE_FACT_MEASURES} FROM ({facts})"
        " GROUP BY currency_code HAVING redemptions > 0 ORDER BY currency_code"
    )


def campaign_release_counts(database: str, time_range: TimeRange, campaign_id: str) -> str:
    return _releases(
        database, time_range, None, by_code=False, code_set=campaign_codes(database, campaign_id)
    )


def campaign_order_totals(database: str, time_range: TimeRange, campaign_id: str) -> str:
    facts = _order_facts(database, time_range, code_set=campaign_codes(database, campaign_id))
    return (
        f"SELECT currency AS currency_code, {_FACT_MEASURES} FROM ({facts})"
        " GROUP BY currency_code ORDER BY currency_code"
    )


def campaign_consumption(database: str, campaign_id: str) -> str:
    """The campaign's ACTIVE usages now and their discount, per currency, all time: the sum of
    its codes' usages_monthly rows."""
    monthly, codes = f"{database}.{tables.USAGES_MONTHLY}", campaign_codes(database, campaign_id)
    return (
        "SELECT currency_code, toInt64(sum(active)) AS active_uses,"
        " toInt64(sum(active_discount_minor)) AS discount_granted"
        f" FROM {_latest_rows(monthly, f'promo_code_id IN {codes}')}"
        " GROUP BY currency_code HAVING sum(redemptions) > 0 ORDER BY currency_code"
    )


def tables_present(database: str) -> str:
    return (
        "SELECT toInt64(count()) AS tables FROM system.tables"
        f" WHERE database = {quote(database)} AND name IN {quote_list(REQUIRED_TABLES)}"
    )
