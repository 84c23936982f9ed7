-- orders_monthly: orders_daily summed per month (its first day) and currency (issue 11:
-- GetOverview's order figures and GetOrdersTimeSeries by month read whole months here, whole
-- days of the partial months from orders_daily, raw rows only for the partial days at the edges
-- of a range). Derived from orders_daily's latest rows (FINAL), never fed deltas: a row is the
-- sum of its days' rows (distinct arrays merged) with the sum of their state versions as its
-- own, recomputed by sync-consumer after the days a batch touched (adapters/derived.py says why
-- that is exact). Partitioned by year: a month is one small row per key.
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and recomputes
-- it from orders_daily again (applied after the migration that fills orders_daily).

DROP TABLE IF EXISTS ${database}.orders_monthly;

CREATE TABLE IF NOT EXISTS ${database}.orders_monthly (
    month Date,
    currency_code String,
    ${order_totals_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYear(month)
ORDER BY (month, currency_code);

-- The statement sync_consumer.adapters.derived.refresh_orders_monthly builds for every month (a
-- unit test keeps the two equal).
INSERT INTO ${database}.orders_monthly (month, currency_code, orders, confirmed, rejected, cancelled, revenue_minor, discounts_minor, buyers, state_version) SELECT toStartOfMonth(day) AS m, currency_code, toInt64(sum(orders)), toInt64(sum(confirmed)), toInt64(sum(rejected)), toInt64(sum(cancelled)), toInt64(sum(revenue_minor)), toInt64(sum(discounts_minor)), arraySort(groupUniqArrayArray(buyers)), toUInt64(sum(state_version)) FROM ${database}.orders_daily FINAL WHERE 1 GROUP BY m, currency_code;
