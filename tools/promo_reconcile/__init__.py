"""`python -m promo_reconcile` (`make reconcile`): MongoDB's truth against every ClickHouse
table (I4).

An operator and test tool, not a service, so it lives outside every service's `src/` and outside
the image: to compare, it reads each service's database directly (users, promo codes and usages,
orders), which no service ever does. It computes the same facts from
both sides and prints every difference; the exit status is 1 when there is any, 0 otherwise.

Facts (latest state in ClickHouse through FINAL, also for users_analytics, whose latest row per
key is the recomputed value; its all-zero groups equal absent ones):
- users: per user, (email, active, deleted);
- promo_codes: per code, (code, active, discount type);
- orders_analytics: per day, status and currency (count, subtotal, discount, total); per user
  and status (count, total); per promo code and status (count, discount);
- promo_code_usages_analytics: per day and status, per user and status, per promo code and
  status (count, discount, order amount); abandoned ids (never redeemed) are not usages;
- users_analytics: per user, day and currency (confirmed orders, revenue, discounts, active
  redemptions); and GetUserStats' measures (orders placed, rejected and cancelled ones, usages
  created, the active ones' discount, the usages' distinct code ids and texts);
- orders_daily: per day and currency (orders; confirmed, rejected and cancelled ones; revenue
  and discounts of the confirmed ones; distinct buyers);
- usages_daily: per day, currency and code (usages created that day; the active ones, their
  discount and order amount; usages released that day; distinct holders);
- code_orders_daily: orders_daily's facts per day, currency and code (the order's code now);
- orders_hourly, code_orders_hourly: the same per UTC hour of creation, without buyers;
- orders_monthly, usages_monthly, code_orders_monthly: the three daily facts per month (its
  first day), their distinct buyers or holders counted over the month;
- code_dictionary: per code text, id and source (the dimension; the usages), present;
- campaigns: per campaign, its rules (name; each limit, set or not, and its value; the
  budget's currency); per campaign, how many codes belong to it now; per campaign and status,
  the usages (count, discount) and the orders (count, total) that name it.
- order_lines: per order line (order id, line index), its status, campaign, product, quantity,
  unit price and discount share; an order stored before carts is the one line of its subtotal
  holding its discount, as the orders service reads (and publishes) it;
- line_costs_daily, line_costs_monthly: per day (or month), currency, grouping (product, or
  each distinct category of a line), key and the order's campaign, over the lines of the
  orders CONFIRMED now: discount shares, gross, units and distinct orders.

Database names come from USERS_MONGODB_DB_NAME, PROMOCODES_MONGODB_DB_NAME and
ORDERS_MONGODB_DB_NAME (defaults: the services' own defaults) or the matching flags.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import Field
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from promo_libs import analytics_schema as schema
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import ClickHouseSettings, load_settings

Document = dict[str, Any]
Key = tuple[Any, ...]
Facts = dict[str, dict[Key, tuple[Any, ...]]]


class ReconcileSettings(ClickHouseSettings):
    # No default: it names a user that may read the three services' databases.
    mongodb_uri: str = Field(..., min_length=10)
    users_mongodb_db_name: str = "promo_users"
    promocodes_mongodb_db_name: str = "promo_promocodes"
    orders_mongodb_db_name: str = "promo_orders"


@dataclass(frozen=True, slots=True)
class Difference:
    fact: str
    key: Key
    truth: tuple[Any, ...] | None
    analytics: tuple[Any, ...] | None

    def __str__(self) -> str:
        return f"{self.fact} {self.key}: mongodb={self.truth} clickhouse={self.analytics}"


def _day(millis: int) -> str:
    return datetime.fromtimestamp(millis / 1000, UTC).date().isoformat()


def _hour(millis: int) -> str:
    """The UTC hour of a moment as ClickHouse prints a DateTime('UTC')."""
    return datetime.fromtimestamp(millis / 1000, UTC).strftime("%Y-%m-%d %H:00:00")


def _add(facts: dict[Key, tuple[Any, ...]], key: Key, *values: int) -> None:
    current = facts.get(key, (0,) * len(values))
    facts[key] = tuple(a + b for a, b in zip(current, values, strict=True))


def facts_of_order(status: str, total: int, discount: int) -> tuple[int, ...]:
    """One order's share of orders_daily's measures (the distinct buyers are set afterwards)."""
    confirmed = status == "CONFIRMED"
    return (
        1,
        int(confirmed),
        int(status == "REJECTED"),
        int(status == "CANCELLED"),
        total * confirmed,
        discount * confirmed,
        0,
    )


def _limit(value: Any) -> tuple[int, int]:
    """An optional limit as the campaigns table holds it: (set, value)."""
    return (0, 0) if value is None else (1, int(value))


def _campaign_facts(
    facts: Facts,
    campaigns: Iterable[Document],
    codes: Iterable[Document],
    usages: Iterable[Document],
    orders: Iterable[Document],
) -> None:
    for campaign in campaigns:
        rules = campaign["rules"]
        budget = rules.get("budget")
        facts["campaigns"][(campaign["_id"],)] = (
            rules["display_name"],
            *_limit(rules.get("max_uses")),
            *_limit(rules.get("max_uses_per_user")),
            *_limit(budget),
            (rules.get("currency") or "") if budget is not None else "",
        )
    for code in codes:
        if code.get("campaign_id"):
            _add(facts["campaign codes"], (code["campaign_id"],), 1)
    for usage in usages:
        if usage.get("campaign_id") and usage.get("status") in ("ACTIVE", "RELEASED"):
            key = (usage["campaign_id"], usage["status"])
            _add(facts["usages by campaign"], key, 1, int(usage["discount"]))
    for order in orders:
        if order.get("campaign_id"):
            total = int(order["subtotal_minor"]) - int(order.get("discount_minor", 0))
            _add(facts["orders by campaign"], (order["campaign_id"], order["status"]), 1, total)


def truth_facts(
    users: Iterable[Document],
    codes: Iterable[Document],
    usages: Iterable[Document],
    orders: Iterable[Document],
    campaigns: Iterable[Document] = (),
) -> Facts:
    """The facts as MongoDB's documents state them."""
    codes, usages, orders = list(codes), list(usages), list(orders)
    facts: Facts = defaultdict(dict)
    _campaign_facts(facts, campaigns, codes, usages, orders)
    for user in users:
        facts["users"][(user["_id"],)] = (
            user["email"],
            int(bool(user["active"])),
            int(user.get("deleted_at") is not None),
        )
    for code in codes:
        rules = code["rules"]
        facts["promo_codes"][(code["_id"],)] = (
            code["code"],
            int(bool(rules["active"])),
            rules["discount_type"],
        )
    summary = facts["users_analytics"]
    buyers: dict[Key, set[str]] = defaultdict(set)
    for order in orders:
        status, currency = order["status"], order["currency"]
        day, subtotal = _day(order["created_at"]), int(order["subtotal_minor"])
        discount = int(order.get("discount_minor", 0))
        total = subtotal - discount
        _add(facts["orders by day"], (day, status, currency), 1, subtotal, discount, total)
        _add(facts["orders by user"], (order["user_id"], status), 1, total)
        if order.get("promo_code_id"):
            _add(facts["orders by code"], (order["promo_code_id"], status), 1, discount)
        if status == "CONFIRMED":
            _add(summary, (order["user_id"], day, currency), 1, total, discount, 0)
        _add(facts["orders_daily"], (day, currency), *facts_of_order(status, total, discount))
        buyers[(day, currency)].add(order["user_id"])
        if order.get("promo_code_id"):
            by_code = (day, currency, order["promo_code_id"])
            _add(
                facts["code_orders_daily"],
                by_code,
                *facts_of_order(status, total, discount),
            )
            buyers[by_code].add(order["user_id"])
    for key, users_of_day in buyers.items():
        fact = facts["orders_daily" if len(key) == 2 else "code_orders_daily"]
        fact[key] = (*fact[key][:-1], len(users_of_day))
    holders: dict[Key, set[str]] = defaultdict(set)
    daily = facts["usages_daily"]
    for usage in usages:
        status = usage.get("status")
        if status not in ("ACTIVE", "RELEASED"):
            continue  # an abandoned id: a fence, never a redemption
        day = _day(usage["created_at"])
        values = (1, int(usage["discount"]), int(usage["order_amount"]))
        _add(facts["usages by day"], (day, status), *values)
        _add(facts["usages by user"], (usage["user_id"], status), *values)
        _add(facts["usages by code"], (usage["promo_id"], status), *values)
        active = status == "ACTIVE"
        if active:
            _add(summary, (usage["user_id"], day, usage["currency"]), 0, 0, 0, 1)
        created = (day, usage["currency"], usage["promo_id"])
        _add(daily, created, 1, int(active), values[1] * active, values[2] * active, 0, 0)
        holders[created].add(usage["user_id"])
        if not active:
            # A release without a time is dated at the usage's creation, as the promo-code
            # service's replay dates its release event.
            released = (usage.get("release") or {}).get("at") or usage["created_at"]
            _add(daily, (_day(released), *created[1:]), 0, 0, 0, 0, 1, 0)
    for key, users_of_key in holders.items():
        daily[key] = (*daily[key][:-1], len(users_of_key))
    _add_months(facts, buyers, holders)
    _add_code_dictionary(facts)
    _add_query_tables(facts, usages, orders)
    return facts


def _add_query_tables(facts: Facts, usages: list[Document], orders: list[Document]) -> None:
    """The facts of the tables made for one query's reads: GetUserStats' measures of
    users_analytics, the hourly series' rollups."""
    add_user_stats(facts, usages, orders)
    add_hourly(facts, orders)


def add_hourly(facts: Facts, orders: Iterable[Document]) -> None:
    """orders_hourly and code_orders_hourly: orders_daily's facts per UTC hour, no buyers."""
    for order in orders:
        status, currency = order["status"], order["currency"]
        discount = int(order.get("discount_minor", 0))
        total = int(order["subtotal_minor"]) - discount
        counts = facts_of_order(status, total, discount)[:-1]
        hour = _hour(order["created_at"])
        _add(facts["orders_hourly"], (hour, currency), *counts)
        if order.get("promo_code_id"):
            _add(facts["code_orders_hourly"], (hour, currency, order["promo_code_id"]), *counts)


def _lines(order: Document) -> list[Document]:
    """The order's lines; an order stored before carts is one line of its subtotal."""
    return order.get("lines") or [
        {
            "quantity": 1,
            "unit_price": order["subtotal_minor"],
            "discount": order.get("discount_minor", 0),
        }
    ]


def add_user_stats(facts: Facts, usages: Iterable[Document], orders: Iterable[Document]) -> None:
    """GetUserStats' measures of users_analytics per user, day and currency: orders placed,
    rejected and cancelled; usages created (released ones included), the active ones'
    discount; the usages' distinct code ids and texts."""
    stats = facts["users_analytics user stats"]
    codes: dict[Key, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
    for order in orders:
        key = (order["user_id"], _day(order["created_at"]), order["currency"])
        status = order["status"]
        _add(stats, key, 1, int(status == "REJECTED"), int(status == "CANCELLED"), 0, 0)
    for usage in usages:
        status = usage.get("status")
        if status not in ("ACTIVE", "RELEASED"):
            continue  # an abandoned id: a fence, never a redemption
        key = (usage["user_id"], _day(usage["created_at"]), usage["currency"])
        _add(stats, key, 0, 0, 0, 1, int(usage["discount"]) * (status == "ACTIVE"))
        codes[key][0].add(usage["promo_id"])
        codes[key][1].add(usage.get("code", ""))
    for key, counts in stats.items():
        ids, texts = codes.get(key, (set(), set()))
        stats[key] = (*counts, ",".join(sorted(ids)), ",".join(sorted(texts)))


def add_order_lines(facts: Facts, orders: Iterable[Document]) -> None:
    """Every line of every order with its order's current state (fact `order_lines`)."""
    for order in orders:
        for index, line in enumerate(_lines(order)):
            facts["order_lines"][(order["_id"], index)] = (
                order["status"],
                order.get("campaign_id", ""),
                line.get("product_id", ""),
                ",".join(line.get("category_ids") or ()),
                int(line["quantity"]),
                int(line["unit_price"]),
                int(line.get("discount", 0)),
            )


def add_line_costs(facts: Facts, orders: Iterable[Document]) -> None:
    """The lines of the orders CONFIRMED now, per day of the order's creation (or its month),
    currency, grouping (the product, and each distinct category of a line), key and the
    order's campaign: discount shares, gross, units and distinct orders (facts
    `line_costs_daily`, `line_costs_monthly`)."""
    holders: dict[tuple[str, Key], set[str]] = defaultdict(set)
    for order in orders:
        if order["status"] != "CONFIRMED":
            continue
        day = _day(order["created_at"])
        campaign = order.get("campaign_id", "")
        for line in _lines(order):
            quantity, price = int(line["quantity"]), int(line["unit_price"])
            discount = int(line.get("discount", 0))
            groups = [("product", line.get("product_id", ""))]
            groups += [("category", c) for c in dict.fromkeys(line.get("category_ids") or ())]
            for kind, key in groups:
                for fact, first in (
                    ("line_costs_daily", day),
                    ("line_costs_monthly", day[:8] + "01"),
                ):
                    cost: Key = (first, order["currency"], kind, key, campaign)
                    _add(facts[fact], cost, discount, quantity * price, quantity, 0)
                    holders[(fact, cost)].add(order["_id"])
    for (fact, key_of), ids in holders.items():
        facts[fact][key_of] = (*facts[fact][key_of][:-1], len(ids))


def _add_months(
    facts: Facts, buyers: Mapping[Key, set[str]], holders: Mapping[Key, set[str]]
) -> None:
    for fact, people in (
        ("orders_daily", {k: v for k, v in buyers.items() if len(k) == 2}),
        ("code_orders_daily", {k: v for k, v in buyers.items() if len(k) == 3}),
        ("usages_daily", holders),
    ):
        _by_month(facts[fact], people, facts[fact.replace("daily", "monthly")])


def _add_code_dictionary(facts: Facts) -> None:
    """Every code's text names its id (source 0, the dimension), and (source 1) so do its
    usages' texts, which are the code's text at redemption (a code's text never changes)."""
    usages_seen = {key[0] for key in facts["usages by code"]}
    for (code_id,), (text, *_) in list(facts["promo_codes"].items()):
        facts["code_dictionary"][(text, code_id, 0)] = (1,)
        if code_id in usages_seen:
            facts["code_dictionary"][(text, code_id, 1)] = (1,)


def _by_month(
    daily: dict[Key, tuple[Any, ...]], people: Mapping[Key, set[str]], monthly: dict[Key, Any]
) -> None:
    """A daily fact summed per month; its last value, a distinct count, over the month's
    union of the days' sets (a day without anyone, releases only, has no set)."""
    union: dict[Key, set[str]] = defaultdict(set)
    for key, values in daily.items():
        month = (key[0][:8] + "01", *key[1:])
        _add(monthly, month, *values[:-1], 0)
        union[month] |= people.get(key, set())
    for month, everyone in union.items():
        monthly[month] = (*monthly[month][:-1], len(everyone))


def _text(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


_QUERIES: Mapping[str, str] = {
    "users": "SELECT user_id, argMax(email, version), argMax(active, version), "
    f"argMax(deleted, version) FROM {{db}}.{schema.USERS} GROUP BY user_id",
    "promo_codes": "SELECT promo_code_id, argMax(code, version), argMax(active, version), "
    f"argMax(discount_type, version) FROM {{db}}.{schema.PROMO_CODES} GROUP BY promo_code_id",
    "orders by day": "SELECT toString(order_date), status, currency_code, count(), "
    "sum(subtotal_minor), sum(discount_minor), sum(total_minor) "
    f"FROM {{db}}.{schema.ORDERS} FINAL GROUP BY order_date, status, currency_code",
    "orders by user": "SELECT user_id, status, count(), sum(total_minor) "
    f"FROM {{db}}.{schema.ORDERS} FINAL GROUP BY user_id, status",
    "orders by code": "SELECT promo_code_id, status, count(), sum(discount_minor) "
    f"FROM {{db}}.{schema.ORDERS} FINAL WHERE promo_code_id != '' "
    "GROUP BY promo_code_id, status",
    "usages by day": "SELECT toString(usage_date), status, count(), sum(discount_minor), "
    f"sum(order_amount_minor) FROM {{db}}.{schema.USAGES} FINAL "
    "GROUP BY usage_date, status",
    "usages by user": "SELECT user_id, status, count(), sum(discount_minor), "
    f"sum(order_amount_minor) FROM {{db}}.{schema.USAGES} FINAL "
    "GROUP BY user_id, status",
    "usages by code": "SELECT promo_code_id, status, count(), sum(discount_minor), "
    f"sum(order_amount_minor) FROM {{db}}.{schema.USAGES} FINAL "
    "GROUP BY promo_code_id, status",
    "users_analytics": "SELECT user_id, toString(day), currency_code, sum(orders) AS o, "
    "sum(revenue_minor) AS r, sum(discounts_minor) AS d, sum(redemptions) AS u "
    f"FROM {{db}}.{schema.USERS_ANALYTICS} FINAL GROUP BY user_id, day, currency_code "
    "HAVING o != 0 OR r != 0 OR d != 0 OR u != 0",
    "users_analytics user stats": "SELECT user_id, toString(day), currency_code, placed_orders,"
    " rejected_orders, cancelled_orders, usages, active_discount_minor,"
    " arrayStringConcat(code_ids, ','), arrayStringConcat(code_texts, ',')"
    f" FROM {{db}}.{schema.USERS_ANALYTICS} FINAL WHERE placed_orders != 0 OR usages != 0",
    "orders_daily": "SELECT toString(day), currency_code, orders, confirmed, rejected,"
    " cancelled, revenue_minor, discounts_minor, toInt64(length(buyers))"
    f" FROM {{db}}.{schema.ORDERS_DAILY} FINAL",
    "code_orders_daily": "SELECT toString(day), currency_code, promo_code_id, orders, confirmed,"
    " rejected, cancelled, revenue_minor, discounts_minor, toInt64(length(buyers))"
    f" FROM {{db}}.{schema.CODE_ORDERS_DAILY} FINAL WHERE orders > 0",
    "orders_hourly": "SELECT toString(hour), currency_code, orders, confirmed, rejected,"
    " cancelled, revenue_minor, discounts_minor"
    f" FROM {{db}}.{schema.ORDERS_HOURLY} FINAL",
    "code_orders_hourly": "SELECT toString(hour), currency_code, promo_code_id, orders,"
    " confirmed, rejected, cancelled, revenue_minor, discounts_minor"
    f" FROM {{db}}.{schema.CODE_ORDERS_HOURLY} FINAL WHERE orders > 0",
    "usages_daily": "SELECT toString(day), currency_code, promo_code_id, redemptions, active,"
    " active_discount_minor, active_order_amount_minor, releases, toInt64(length(holders))"
    f" FROM {{db}}.{schema.USAGES_DAILY} FINAL",
    "orders_monthly": "SELECT toString(month), currency_code, orders, confirmed, rejected,"
    " cancelled, revenue_minor, discounts_minor, toInt64(length(buyers))"
    f" FROM {{db}}.{schema.ORDERS_MONTHLY} FINAL",
    "code_orders_monthly": "SELECT toString(month), currency_code, promo_code_id, orders,"
    " confirmed, rejected, cancelled, revenue_minor, discounts_minor, toInt64(length(buyers))"
    f" FROM {{db}}.{schema.CODE_ORDERS_MONTHLY} FINAL WHERE orders > 0",
    "usages_monthly": "SELECT toString(month), currency_code, promo_code_id, redemptions, active,"
    " active_discount_minor, active_order_amount_minor, releases, toInt64(length(holders))"
    f" FROM {{db}}.{schema.USAGES_MONTHLY} FINAL",
    # The dimension's and the usages' facts (orders name codes by the text their client sent).
    "code_dictionary": "SELECT code, promo_code_id, toInt64(source), toInt64(1)"
    f" FROM {{db}}.{schema.CODE_DICTIONARY} WHERE source < 2"
    " GROUP BY code, promo_code_id, source",
    "campaigns": "SELECT campaign_id, argMax(display_name, version),"
    " toInt64(argMax(has_max_uses, version)), argMax(max_uses, version),"
    " toInt64(argMax(has_max_uses_per_user, version)), argMax(max_uses_per_user, version),"
    " toInt64(argMax(has_budget, version)), argMax(budget_minor, version),"
    " if(argMax(has_budget, version) = 1, argMax(currency_code, version), '')"
    f" FROM {{db}}.{schema.CAMPAIGNS} GROUP BY campaign_id",
    "campaign codes": "SELECT campaign_id, toInt64(count())"
    f" FROM {{db}}.{schema.PROMO_CODES} FINAL WHERE campaign_id != '' GROUP BY campaign_id",
    "usages by campaign": "SELECT campaign_id, status, toInt64(count()), sum(discount_minor)"
    f" FROM {{db}}.{schema.USAGES} FINAL WHERE campaign_id != '' GROUP BY campaign_id, status",
    "orders by campaign": "SELECT campaign_id, status, toInt64(count()), sum(total_minor)"
    f" FROM {{db}}.{schema.ORDERS} FINAL WHERE campaign_id != '' GROUP BY campaign_id, status",
    "order_lines": "SELECT order_id, toInt64(line_index), status, campaign_id, product_id,"
    " arrayStringConcat(category_ids, ','), quantity, unit_price_minor, discount_minor"
    f" FROM {{db}}.{schema.ORDER_LINES} FINAL",
    # Keys without a confirmed line hold zeros: every day and grouping key has a row of no
    # campaign (''), and a campaign's row stays when its lines are no longer confirmed.
    "line_costs_daily": "SELECT toString(day), currency_code, kind, cost_key, campaign_id,"
    " discount_minor, gross_minor, units, orders"
    f" FROM {{db}}.{schema.LINE_COSTS_DAILY} FINAL WHERE orders > 0",
    "line_costs_monthly": "SELECT toString(month), currency_code, kind, cost_key, campaign_id,"
    " discount_minor, gross_minor, units, orders"
    f" FROM {{db}}.{schema.LINE_COSTS_MONTHLY} FINAL WHERE orders > 0",
}
# How many leading columns of each query form the key.
_KEY_WIDTH = {
    "users": 1,
    "promo_codes": 1,
    "orders by day": 3,
    "orders by user": 2,
    "orders by code": 2,
    "usages by day": 2,
    "usages by user": 2,
    "usages by code": 2,
    "users_analytics": 3,
    "users_analytics user stats": 3,
    "orders_daily": 2,
    "usages_daily": 3,
    "code_orders_daily": 3,
    "orders_hourly": 2,
    "code_orders_hourly": 3,
    "orders_monthly": 2,
    "usages_monthly": 3,
    "code_orders_monthly": 3,
    "code_dictionary": 3,
    "campaigns": 1,
    "campaign codes": 1,
    "usages by campaign": 2,
    "orders by campaign": 2,
    "order_lines": 2,
    "line_costs_daily": 5,
    "line_costs_monthly": 5,
}


async def analytics_facts(clickhouse: ClickHouse) -> Facts:
    """The same facts as ClickHouse's tables state them."""
    client = clickhouse.connect()
    facts: Facts = defaultdict(dict)
    for fact, sql in _QUERIES.items():
        width = _KEY_WIDTH[fact]
        for row in await client.fetch(sql.format(db=clickhouse.database)):
            values = [_text(value) for value in row.values()]
            facts[fact][tuple(values[:width])] = tuple(
                int(v) if isinstance(v, int) else v for v in values[width:]
            )
    return facts


def differences(truth: Facts, analytics: Facts) -> list[Difference]:
    found = []
    for fact in _QUERIES:
        ours, theirs = truth.get(fact, {}), analytics.get(fact, {})
        for key in sorted(ours.keys() | theirs.keys(), key=repr):
            if ours.get(key) != theirs.get(key):
                found.append(Difference(fact, key, ours.get(key), theirs.get(key)))
    return found


async def _documents(db: AsyncDatabase[Document], collection: str) -> list[Document]:
    return [document async for document in db[collection].find({}, {"outbox": 0})]


async def reconcile(settings: ReconcileSettings) -> tuple[list[Difference], dict[str, int]]:
    """The differences, and how many keys each fact has on the MongoDB side."""
    mongo: AsyncMongoClient[Document] = AsyncMongoClient(settings.mongodb_uri, tz_aware=True)
    clickhouse = ClickHouse(settings)
    try:
        users_db = mongo[settings.users_mongodb_db_name]
        codes_db = mongo[settings.promocodes_mongodb_db_name]
        orders_db = mongo[settings.orders_mongodb_db_name]
        orders = await _documents(orders_db, "orders")
        truth = truth_facts(
            await _documents(users_db, "users"),
            await _documents(codes_db, "promo_codes"),
            await _documents(codes_db, "promo_code_usages"),
            orders,
            await _documents(codes_db, "campaigns"),
        )
        add_order_lines(truth, orders)
        add_line_costs(truth, orders)
        analytics = await analytics_facts(clickhouse)
    finally:
        await clickhouse.close()
        await mongo.close()
    return differences(truth, analytics), {fact: len(truth.get(fact, {})) for fact in _QUERIES}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m promo_reconcile", description=__doc__)
    parser.add_argument("--users-db", help="the users service's database")
    parser.add_argument("--promocodes-db", help="the promo-code service's database")
    parser.add_argument("--orders-db", help="the orders service's database")
    parser.add_argument("--limit", type=int, default=50, help="differences to print at most")
    args = parser.parse_args(argv)
    settings = load_settings(ReconcileSettings)
    overrides = {
        "users_mongodb_db_name": args.users_db,
        "promocodes_mongodb_db_name": args.promocodes_db,
        "orders_mongodb_db_name": args.orders_db,
    }
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v})
    found, sizes = asyncio.run(reconcile(settings))
    for difference in found[: args.limit]:
        print(difference)
    if len(found) > args.limit:
        print(f"... and {len(found) - args.limit} more")
    checked = ", ".join(f"{fact}: {n}" for fact, n in sizes.items())
    print(f"reconcile: {len(found)} differences ({checked})", file=sys.stderr)
    return 1 if found else 0
