"""Derived tables: recomputed from the latest state of their sources, never summed from deltas.

Why not materialized views: ClickHouse feeds a view only after the source part is committed, so
a view that fails (TOO_MANY_PARTS, memory, a crash) leaves the source rows stored and the derived
table without them; a SummingMergeTree then cannot be repaired by inserting again (a replayed
delta is summed twice), and 18.16 has no insert de-duplication. So a derived row is an absolute
value, recomputed from the sources' latest state (argMax by version per entity), and written
into a ReplacingMergeTree whose version column is the *state version* of its key:

    state_version(key) = sum over the source entities of the key of (max stored version + 1)

It is exact and idempotent whatever failed, whoever computes it and in whatever order:
- sources only grow (rows are never deleted; a merge keeps each entity's highest version), and
  an entity never changes key (user, day and currency are fixed at creation), so the state
  version of a key never decreases, and grows with every new entity or version;
- a recomputation reads one consistent snapshot of each source (one SELECT): its values and its
  state version describe the same state. Two recomputations with equal state versions read the
  same latest state (every term is non-decreasing, so equal sums mean equal terms), hence equal
  values: ties are harmless;
- the recomputation that runs after the last source insert committed sees the whole state and
  writes the highest state version; ReplacingMergeTree and `FINAL` keep the highest, so a
  recomputation that was late (a client timeout, a retry, a second consumer) can never
  overwrite it with older values;
- a recomputation that failed midway, or never ran (the process died between the source INSERT
  and it), is redone when the batch is delivered again: the entry is acknowledged only after
  both succeeded.
Readers take the latest version per key (`FINAL`, or argMax by state_version).

Derived tables: users_analytics (per user, day and currency) and the rollups of issue 11,
orders_daily (per day and currency), usages_daily and code_orders_daily (per day, currency and
code), and their monthly sums orders_monthly, usages_monthly and code_orders_monthly, computed
from the daily rows (the same argument, with the daily keys as the entities: `_monthly`). The
same statement fills a rebuild's tables (no scope: every key, in DERIVED_TABLES' order, days
before months) and is the last statement of the migration that made the table (002 turned
users_analytics from view-fed sums into this; 003-005 created the daily rollups, 006-008 the
monthly ones; 013-014 line_costs_daily and line_costs_monthly, ListDiscountCosts' rollups
over order_lines; 016-017 orders_hourly and code_orders_hourly, the hourly series'). The
code dictionary (009) is derived too, but needs no state version: its readers aggregate with
min and max (`refresh_code_dictionary`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from promo_libs.analytics_schema import (
    CODE_DICTIONARY,
    CODE_ORDERS_DAILY,
    CODE_ORDERS_HOURLY,
    CODE_ORDERS_MONTHLY,
    LINE_COSTS_DAILY,
    LINE_COSTS_MONTHLY,
    ORDER_LINES,
    ORDERS,
    ORDERS_DAILY,
    ORDERS_HOURLY,
    ORDERS_MONTHLY,
    PROMO_CODES,
    USAGES,
    USAGES_DAILY,
    USAGES_MONTHLY,
    USERS_ANALYTICS,
)

Scope = Mapping[str, Collection[str]]


def _hex_set(values: Collection[str]) -> str:
    # One string literal of hex-encoded values: aiochclient tokenizes every query with sqlparse,
    # and a literal is one token where an IN list of thousands of quoted values is thousands.
    encoded = ",".join(sorted(v.encode().hex() for v in values))
    return f"(SELECT arrayJoin(arrayMap(x -> unhex(x), splitByChar(',', '{encoded}'))))"


def _date_set(values: Collection[str]) -> str:
    # Dates are ISO text from the row mapping; toDate keeps partition pruning on the date column.
    dates = ", ".join(f"toDate('{v}')" for v in sorted(values) if _is_date(v))
    return f"({dates})"


def _is_date(value: str) -> bool:
    parts = value.split("-")
    return len(parts) == 3 and all(p.isdigit() for p in parts)


def _condition(user_column: str, date_column: str, scope: Scope | None) -> str:
    if scope is None:
        return "1"
    users, days = scope.get("user_id", ()), scope.get("day", ())
    if not users or not days:
        return "0"
    return f"{user_column} IN {_hex_set(users)} AND {date_column} IN {_date_set(days)}"


def _day_condition(scope: Scope | None) -> str:
    """The rows of the scope's order days (every day without a scope, none for an empty one)."""
    if scope is None:
        return "1"
    days = scope.get("day", ())
    return f"order_date IN {_date_set(days)}" if days else "0"


def refresh_users_analytics(
    database: str,
    *,
    suffix: str = "",
    scope: Scope | None = None,
    chunk: tuple[int, int] | None = None,
) -> str:
    """INSERT ... SELECT that rewrites users_analytics{suffix} for the keys in `scope`.

    Per user, day (of the order or usage) and currency, by latest state: confirmed orders,
    their revenue and discounts, active redemptions (the seed's measures), and since migration
    015 what GetUserStats reads: orders placed (every status), rejected and cancelled ones,
    usages created (released ones included), the active ones' discount, and the distinct code
    ids and texts of the usages (sorted arrays: distinct counts do not add up over days).
    `suffix` names a rebuild's tables. `scope` narrows to users x days (a superset of the keys
    a batch touched: recomputing a key nothing changed rewrites the same values, harmless).
    `chunk` (i, n) narrows to the users whose hash is i modulo n: the user is part of every
    key, so the n chunks write each key once and completely, and each holds about 1/n of the
    per-order groups in memory (over every key at 10M rows, one statement exceeds the local
    server's 2 GB cap).
    """
    target = f"{database}.{USERS_ANALYTICS}{suffix}"
    orders = f"{database}.{ORDERS}{suffix}"
    usages = f"{database}.{USAGES}{suffix}"
    part = "" if chunk is None else f" AND cityHash64(user_id) % {chunk[1]} = {chunk[0]}"
    return (
        f"INSERT INTO {target} (user_id, day, currency_code, orders, revenue_minor,"
        " discounts_minor, redemptions, placed_orders, rejected_orders, cancelled_orders,"
        " usages, active_discount_minor, code_ids, code_texts, state_version)"
        " SELECT user_id, day, currency_code, toInt64(sum(o)), toInt64(sum(r)), toInt64(sum(d)),"
        " toInt64(sum(u)), toInt64(sum(p)), toInt64(sum(j)), toInt64(sum(x)), toInt64(sum(n)),"
        " toInt64(sum(a)), arraySort(groupUniqArrayArray(ci)), arraySort(groupUniqArrayArray(ct)),"
        " toUInt64(sum(v)) FROM ("
        "SELECT user_id, order_date AS day, currency_code,"
        " toInt64(argMax(status, version) = 'CONFIRMED') AS o,"
        " o * argMax(total_minor, version) AS r, o * argMax(discount_minor, version) AS d,"
        " toInt64(0) AS u, toInt64(1) AS p, toInt64(argMax(status, version) = 'REJECTED') AS j,"
        " toInt64(argMax(status, version) = 'CANCELLED') AS x, toInt64(0) AS n, toInt64(0) AS a,"
        " emptyArrayString() AS ci, emptyArrayString() AS ct, max(version) + 1 AS v"
        f" FROM {orders} WHERE {_condition('user_id', 'order_date', scope)}{part}"
        " GROUP BY user_id, day, currency_code, order_id"
        " UNION ALL "
        "SELECT user_id, usage_date AS day, currency_code, toInt64(0) AS o, toInt64(0) AS r,"
        " toInt64(0) AS d, toInt64(argMax(status, version) = 'ACTIVE') AS u, toInt64(0) AS p,"
        " toInt64(0) AS j, toInt64(0) AS x, toInt64(1) AS n,"
        " u * argMax(discount_minor, version) AS a, [any(promo_code_id)] AS ci,"
        " [any(code)] AS ct, max(version) + 1 AS v"
        f" FROM {usages} WHERE {_condition('user_id', 'usage_date', scope)}{part}"
        " GROUP BY user_id, day, currency_code, usage_id"
        ") GROUP BY user_id, day, currency_code"
    )


def refresh_orders_daily(database: str, *, suffix: str = "", scope: Scope | None = None) -> str:
    """INSERT ... SELECT that rewrites orders_daily{suffix} for the days in `scope`.

    Per UTC day of creation and currency, by latest state: every order, the confirmed, rejected
    and cancelled ones, the confirmed ones' revenue and discounts, and the distinct buyers (a
    sorted array: distinct counts over several days are not sums, so a range counts the
    distinct elements of its days' arrays). A day's state version is the sum over its orders
    of (their highest stored version + 1), exactly as for users_analytics: an order never
    changes day or currency, and a day only gains orders and versions.
    """
    return _orders_by_time(
        f"{database}.{ORDERS_DAILY}{suffix}", f"{database}.{ORDERS}{suffix}", scope, _BY_DAY
    )


def refresh_orders_hourly(database: str, *, suffix: str = "", scope: Scope | None = None) -> str:
    """INSERT ... SELECT that rewrites orders_hourly{suffix} for the hours of the days in
    `scope`: orders_daily's sums per UTC hour of creation and currency (no buyers: an hourly
    series reports none). An order never changes hour either, so the same argument holds; a
    scope's days name whole hours (every hour lies in one day)."""
    return _orders_by_time(
        f"{database}.{ORDERS_HOURLY}{suffix}", f"{database}.{ORDERS}{suffix}", scope, _BY_HOUR
    )


# A rollup's time key: (its column, the expression over an order's rows, with buyers or not).
_BY_DAY = ("day", "any(order_date)", True)
_BY_HOUR = ("hour", "toStartOfHour(any(create_time))", False)


def _orders_by_time(
    target: str, orders: str, scope: Scope | None, period: tuple[str, str, bool]
) -> str:
    column, bucket, with_buyers = period
    buyers = (" buyers,", " arraySort(groupUniqArray(buyer)),") if with_buyers else ("", "")
    # Aliases never repeat a column name: current ClickHouse would read them in WHERE too.
    return (
        f"INSERT INTO {target} ({column}, currency_code, orders, confirmed, rejected, cancelled,"
        f" revenue_minor, discounts_minor,{buyers[0]} state_version)"
        " SELECT d, cur, toInt64(count()), toInt64(countIf(state = 'CONFIRMED')),"
        " toInt64(countIf(state = 'REJECTED')), toInt64(countIf(state = 'CANCELLED')),"
        " toInt64(sumIf(total, state = 'CONFIRMED')), toInt64(sumIf(off, state = 'CONFIRMED')),"
        f"{buyers[1]} toUInt64(sum(v)) FROM ("
        f"SELECT order_id, {bucket} AS d, any(currency_code) AS cur, any(user_id) AS buyer,"
        " argMax(status, version) AS state, argMax(total_minor, version) AS total,"
        " argMax(discount_minor, version) AS off, max(version) + 1 AS v"
        f" FROM {orders} WHERE {_day_condition(scope)} GROUP BY order_id"
        ") GROUP BY d, cur"
    )


def refresh_usages_daily(database: str, *, suffix: str = "", scope: Scope | None = None) -> str:
    """INSERT ... SELECT that rewrites usages_daily{suffix} for the days in `scope`.

    Per UTC day, currency and code, by latest state, two kinds of facts: the usages created
    that day (redemptions; the active ones, their discount and order amount; the distinct
    holders and code texts as sorted arrays, since distinct counts over several days are not
    sums) and the usages released that day (by the day of their release_time). A key's state
    version sums (highest stored version + 1) over both kinds of its usages: a usage never
    changes creation day, currency or code, and enters its release day once (RELEASED is its
    last state), so a key only gains usages and versions, as the module docstring requires.
    A batch's scope holds every day its usages were created or released on, and both kinds
    are recomputed for each such day (a key recomputed from one kind only would be short).
    """
    target = f"{database}.{USAGES_DAILY}{suffix}"
    usages = f"{database}.{USAGES}{suffix}"
    if scope is None:
        created, released = "1", "1"
    elif days := {*scope.get("day", ()), *scope.get("release_day", ())}:
        created = f"usage_date IN {_date_set(days)}"
        # Any creation day can be released on these days: this branch reads every partition's
        # status and release_time (once per batch that touched a day, not per query).
        released = f"toDate(release_time) IN {_date_set(days)}"
    else:
        created, released = "0", "0"
    zero = "toInt64(0)"
    return (
        f"INSERT INTO {target} (day, currency_code, promo_code_id, redemptions, active,"
        " active_discount_minor, active_order_amount_minor, releases, holders, code_texts,"
        " state_version)"
        " SELECT d, cur, cid, toInt64(sum(n)), toInt64(sum(a)), toInt64(sum(off)),"
        " toInt64(sum(amount)), toInt64(sum(x)), arraySort(groupUniqArrayArray(h)),"
        " arraySort(groupUniqArrayArray(t)), toUInt64(sum(v)) FROM ("
        "SELECT any(usage_date) AS d, any(currency_code) AS cur, any(promo_code_id) AS cid,"
        " toInt64(1) AS n, toInt64(argMax(status, version) = 'ACTIVE') AS a,"
        " a * argMax(discount_minor, version) AS off,"
        f" a * argMax(order_amount_minor, version) AS amount, {zero} AS x,"
        " [any(user_id)] AS h, [any(code)] AS t, max(version) + 1 AS v"
        f" FROM {usages} WHERE {created} GROUP BY usage_id"
        " UNION ALL "
        "SELECT toDate(any(release_time)) AS d, any(currency_code) AS cur,"
        f" any(promo_code_id) AS cid, {zero} AS n, {zero} AS a, {zero} AS off,"
        f" {zero} AS amount, toInt64(1) AS x, emptyArrayString() AS h,"
        " emptyArrayString() AS t, max(version) + 1 AS v"
        f" FROM {usages} WHERE status = 'RELEASED' AND {released} GROUP BY usage_id"
        ") GROUP BY d, cur, cid"
    )


def refresh_code_orders_daily(
    database: str, *, suffix: str = "", scope: Scope | None = None
) -> str:
    """INSERT ... SELECT that rewrites code_orders_daily{suffix} for the days x codes in `scope`.

    Per UTC day of creation, currency and code, the measures of orders_daily over the orders
    whose latest version names the code. An order's code is not fixed (a pending order has
    none; confirming or rejecting sets it), so a key's entities are every order that *ever*
    named the code, measured only when its latest version still does: that set only grows, so
    its state version, the sum of (highest stored version + 1) over it, never decreases, and
    the module docstring's argument holds. The recomputation reads every version of such an
    order (the subquery), never only its rows naming a code in scope, and writes only keys of
    the scope's codes (a key of another code would lack that code's other orders).
    """
    return _code_orders_by_time(
        f"{database}.{CODE_ORDERS_DAILY}{suffix}", f"{database}.{ORDERS}{suffix}", scope, _BY_DAY
    )


def refresh_code_orders_hourly(
    database: str, *, suffix: str = "", scope: Scope | None = None
) -> str:
    """INSERT ... SELECT that rewrites code_orders_hourly{suffix} for the hours of the days x
    codes in `scope`: code_orders_daily's sums per UTC hour of creation (no buyers), by the
    same argument."""
    return _code_orders_by_time(
        f"{database}.{CODE_ORDERS_HOURLY}{suffix}",
        f"{database}.{ORDERS}{suffix}",
        scope,
        _BY_HOUR,
    )


def _code_orders_by_time(
    target: str, orders: str, scope: Scope | None, period: tuple[str, str, bool]
) -> str:
    column, bucket, with_buyers = period
    if scope is None:
        condition, wanted = "1", "1"
    elif (days := scope.get("day", ())) and (codes := scope.get("promo_code_id", ())):
        named = f"promo_code_id IN {_hex_set(codes)} AND order_date IN {_date_set(days)}"
        condition = (
            f"order_date IN {_date_set(days)}"
            f" AND order_id IN (SELECT order_id FROM {orders} WHERE {named})"
        )
        wanted = f"cid IN {_hex_set(codes)}"
    else:
        condition, wanted = "0", "0"
    mine = "latest = cid"
    buyers = (
        (" buyers,", f" arraySort(groupUniqArrayIf(buyer, {mine})),") if with_buyers else ("", "")
    )
    return (
        f"INSERT INTO {target} ({column}, currency_code, promo_code_id, orders, confirmed,"
        f" rejected, cancelled, revenue_minor, discounts_minor,{buyers[0]} state_version)"
        f" SELECT d, cur, cid, toInt64(countIf({mine})),"
        f" toInt64(countIf({mine} AND state = 'CONFIRMED')),"
        f" toInt64(countIf({mine} AND state = 'REJECTED')),"
        f" toInt64(countIf({mine} AND state = 'CANCELLED')),"
        f" toInt64(sumIf(total, {mine} AND state = 'CONFIRMED')),"
        f" toInt64(sumIf(off, {mine} AND state = 'CONFIRMED')),"
        f"{buyers[1]} toUInt64(sum(v)) FROM ("
        f"SELECT order_id, {bucket} AS d, any(currency_code) AS cur, any(user_id) AS buyer,"
        " argMax(status, version) AS state, argMax(total_minor, version) AS total,"
        " argMax(discount_minor, version) AS off, argMax(promo_code_id, version) AS latest,"
        " arrayFilter(x -> x != '', groupUniqArray(promo_code_id)) AS named,"
        " max(version) + 1 AS v"
        f" FROM {orders} WHERE {condition} GROUP BY order_id"
        f") ARRAY JOIN named AS cid WHERE {wanted} GROUP BY d, cur, cid"
    )


def refresh_line_costs_daily(database: str, *, suffix: str = "", scope: Scope | None = None) -> str:
    """INSERT ... SELECT that rewrites line_costs_daily{suffix} for the days in `scope`.

    Per UTC day of the order's creation, currency, grouping (`product`: the line's product;
    `category`: each distinct category of the line) with its key, and campaign: over the
    lines whose order is CONFIRMED now and whose latest version names the campaign, the sum of
    their discount shares, gross (quantity x unit price) and units, and their distinct orders.
    The distinct orders add up over days (an order has one creation day) and over campaigns
    (an order has one latest campaign), never over keys, which readers never sum.

    A line's day, currency, product and categories never change; its campaign changes once,
    from none ('', a pending order) to the campaign of the code it is confirmed with, and
    never after. A key's entities must be a set that only grows in what order_lines *keeps*:
    a merge of its ReplacingMergeTree drops every version of a line but the latest, so the
    campaigns a line ever named lose '' once it has one (the latest still names it). Hence,
    as for code_orders_daily, a campaign's entities are the lines that ever named it, which
    their latest version keeps naming, and those of no campaign ('') are *every* line of the
    day and grouping key, whatever it names. Each set only grows, and its state version, the
    sum of (highest stored version + 1) over it, never decreases: the module docstring's
    argument holds. (With '' as "ever named" a merge shrank the set: a later recomputation
    wrote a lower state version than an earlier one, and lost to its older values.) A day is
    recomputed whole (every key of it), so no key is written partially.
    """
    target = f"{database}.{LINE_COSTS_DAILY}{suffix}"
    lines = f"{database}.{ORDER_LINES}{suffix}"
    condition = _day_condition(scope)
    mine = "state = 'CONFIRMED' AND latest = cid"
    # Two nested ARRAY JOINs (18.16 allows one per SELECT): '' and the campaigns ever named, then
    # the grouping keys (the product, then each distinct category) with their kinds alongside.
    return (
        f"INSERT INTO {target} (day, currency_code, kind, cost_key, campaign_id,"
        " discount_minor, gross_minor, units, orders, state_version)"
        f" SELECT d, cur, kind, k, cid, toInt64(sumIf(share, {mine})),"
        f" toInt64(sumIf(qty * price, {mine})), toInt64(sumIf(qty, {mine})),"
        f" toInt64(uniqExactIf(oid, {mine})), toUInt64(sum(v)) FROM ("
        "SELECT d, cur, oid, qty, price, share, state, latest, cid, v,"
        " arrayConcat(['product'], arrayMap(c -> 'category', cats)) AS gkinds,"
        " arrayConcat([product], cats) AS gkeys FROM ("
        "SELECT line_id, any(order_date) AS d, any(currency_code) AS cur, any(order_id) AS oid,"
        " any(product_id) AS product, arrayDistinct(any(category_ids)) AS cats,"
        " any(quantity) AS qty, any(unit_price_minor) AS price,"
        " argMax(discount_minor, version) AS share, argMax(status, version) AS state,"
        " argMax(campaign_id, version) AS latest,"
        " arrayConcat([''], arrayFilter(c -> c != '', groupUniqArray(campaign_id))) AS named,"
        " max(version) + 1 AS v"
        f" FROM {lines} WHERE {condition} GROUP BY line_id"
        ") ARRAY JOIN named AS cid"
        ") ARRAY JOIN gkinds AS kind, gkeys AS k GROUP BY d, cur, kind, k, cid"
    )


def _month_ranges(values: Collection[str]) -> str:
    """`day` in the months of `values` (ISO dates, any day of the month), as day ranges: a
    range on the partition's date column prunes the other months' partitions."""
    months = sorted({v[:7] for v in values if _is_date(v)})
    if not months:
        return "0"
    ranges = []
    for month in months:
        year, number = int(month[:4]), int(month[5:7])
        following = f"{year + number // 12:04d}-{number % 12 + 1:02d}"
        ranges.append(f"(day >= toDate('{month}-01') AND day < toDate('{following}-01'))")
    return "(" + " OR ".join(ranges) + ")"


def _monthly_condition(scope: Scope | None, *, by_code: bool) -> str:
    if scope is None:
        return "1"
    months = _month_ranges({*scope.get("month", ()), *scope.get("release_month", ())})
    if not by_code or months == "0":
        return months
    codes = scope.get("promo_code_id", ())
    return f"{months} AND promo_code_id IN {_hex_set(codes)}" if codes else "0"


def _monthly(
    target: str,
    daily: str,
    keys: str,
    sums: Sequence[str],
    arrays: Sequence[str],
    condition: str,
) -> str:
    """INSERT ... SELECT of a monthly rollup from its daily rollup's latest rows (FINAL).

    A month's row is the sum of its days' rows (the distinct arrays merged: the union of
    sorted sets is exact, a sum of distinct counts is not), and its state version the sum of
    their state versions. Each day's latest state version only grows and a day never
    disappears, so the month's only grows, and equal sums mean equal days: the module
    docstring's argument, with the daily keys as the entities. Every writer refreshes a month
    after the days it touched, in the same batch (the pipeline runs the derived tables in
    their order, and a batch is acknowledged after all of them), so the last month refresh
    after the last day refresh reads every day's latest row and wins by version.
    """
    measures = "".join(f", toInt64(sum({m}))" for m in sums)
    merged = "".join(f", arraySort(groupUniqArrayArray({a}))" for a in arrays)
    columns = ", ".join([*sums, *arrays])
    return (
        f"INSERT INTO {target} (month, {keys}, {columns}, state_version)"
        f" SELECT toStartOfMonth(day) AS m, {keys}{measures}{merged},"
        f" toUInt64(sum(state_version)) FROM {daily} FINAL WHERE {condition}"
        f" GROUP BY m, {keys}"
    )


_ORDER_SUMS = ("orders", "confirmed", "rejected", "cancelled", "revenue_minor", "discounts_minor")


def refresh_orders_monthly(database: str, *, suffix: str = "", scope: Scope | None = None) -> str:
    """INSERT ... SELECT that rewrites orders_monthly{suffix} for the months in `scope`
    (`month`: any day of each month), from orders_daily{suffix}."""
    return _monthly(
        f"{database}.{ORDERS_MONTHLY}{suffix}",
        f"{database}.{ORDERS_DAILY}{suffix}",
        "currency_code",
        _ORDER_SUMS,
        ("buyers",),
        _monthly_condition(scope, by_code=False),
    )


def refresh_usages_monthly(database: str, *, suffix: str = "", scope: Scope | None = None) -> str:
    """INSERT ... SELECT that rewrites usages_monthly{suffix} for the months x codes in
    `scope` (the months of the usages' creation and release days), from usages_daily{suffix}."""
    return _monthly(
        f"{database}.{USAGES_MONTHLY}{suffix}",
        f"{database}.{USAGES_DAILY}{suffix}",
        "currency_code, promo_code_id",
        ("redemptions", "active", "active_discount_minor", "active_order_amount_minor", "releases"),
        ("holders", "code_texts"),
        _monthly_condition(scope, by_code=True),
    )


def refresh_code_orders_monthly(
    database: str, *, suffix: str = "", scope: Scope | None = None
) -> str:
    """INSERT ... SELECT that rewrites code_orders_monthly{suffix} for the months x codes in
    `scope`, from code_orders_daily{suffix}."""
    return _monthly(
        f"{database}.{CODE_ORDERS_MONTHLY}{suffix}",
        f"{database}.{CODE_ORDERS_DAILY}{suffix}",
        "currency_code, promo_code_id",
        _ORDER_SUMS,
        ("buyers",),
        _monthly_condition(scope, by_code=True),
    )


def refresh_line_costs_monthly(
    database: str, *, suffix: str = "", scope: Scope | None = None
) -> str:
    """INSERT ... SELECT that rewrites line_costs_monthly{suffix} for the months in `scope`,
    from line_costs_daily{suffix} (the distinct orders add up over days: an order has one)."""
    return _monthly(
        f"{database}.{LINE_COSTS_MONTHLY}{suffix}",
        f"{database}.{LINE_COSTS_DAILY}{suffix}",
        "currency_code, kind, cost_key, campaign_id",
        ("discount_minor", "gross_minor", "units", "orders"),
        (),
        _monthly_condition(scope, by_code=False),
    )


# A source of the code dictionary: (numbered source, table, text column, entity key, extra
# condition). The numbers are find_promo_code_id's preference: dimension, usages, orders.
_CODE_SOURCES = (
    (0, PROMO_CODES, "code", "promo_code_id", ""),
    (1, USAGES, "code", "usage_id", ""),
    (2, ORDERS, "promo_code", "order_id", " AND promo_code_id != ''"),
)
_NEWEST_FIRST = 0  # the dimension prefers a code's newest id, the event tables its first one


def refresh_code_dictionary(database: str, *, suffix: str = "", scope: Scope | None = None) -> str:
    """INSERT ... SELECT that adds to code_dictionary{suffix} the facts of the stored rows of
    the entities in `scope` (`promo_code_id`, `usage_id`, `order_id`: ids of each source).

    A fact is (text, id, source, the first or, for the dimension, the newest create_time of
    the id's rows with that text). Readers aggregate every fact of a text with min or max per
    (id, source), which neither a duplicate nor a late insert of a fact can change, so this
    table needs no state version: it must only hold a fact for every stored source row, and
    nothing else. The statement reads the stored rows back by entity id (the sources'
    primary key), after their INSERT, so it never adds a fact for a row that did not land, and
    a redelivered batch adds the same facts again. ReplacingMergeTree keeps, per (text,
    source, id), the row with the highest `preference` (the creation second for the
    dimension, its complement for the others): merges then do what readers do, and the table
    shrinks to one row per (text, source, id).
    """
    target = f"{database}.{CODE_DICTIONARY}{suffix}"
    branches = []
    for source, table, text, key, extra in _CODE_SOURCES:
        if scope is None:
            condition = "1"
        elif ids := scope.get(key, ()):
            condition = f"{key} IN {_hex_set(ids)}"
        else:
            condition = "0"
        since = "max(create_time)" if source == _NEWEST_FIRST else "min(create_time)"
        branches.append(
            f"SELECT {text} AS t, promo_code_id AS cid, toUInt8({source}) AS s, {since} AS seen"
            f" FROM {database}.{table}{suffix} WHERE {condition} AND {text} != ''{extra}"
            f" GROUP BY t, cid"
        )
    preference = f"if(s = {_NEWEST_FIRST}, toUInt32(seen), 4294967295 - toUInt32(seen))"
    return (
        f"INSERT INTO {target} (code, promo_code_id, source, since, preference)"
        f" SELECT t, cid, s, seen, {preference} FROM ({' UNION ALL '.join(branches)})"
    )


REFRESH = {
    USERS_ANALYTICS: refresh_users_analytics,
    ORDERS_DAILY: refresh_orders_daily,
    USAGES_DAILY: refresh_usages_daily,
    CODE_ORDERS_DAILY: refresh_code_orders_daily,
    ORDERS_HOURLY: refresh_orders_hourly,
    CODE_ORDERS_HOURLY: refresh_code_orders_hourly,
    ORDERS_MONTHLY: refresh_orders_monthly,
    USAGES_MONTHLY: refresh_usages_monthly,
    CODE_ORDERS_MONTHLY: refresh_code_orders_monthly,
    CODE_DICTIONARY: refresh_code_dictionary,
    LINE_COSTS_DAILY: refresh_line_costs_daily,
    LINE_COSTS_MONTHLY: refresh_line_costs_monthly,
}


# Scope columns that name independent sets of entities (a statement per column and chunk is
# the same recomputation); every other table's scope is a product of its columns.
INDEPENDENT_SCOPES = {CODE_DICTIONARY: ("promo_code_id", "usage_id", "order_id")}


def refresh_statement(
    table: str, database: str, *, suffix: str = "", scope: Scope | None = None
) -> str:
    return REFRESH[table](database, suffix=suffix, scope=scope)
