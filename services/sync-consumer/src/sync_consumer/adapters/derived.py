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

Four derived tables: users_analytics (per user, day and currency) and the rollups of issue 11,
orders_daily (per day and currency), usages_daily and code_orders_daily (per day, currency and
code). The same statement fills a rebuild's tables (no scope: every key) and is the last
statement of the migration that made the table (002 turned users_analytics from view-fed sums
into this; 003 created orders_daily, 004 usages_daily, 005 code_orders_daily).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from promo_libs.analytics_schema import (
    CODE_ORDERS_DAILY,
    ORDERS,
    ORDERS_DAILY,
    USAGES,
    USAGES_DAILY,
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


def refresh_users_analytics(database: str, *, suffix: str = "", scope: Scope | None = None) -> str:
    """INSERT ... SELECT that rewrites users_analytics{suffix} for the keys in `scope`.

    Per user, day (of the order or usage) and currency: confirmed orders, their revenue and
    discounts, active redemptions, all by latest state; `suffix` names a rebuild's tables.
    `scope` narrows to users x days (a superset of the keys a batch touched: recomputing a key
    nothing changed rewrites the same values, which is harmless).
    """
    target = f"{database}.{USERS_ANALYTICS}{suffix}"
    orders = f"{database}.{ORDERS}{suffix}"
    usages = f"{database}.{USAGES}{suffix}"
    return (
        f"INSERT INTO {target} (user_id, day, currency_code, orders, revenue_minor,"
        " discounts_minor, redemptions, state_version)"
        " SELECT user_id, day, currency_code, toInt64(sum(o)), toInt64(sum(r)), toInt64(sum(d)),"
        " toInt64(sum(u)), toUInt64(sum(v)) FROM ("
        "SELECT user_id, order_date AS day, currency_code,"
        " toInt64(argMax(status, version) = 'CONFIRMED') AS o,"
        " o * argMax(total_minor, version) AS r, o * argMax(discount_minor, version) AS d,"
        " toInt64(0) AS u, max(version) + 1 AS v"
        f" FROM {orders} WHERE {_condition('user_id', 'order_date', scope)}"
        " GROUP BY user_id, day, currency_code, order_id"
        " UNION ALL "
        "SELECT user_id, usage_date AS day, currency_code, toInt64(0) AS o, toInt64(0) AS r,"
        " toInt64(0) AS d, toInt64(argMax(status, version) = 'ACTIVE') AS u,"
        " max(version) + 1 AS v"
        f" FROM {usages} WHERE {_condition('user_id', 'usage_date', scope)}"
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
    target = f"{database}.{ORDERS_DAILY}{suffix}"
    orders = f"{database}.{ORDERS}{suffix}"
    if scope is None:
        condition = "1"
    elif days := scope.get("day", ()):
        condition = f"order_date IN {_date_set(days)}"
    else:
        condition = "0"
    # Aliases never repeat a column name: current ClickHouse would read them in WHERE too.
    return (
        f"INSERT INTO {target} (day, currency_code, orders, confirmed, rejected, cancelled,"
        " revenue_minor, discounts_minor, buyers, state_version)"
        " SELECT d, cur, toInt64(count()), toInt64(countIf(state = 'CONFIRMED')),"
        " toInt64(countIf(state = 'REJECTED')), toInt64(countIf(state = 'CANCELLED')),"
        " toInt64(sumIf(total, state = 'CONFIRMED')), toInt64(sumIf(off, state = 'CONFIRMED')),"
        " arraySort(groupUniqArray(buyer)), toUInt64(sum(v)) FROM ("
        "SELECT order_id, any(order_date) AS d, any(currency_code) AS cur, any(user_id) AS buyer,"
        " argMax(status, version) AS state, argMax(total_minor, version) AS total,"
        " argMax(discount_minor, version) AS off, max(version) + 1 AS v"
        f" FROM {orders} WHERE {condition} GROUP BY order_id"
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
    target = f"{database}.{CODE_ORDERS_DAILY}{suffix}"
    orders = f"{database}.{ORDERS}{suffix}"
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
    return (
        f"INSERT INTO {target} (day, currency_code, promo_code_id, orders, confirmed, rejected,"
        " cancelled, revenue_minor, discounts_minor, buyers, state_version)"
        f" SELECT d, cur, cid, toInt64(countIf({mine})),"
        f" toInt64(countIf({mine} AND state = 'CONFIRMED')),"
        f" toInt64(countIf({mine} AND state = 'REJECTED')),"
        f" toInt64(countIf({mine} AND state = 'CANCELLED')),"
        f" toInt64(sumIf(total, {mine} AND state = 'CONFIRMED')),"
        f" toInt64(sumIf(off, {mine} AND state = 'CONFIRMED')),"
        f" arraySort(groupUniqArrayIf(buyer, {mine})), toUInt64(sum(v)) FROM ("
        "SELECT order_id, any(order_date) AS d, any(currency_code) AS cur, any(user_id) AS buyer,"
        " argMax(status, version) AS state, argMax(total_minor, version) AS total,"
        " argMax(discount_minor, version) AS off, argMax(promo_code_id, version) AS latest,"
        " arrayFilter(x -> x != '', groupUniqArray(promo_code_id)) AS named,"
        " max(version) + 1 AS v"
        f" FROM {orders} WHERE {condition} GROUP BY order_id"
        f") ARRAY JOIN named AS cid WHERE {wanted} GROUP BY d, cur, cid"
    )


REFRESH = {
    USERS_ANALYTICS: refresh_users_analytics,
    ORDERS_DAILY: refresh_orders_daily,
    USAGES_DAILY: refresh_usages_daily,
    CODE_ORDERS_DAILY: refresh_code_orders_daily,
}


def refresh_statement(
    table: str, database: str, *, suffix: str = "", scope: Scope | None = None
) -> str:
    return REFRESH[table](database, suffix=suffix, scope=scope)
