-- line_costs_monthly: line_costs_daily summed per month (its first day), currency, grouping kind,
-- key and campaign (issues 11 and 14: ListDiscountCosts reads whole months here, whole days of
-- the partial months from line_costs_daily, raw order_lines only for the partial days at the
-- edges of a range). Derived from line_costs_daily's latest rows (FINAL), never fed deltas: a
-- row is the sum of its days' rows with the sum of their state versions as its own, recomputed
-- by sync-consumer after the days a batch touched (adapters/derived.py says why that is exact).
-- Partitioned by year: a month is one small row per key.
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and recomputes
-- it from line_costs_daily again (applied after the migration that fills line_costs_daily).

DROP TABLE IF EXISTS ${database}.line_costs_monthly;

CREATE TABLE IF NOT EXISTS ${database}.line_costs_monthly (
    month Date,
    currency_code String,
    kind String,
    cost_key String,
    campaign_id String,
    ${line_cost_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYear(month)
ORDER BY (kind, month, campaign_id, currency_code, cost_key);

-- The statement sync_consumer.adapters.derived.refresh_line_costs_monthly builds for every
-- month (a unit test keeps the two equal).
INSERT INTO ${database}.line_costs_monthly (month, currency_code, kind, cost_key, campaign_id, discount_minor, gross_minor, units, orders, state_version) SELECT toStartOfMonth(day) AS m, currency_code, kind, cost_key, campaign_id, toInt64(sum(discount_minor)), toInt64(sum(gross_minor)), toInt64(sum(units)), toInt64(sum(orders)), toUInt64(sum(state_version)) FROM ${database}.line_costs_daily FINAL WHERE 1 GROUP BY m, currency_code, kind, cost_key, campaign_id;
