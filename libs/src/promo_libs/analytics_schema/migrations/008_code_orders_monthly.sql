-- code_orders_monthly: code_orders_daily summed per month (its first day), currency and code
-- (issue 11: GetPromoCodeStats' order figures, ListTopPromoCodes' confirmed orders and revenue
-- and a code's monthly series read whole months here, whole days of the partial months from
-- code_orders_daily, raw rows only for the partial days at the edges of a range). Derived from
-- code_orders_daily's latest rows (FINAL), never fed deltas: a row is the sum of its days' rows
-- (distinct arrays merged) with the sum of their state versions as its own, recomputed by sync-
-- consumer after the days a batch touched (adapters/derived.py says why that is exact).
-- Partitioned by year: a month is one small row per key.
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and recomputes
-- it from code_orders_daily again (applied after the migration that fills code_orders_daily).

DROP TABLE IF EXISTS ${database}.code_orders_monthly;

CREATE TABLE IF NOT EXISTS ${database}.code_orders_monthly (
    month Date,
    currency_code String,
    promo_code_id String,
    ${order_totals_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYear(month)
ORDER BY (month, currency_code, promo_code_id);

-- The statement sync_consumer.adapters.derived.refresh_code_orders_monthly builds for every
-- month (a unit test keeps the two equal).
INSERT INTO ${database}.code_orders_monthly (month, currency_code, promo_code_id, orders, confirmed, rejected, cancelled, revenue_minor, discounts_minor, buyers, state_version) SELECT toStartOfMonth(day) AS m, currency_code, promo_code_id, toInt64(sum(orders)), toInt64(sum(confirmed)), toInt64(sum(rejected)), toInt64(sum(cancelled)), toInt64(sum(revenue_minor)), toInt64(sum(discounts_minor)), arraySort(groupUniqArrayArray(buyers)), toUInt64(sum(state_version)) FROM ${database}.code_orders_daily FINAL WHERE 1 GROUP BY m, currency_code, promo_code_id;
