-- orders_hourly: orders_daily's sums per UTC hour of creation and currency, by latest state
-- (issue 11: an hourly GetOrdersTimeSeries reads whole hours here and raw rows only for the
-- partial hours at the edges of its range; before, it read the raw orders of every partition
-- in its range). No buyers: a series point reports no distinct users. Derived like
-- users_analytics (migration 002; adapters/derived.py says why it stays exact).
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and
-- recomputes it from orders_analytics again.

DROP TABLE IF EXISTS ${database}.orders_hourly;

CREATE TABLE IF NOT EXISTS ${database}.orders_hourly (
    hour DateTime('UTC'),
    currency_code String,
    ${order_count_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, currency_code);

-- The statement sync_consumer.adapters.derived.refresh_orders_hourly builds for every key (a
-- unit test keeps the two equal).
INSERT INTO ${database}.orders_hourly (hour, currency_code, orders, confirmed, rejected, cancelled, revenue_minor, discounts_minor, state_version) SELECT d, cur, toInt64(count()), toInt64(countIf(state = 'CONFIRMED')), toInt64(countIf(state = 'REJECTED')), toInt64(countIf(state = 'CANCELLED')), toInt64(sumIf(total, state = 'CONFIRMED')), toInt64(sumIf(off, state = 'CONFIRMED')), toUInt64(sum(v)) FROM (SELECT order_id, toStartOfHour(any(create_time)) AS d, any(currency_code) AS cur, any(user_id) AS buyer, argMax(status, version) AS state, argMax(total_minor, version) AS total, argMax(discount_minor, version) AS off, max(version) + 1 AS v FROM ${database}.orders_analytics WHERE 1 GROUP BY order_id) GROUP BY d, cur
