"""The analytics schema in ClickHouse, owned once: table names, entity keys and migrations.

Two services meet in these tables and neither imports the other: sync-consumer writes them (and
its `migrate` command, run as the migrations user, applies the migrations), the analytics service
reads them; reconcile and the benchmarks use the same names. A table's columns are those its
migrations create (`migrations/NNN_name.sql`, `${database}` replaced by CLICKHOUSE_DATABASE and
each `${<fragment>}` by its shared column list in MIGRATION_FRAGMENTS).

- Event tables, one row per (entity, version), ReplacingMergeTree keyed by the entity id (for
  order_lines the entity is one line of an order, every line written at every order version);
  readers take the latest version per entity (FINAL or argMax by `version`).
- Derived tables, recomputed from the latest state of the event tables (never fed deltas),
  ReplacingMergeTree by a state version; readers take the latest row per key (FINAL).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiochclient import ChClient

from promo_libs.clickhouse.migrations import (
    SqlMigration,
    apply_migrations,
    load_migrations,
    pending_versions,
)

USERS = "users"
PROMO_CODES = "promo_codes"
# Latest rules and limits per campaign (issue 14); its codes, usages and orders carry campaign_id.
CAMPAIGNS = "campaigns"
USAGES = "promo_code_usages_analytics"
ORDERS = "orders_analytics"
# One row per order line and order version, with its order's state (issue 14).
ORDER_LINES = "order_lines"
USERS_ANALYTICS = "users_analytics"
# Per UTC day of creation and currency: the orders' latest state (a rollup; issue 11).
ORDERS_DAILY = "orders_daily"
# Per UTC day, currency and code: usages created and released that day (a rollup; issue 11).
USAGES_DAILY = "usages_daily"
# Per UTC day of creation, currency and code: orders_daily's measures for one code (issue 11).
CODE_ORDERS_DAILY = "code_orders_daily"
# The three daily rollups summed per month (first day of the month), from their daily rows:
# long ranges read whole months there, whole days of the partial months from the daily ones.
ORDERS_MONTHLY = "orders_monthly"
# Per UTC hour of creation and currency (and code): the orders' latest state, for hourly
# series (which report no distinct users, so these hold no buyers).
ORDERS_HOURLY = "orders_hourly"
CODE_ORDERS_HOURLY = "code_orders_hourly"
USAGES_MONTHLY = "usages_monthly"
CODE_ORDERS_MONTHLY = "code_orders_monthly"
# Per UTC day of creation, currency, grouping (product or category), its key and campaign: the
# confirmed lines' discount, gross, units and orders by latest state (ListDiscountCosts' rollup;
# issues 11 and 14), and its monthly sums.
LINE_COSTS_DAILY = "line_costs_daily"
LINE_COSTS_MONTHLY = "line_costs_monthly"

EVENT_TABLES = (USERS, PROMO_CODES, CAMPAIGNS, USAGES, ORDERS, ORDER_LINES)
# Code text -> ids that ever carried it, per source (dimension, usages, orders): GetPromoCodeStats
# by code text reads one primary-key range here instead of scanning the event tables' texts.
CODE_DICTIONARY = "code_dictionary"
MONTHLY_TABLES = (ORDERS_MONTHLY, USAGES_MONTHLY, CODE_ORDERS_MONTHLY, LINE_COSTS_MONTHLY)
# In refresh order: a monthly rollup is computed from its daily one, so it comes after it.
DERIVED_TABLES = (
    USERS_ANALYTICS,
    ORDERS_DAILY,
    USAGES_DAILY,
    CODE_ORDERS_DAILY,
    ORDERS_MONTHLY,
    USAGES_MONTHLY,
    CODE_ORDERS_MONTHLY,
    CODE_DICTIONARY,
    LINE_COSTS_DAILY,
    LINE_COSTS_MONTHLY,
    ORDERS_HOURLY,
    CODE_ORDERS_HOURLY,
)
TABLES = (*EVENT_TABLES, *DERIVED_TABLES)
# The entity key of each event table: the latest version per value of it is the entity's state.
ENTITY_KEYS = {
    USERS: "user_id",
    PROMO_CODES: "promo_code_id",
    CAMPAIGNS: "campaign_id",
    USAGES: "usage_id",
    ORDERS: "order_id",
    # A line, not its order: the guard then stores each line's version once, also when an
    # INSERT committed the block with some of an order's lines and not the one with the rest.
    ORDER_LINES: "line_id",
}

MIGRATIONS_FOLDER = Path(str(resources.files(__package__) / "migrations"))

# Column lists several tables share, written once: a migration names one as `${<key>}` (inside
# a CREATE TABLE's column list, indented by four spaces like the columns around it).
_INDENT = ",\n    "
MIGRATION_FRAGMENTS = {
    # Every event table ends with its event's identity and its source stream position.
    "event_source_columns": _INDENT.join(
        (
            "event_id String",
            "event_type String",
            "event_time DateTime('UTC')",
            "src_stream String",
            "src_ms UInt64",
            "src_seq UInt64",
        )
    ),
    # The order figures of orders_daily, orders_monthly and their per-code twins.
    "order_totals_columns": _INDENT.join(
        (
            "orders Int64",
            "confirmed Int64",
            "rejected Int64",
            "cancelled Int64",
            "revenue_minor Int64",
            "discounts_minor Int64",
            "buyers Array(String)",
            "state_version UInt64",
        )
    ),
    # The order figures of orders_hourly and code_orders_hourly: order_totals_columns' sums.
    "order_count_columns": _INDENT.join(
        (
            "orders Int64",
            "confirmed Int64",
            "rejected Int64",
            "cancelled Int64",
            "revenue_minor Int64",
            "discounts_minor Int64",
            "state_version UInt64",
        )
    ),
    # The measures of line_costs_daily and line_costs_monthly (per grouping key and campaign).
    "line_cost_columns": _INDENT.join(
        (
            "discount_minor Int64",
            "gross_minor Int64",
            "units Int64",
            "orders Int64",
            "state_version UInt64",
        )
    ),
    # The usage figures of usages_daily and usages_monthly.
    "usage_totals_columns": _INDENT.join(
        (
            "redemptions Int64",
            "active Int64",
            "active_discount_minor Int64",
            "active_order_amount_minor Int64",
            "releases Int64",
            "holders Array(String)",
            "code_texts Array(String)",
            "state_version UInt64",
        )
    ),
}


def migrations() -> list[SqlMigration]:
    return load_migrations(MIGRATIONS_FOLDER, MIGRATION_FRAGMENTS)


async def migrate(client: ChClient, database: str) -> list[int]:
    """Creates the database and applies the migrations it lacks; returns their versions."""
    return await apply_migrations(client, database, migrations())


async def require_current(client: ChClient, database: str) -> None:
    """Refuses (RuntimeError) a database some migration has not reached: the serving
    consumer writes without DDL rights, so the schema is the migrations user's job."""
    missing = await pending_versions(client, database, migrations())
    if missing:
        raise RuntimeError(
            f"ClickHouse database {database} lacks migrations {missing}: run "
            "`python -m sync_consumer migrate` as the migrations user first"
        )
