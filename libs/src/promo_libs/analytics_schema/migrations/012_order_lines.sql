-- order_lines: one row per order line and order version, denormalized with what the discount
-- cost queries read (issue 14): the line (sku, product, categories, quantity, unit price, its
-- share of the discount) and its order's currency, user, code, campaign, creation time and
-- status at that version. Written by sync-consumer from every order event: an event re-emits
-- all lines of the order at the event's version, so an order's latest state is complete in
-- its latest version, and a status change (confirmed, cancelled) reaches every line.
--
-- 010 and 011 are the campaign migrations of another branch; the migrator applies whatever
-- versions are missing, in version order, and requires no contiguity.
--
-- The same exactly-once design as orders_analytics (sync-consumer README): ReplacingMergeTree
-- by `version`, keyed by `line_id` (order id, '#', line index), which is also the version
-- guard's entity key: the guard stores each (line, version) once, so lines of one order cut
-- between two committed blocks of an INSERT are completed by the retry, not skipped. Every
-- column but status, discount_minor, promo_code_id and campaign_id is fixed per line, so
-- readers may filter on them inside the de-duplication (FINAL or argMax by version).
-- Partitioned like orders_analytics by the order's creation month: every version of a line
-- shares one partition, and replacing works.

CREATE TABLE IF NOT EXISTS ${database}.order_lines (
    line_id String,
    version UInt64,
    order_id String,
    line_index UInt32,
    order_date Date,
    sku String,
    product_id String,
    category_ids Array(String),
    quantity Int64,
    unit_price_minor Int64,
    discount_minor Int64,
    currency_code String,
    user_id String,
    promo_code_id String,
    campaign_id String,
    status String,
    create_time DateTime('UTC'),
    ${event_source_columns}
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(order_date)
ORDER BY line_id;
