-- usages_monthly: usages_daily summed per month (its first day), currency and code (issue 11:
-- usage figures of GetOverview, GetPromoCodeStats and ListTopPromoCodes, and a code's all-time
-- consumption read whole months here, whole days of the partial months from usages_daily, raw
-- rows only for the partial days at the edges of a range). Derived from usages_daily's latest
-- rows (FINAL), never fed deltas: a row is the sum of its days' rows (distinct arrays merged)
-- with the sum of their state versions as its own, recomputed by sync-consumer after the days a
-- batch touched (adapters/derived.py says why that is exact). Partitioned by year: a month is
-- one small row per key.
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and recomputes
-- it from usages_daily again (applied after the migration that fills usages_daily).

DROP TABLE IF EXISTS ${database}.usages_monthly;

CREATE TABLE IF NOT EXISTS ${database}.usages_monthly (
    month Date,
    currency_code String,
    promo_code_id String,
    ${usage_totals_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYear(month)
ORDER BY (month, currency_code, promo_code_id);

-- The statement sync_consumer.adapters.derived.refresh_usages_monthly builds for every month (a
-- unit test keeps the two equal).
INSERT INTO ${database}.usages_monthly (month, currency_code, promo_code_id, redemptions, active, active_discount_minor, active_order_amount_minor, releases, holders, code_texts, state_version) SELECT toStartOfMonth(day) AS m, currency_code, promo_code_id, toInt64(sum(redemptions)), toInt64(sum(active)), toInt64(sum(active_discount_minor)), toInt64(sum(active_order_amount_minor)), toInt64(sum(releases)), arraySort(groupUniqArrayArray(holders)), arraySort(groupUniqArrayArray(code_texts)), toUInt64(sum(state_version)) FROM ${database}.usages_daily FINAL WHERE 1 GROUP BY m, currency_code, promo_code_id;
