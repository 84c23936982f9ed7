-- orders_daily with an index granule per row (issue 11). A row holds every buyer of its day (about
-- 50,000 at 10M orders on the benchmark's data), and the table has one row per day and
-- currency, so one 8192-row granule held every day: a one-day GetOverview read the buyer arrays
-- of all of them (17-25 ms per statement at 10M; 9-11 ms with one row per granule). The index
-- stays small (a mark per day and currency). Made again like migration 003; orders_monthly,
-- computed from these rows, is unchanged (migration 018 says why).
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
ORDER BY (day, currency_code)
SETTINGS index_granularity = 1;

-- The statement sync_consumer.adapters.derived.refresh_orders_daily builds for every key (a
-- unit test keeps the two equal).
INSERT INTO ${database}.orders_daily (day, currency_code, orders, confirmed, rejected, cancelled, revenue_minor, discounts_minor, buyers, state_version) SELECT d, cur, toInt64(count()), toInt64(countIf(state = 'CONFIRMED')), toInt64(countIf(state = 'REJECTED')), toInt64(countIf(state = 'CANCELLED')), toInt64(sumIf(total, state = 'CONFIRMED')), toInt64(sumIf(off, state = 'CONFIRMED')), arraySort(groupUniqArray(buyer)), toUInt64(sum(v)) FROM (SELECT order_id, any(order_date) AS d, any(currency_code) AS cur, any(user_id) AS buyer, argMax(status, version) AS state, argMax(total_minor, version) AS total, argMax(discount_minor, version) AS off, max(version) + 1 AS v FROM ${database}.orders_analytics WHERE 1 GROUP BY order_id) GROUP BY d, cur
