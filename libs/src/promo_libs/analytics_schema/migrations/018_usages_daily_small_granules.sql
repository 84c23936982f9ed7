-- usages_daily with index granules of 256 rows instead of 8192 (issue 11). One code's days are
-- one row per day among every code's rows of that day (sorted by day, currency, code), so with
-- 8192-row granules a 30-day GetPromoCodeStats read the holders arrays of every code of those
-- days: at 10M usages (1,000 codes) 41-51 ms, with 256-row granules 11-16 ms, while reads of
-- whole days (GetOverview, ListTopPromoCodes) stay as fast (10-14 and 31-46 ms). 18.16 cannot
-- change a table's granularity in place, so the table is made again, like migration 004.
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and
-- recomputes it from promo_code_usages_analytics again; usages_monthly, computed from these
-- rows, is unchanged (the same values come back, and a month recomputed meanwhile from fewer
-- days has a lower state version, which never wins).

DROP TABLE IF EXISTS ${database}.usages_daily;

CREATE TABLE IF NOT EXISTS ${database}.usages_daily (
    day Date,
    currency_code String,
    promo_code_id String,
    ${usage_totals_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, currency_code, promo_code_id)
SETTINGS index_granularity = 256;

-- The statement sync_consumer.adapters.derived.refresh_usages_daily builds for every key (a
-- unit test keeps the two equal).
INSERT INTO ${database}.usages_daily (day, currency_code, promo_code_id, redemptions, active, active_discount_minor, active_order_amount_minor, releases, holders, code_texts, state_version) SELECT d, cur, cid, toInt64(sum(n)), toInt64(sum(a)), toInt64(sum(off)), toInt64(sum(amount)), toInt64(sum(x)), arraySort(groupUniqArrayArray(h)), arraySort(groupUniqArrayArray(t)), toUInt64(sum(v)) FROM (SELECT any(usage_date) AS d, any(currency_code) AS cur, any(promo_code_id) AS cid, toInt64(1) AS n, toInt64(argMax(status, version) = 'ACTIVE') AS a, a * argMax(discount_minor, version) AS off, a * argMax(order_amount_minor, version) AS amount, toInt64(0) AS x, [any(user_id)] AS h, [any(code)] AS t, max(version) + 1 AS v FROM ${database}.promo_code_usages_analytics WHERE 1 GROUP BY usage_id UNION ALL SELECT toDate(any(release_time)) AS d, any(currency_code) AS cur, any(promo_code_id) AS cid, toInt64(0) AS n, toInt64(0) AS a, toInt64(0) AS off, toInt64(0) AS amount, toInt64(1) AS x, emptyArrayString() AS h, emptyArrayString() AS t, max(version) + 1 AS v FROM ${database}.promo_code_usages_analytics WHERE status = 'RELEASED' AND 1 GROUP BY usage_id) GROUP BY d, cur, cid
