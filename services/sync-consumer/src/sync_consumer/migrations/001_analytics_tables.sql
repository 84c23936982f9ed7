-- Analytics tables of the original spec, fed by sync-consumer from the event streams.
-- Runs on ClickHouse 18.16 (local) and current ClickHouse: no DateTime64, no LowCardinality,
-- no toStartOfInterval. ${database} is replaced by CLICKHOUSE_DATABASE.
--
-- Every event table carries its source stream position (src_stream, src_ms, src_seq: the Redis
-- entry id) for the exactly-once guard: a batch goes in as one INSERT, and after a restart the
-- consumer skips entries at or below the table's highest position. ReplacingMergeTree keyed by
-- the entity id keeps its latest version; queries that need the exact state use FINAL or argMax.
-- Partitions use the entity's own date (creation), so every version of an entity shares one
-- partition and replacing works.

CREATE TABLE IF NOT EXISTS ${database}.users (
    user_id String,
    version UInt64,
    email String,
    display_name String,
    active UInt8,
    deleted UInt8,
    create_time DateTime('UTC'),
    delete_time DateTime('UTC'),
    event_id String,
    event_type String,
    event_time DateTime('UTC'),
    src_stream String,
    src_ms UInt64,
    src_seq UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY user_id;

CREATE TABLE IF NOT EXISTS ${database}.promo_codes (
    promo_code_id String,
    version UInt64,
    code String,
    discount_type String,
    basis_points Int32,
    fixed_amount_minor Int64,
    max_discount_minor Int64,
    currency_code String,
    max_uses Int64,
    max_uses_per_user Int64,
    budget_minor Int64,
    batch_id String,
    active UInt8,
    valid_from DateTime('UTC'),
    valid_until DateTime('UTC'),
    create_time DateTime('UTC'),
    event_id String,
    event_type String,
    event_time DateTime('UTC'),
    src_stream String,
    src_ms UInt64,
    src_seq UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY promo_code_id;

CREATE TABLE IF NOT EXISTS ${database}.promo_code_usages_analytics (
    usage_id String,
    version UInt64,
    usage_date Date,
    promo_code_id String,
    code String,
    discount_type String,
    user_id String,
    user_email String,
    order_id String,
    currency_code String,
    order_amount_minor Int64,
    discount_minor Int64,
    status String,
    release_reason String,
    create_time DateTime('UTC'),
    release_time DateTime('UTC'),
    event_id String,
    event_type String,
    event_time DateTime('UTC'),
    src_stream String,
    src_ms UInt64,
    src_seq UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(usage_date)
ORDER BY usage_id;

CREATE TABLE IF NOT EXISTS ${database}.orders_analytics (
    order_id String,
    version UInt64,
    order_date Date,
    user_id String,
    user_email String,
    currency_code String,
    subtotal_minor Int64,
    discount_minor Int64,
    total_minor Int64,
    promo_code String,
    promo_code_id String,
    promo_code_usage_id String,
    discount_type String,
    status String,
    rejection_reason String,
    cancellation_reason String,
    create_time DateTime('UTC'),
    update_time DateTime('UTC'),
    confirm_time DateTime('UTC'),
    cancel_time DateTime('UTC'),
    event_id String,
    event_type String,
    event_time DateTime('UTC'),
    src_stream String,
    src_ms UInt64,
    src_seq UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(order_date)
ORDER BY order_id;

-- Per user, day (of the order or usage) and currency. Fed only by the materialized views below,
-- which run inside the guarded INSERT of the event table: a replayed batch is skipped by the
-- position guard before it reaches the event table, so it can never be summed twice here.
-- A confirmation adds the order, its cancellation subtracts it again; a redemption adds one,
-- its release subtracts it. Query with sum(...) GROUP BY: parts are summed only at merges.
CREATE TABLE IF NOT EXISTS ${database}.users_analytics (
    user_id String,
    day Date,
    currency_code String,
    orders Int64,
    revenue_minor Int64,
    discounts_minor Int64,
    redemptions Int64
) ENGINE = SummingMergeTree((orders, revenue_minor, discounts_minor, redemptions))
PARTITION BY toYYYYMM(day)
ORDER BY (user_id, day, currency_code);

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.users_analytics_from_orders
TO ${database}.users_analytics
AS SELECT
    user_id,
    order_date AS day,
    currency_code,
    toInt64(if(status = 'CONFIRMED', 1, -1)) AS orders,
    toInt64(if(status = 'CONFIRMED', total_minor, -total_minor)) AS revenue_minor,
    toInt64(if(status = 'CONFIRMED', discount_minor, -discount_minor)) AS discounts_minor,
    toInt64(0) AS redemptions
FROM ${database}.orders_analytics
WHERE event_type IN ('promo.v1.OrderConfirmed', 'promo.v1.OrderCancelled');

CREATE MATERIALIZED VIEW IF NOT EXISTS ${database}.users_analytics_from_usages
TO ${database}.users_analytics
AS SELECT
    user_id,
    usage_date AS day,
    currency_code,
    toInt64(0) AS orders,
    toInt64(0) AS revenue_minor,
    toInt64(0) AS discounts_minor,
    toInt64(if(event_type = 'promo.v1.PromoCodeRedeemed', 1, -1)) AS redemptions
FROM ${database}.promo_code_usages_analytics
WHERE event_type IN ('promo.v1.PromoCodeRedeemed', 'promo.v1.PromoCodeReleased');
