-- The event tables of the original spec, written by sync-consumer from the event streams.
-- Runs on ClickHouse 18.16 (local) and current ClickHouse: no DateTime64, no LowCardinality,
-- no toStartOfInterval. ${database} is replaced by CLICKHOUSE_DATABASE.
--
-- Every event table carries its source stream position (src_stream, src_ms, src_seq: the Redis
-- entry id). ReplacingMergeTree keyed by the entity id keeps its latest version; queries that
-- need the exact state use FINAL or argMax. Partitions use the entity's own date (creation), so
-- every version of an entity shares one partition and replacing works.
--
-- users_analytics is created by migration 002. This file once also created it as a
-- SummingMergeTree fed by two materialized views, which 002 drops and replaces; a database that
-- applied that older text is brought by 002 to the same tables as a fresh one.

CREATE TABLE IF NOT EXISTS ${database}.users (
    user_id String,
    version UInt64,
    email String,
    display_name String,
    active UInt8,
    deleted UInt8,
    create_time DateTime('UTC'),
    delete_time DateTime('UTC'),
    ${event_source_columns}
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
    ${event_source_columns}
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
    ${event_source_columns}
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
    ${event_source_columns}
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(order_date)
ORDER BY order_id;
