-- orders_daily: a rollup of orders_analytics per UTC day of creation and currency, by latest
-- state (issue 11: GetOverview and GetOrdersTimeSeries read whole days here, raw rows only for
-- the partial days at the edges of a range). Derived like users_analytics (migration 002): a
-- row is an absolute value with the state version of its key, recomputed by sync-consumer for
-- every day a batch touched; readers take the latest row per key (FINAL).
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and
-- recomputes it from orders_analytics again.

DROP TABLE IF EXISTS ${database}.orders_daily;

CREATE TABLE IF NOT EXISTS ${database}.orders_daily (
    day Date,
    currency_code String,
    ${order_totals_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, currency_code);

-- The statement sync_consumer.adapters.derived.refresh_orders_daily builds for every day (a
-- unit test keeps the two equal).
INSERT INTO ${database}.orders_daily (day, currency_code, orders, confirmed, rejected, cancelled, revenue_minor, discounts_minor, buyers, state_version) SELECT d, cur, toInt64(count()), toInt64(countIf(state = 'CONFIRMED')), toInt64(countIf(state = 'REJECTED')), toInt64(countIf(state = 'CANCELLED')), toInt64(sumIf(total, state = 'CONFIRMED')), toInt64(sumIf(off, state = 'CONFIRMED')), arraySort(groupUniqArray(buyer)), toUInt64(sum(v)) FROM (SELECT order_id, any(order_date) AS d, any(currency_code) AS cur, any(user_id) AS buyer, argMax(status, version) AS state, argMax(total_minor, version) AS total, argMax(discount_minor, version) AS off, max(version) + 1 AS v FROM ${database}.orders_analytics WHERE 1 GROUP BY order_id) GROUP BY d, cur;
