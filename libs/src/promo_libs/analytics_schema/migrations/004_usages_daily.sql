-- usages_daily: a rollup of promo_code_usages_analytics per UTC day, currency and code, by
-- latest state (issue 11: usage figures of GetOverview, GetPromoCodeStats and ListTopPromoCodes
-- read whole days here, raw rows only for the partial days at the edges of a range). Derived
-- like users_analytics (migration 002): a row is an absolute value with the state version of
-- its key, recomputed by sync-consumer for every day a batch touched; readers take FINAL.
--
-- A key holds two kinds of facts: the usages created that day (redemptions, the active ones,
-- their discount and order amount, the distinct holders and code texts as sorted arrays) and
-- the usages released that day (releases, by the day of release_time; RELEASED is a usage's
-- last state, so a usage enters one release day once and never leaves it).
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and
-- recomputes it from promo_code_usages_analytics again.

DROP TABLE IF EXISTS ${database}.usages_daily;

CREATE TABLE IF NOT EXISTS ${database}.usages_daily (
    day Date,
    currency_code String,
    promo_code_id String,
    ${usage_totals_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYYYYMM(day)
ORDER BY (day, currency_code, promo_code_id);

-- The statement sync_consumer.adapters.derived.refresh_usages_daily builds for every day (a
-- unit test keeps the two equal).
INSERT INTO ${database}.usages_daily (day, currency_code, promo_code_id, redemptions, active, active_discount_minor, active_order_amount_minor, releases, holders, code_texts, state_version) SELECT d, cur, cid, toInt64(sum(n)), toInt64(sum(a)), toInt64(sum(off)), toInt64(sum(amount)), toInt64(sum(x)), arraySort(groupUniqArrayArray(h)), arraySort(groupUniqArrayArray(t)), toUInt64(sum(v)) FROM (SELECT any(usage_date) AS d, any(currency_code) AS cur, any(promo_code_id) AS cid, toInt64(1) AS n, toInt64(argMax(status, version) = 'ACTIVE') AS a, a * argMax(discount_minor, version) AS off, a * argMax(order_amount_minor, version) AS amount, toInt64(0) AS x, [any(user_id)] AS h, [any(code)] AS t, max(version) + 1 AS v FROM ${database}.promo_code_usages_analytics WHERE 1 GROUP BY usage_id UNION ALL SELECT toDate(any(release_time)) AS d, any(currency_code) AS cur, any(promo_code_id) AS cid, toInt64(0) AS n, toInt64(0) AS a, toInt64(0) AS off, toInt64(0) AS amount, toInt64(1) AS x, emptyArrayString() AS h, emptyArrayString() AS t, max(version) + 1 AS v FROM ${database}.promo_code_usages_analytics WHERE status = 'RELEASED' AND 1 GROUP BY usage_id) GROUP BY d, cur, cid;
