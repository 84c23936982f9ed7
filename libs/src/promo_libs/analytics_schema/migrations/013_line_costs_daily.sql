-- line_costs_daily: ListDiscountCosts' rollup (issues 11 and 14). Per UTC day of the order's
-- creation, currency, grouping kind ('product' or 'category'), its key (product or category id)
-- and campaign: over the lines whose order is CONFIRMED now and whose latest version names the
-- campaign, the sum of their discount shares, gross (quantity x unit price) and units, and
-- their distinct orders (additive over days and campaigns: an order has one creation day and
-- one latest campaign). Derived like code_orders_daily from the latest state of order_lines,
-- never fed deltas: a campaign's entities are the lines that ever named it, those of no
-- campaign ('') every line of the key (adapters/derived.py says why that is exact, merges of
-- order_lines included), recomputed by sync-consumer for the days a batch touched.
-- The campaign is part of the key so that a campaign's costs read the rollup too; the
-- unfiltered answer sums a key's campaigns. Sorted by kind, then day: every reader asks for
-- one kind and a range of days, with or without a campaign.
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and
-- recomputes it from order_lines again.

DROP TABLE IF EXISTS ${database}.line_costs_daily;

CREATE TABLE IF NOT EXISTS ${database}.line_costs_daily (
    day Date,
    currency_code String,
    kind String,
    cost_key String,
    campaign_id String,
    ${line_cost_columns}
) ENGINE = ReplacingMergeTree(state_version)
PARTITION BY toYYYYMM(day)
ORDER BY (kind, day, campaign_id, currency_code, cost_key);

-- The statement sync_consumer.adapters.derived.refresh_line_costs_daily builds for every key
-- (a unit test keeps the two equal).
INSERT INTO ${database}.line_costs_daily (day, currency_code, kind, cost_key, campaign_id, discount_minor, gross_minor, units, orders, state_version) SELECT d, cur, kind, k, cid, toInt64(sumIf(share, state = 'CONFIRMED' AND latest = cid)), toInt64(sumIf(qty * price, state = 'CONFIRMED' AND latest = cid)), toInt64(sumIf(qty, state = 'CONFIRMED' AND latest = cid)), toInt64(uniqExactIf(oid, state = 'CONFIRMED' AND latest = cid)), toUInt64(sum(v)) FROM (SELECT d, cur, oid, qty, price, share, state, latest, cid, v, arrayConcat(['product'], arrayMap(c -> 'category', cats)) AS gkinds, arrayConcat([product], cats) AS gkeys FROM (SELECT line_id, any(order_date) AS d, any(currency_code) AS cur, any(order_id) AS oid, any(product_id) AS product, arrayDistinct(any(category_ids)) AS cats, any(quantity) AS qty, any(unit_price_minor) AS price, argMax(discount_minor, version) AS share, argMax(status, version) AS state, argMax(campaign_id, version) AS latest, arrayConcat([''], arrayFilter(c -> c != '', groupUniqArray(campaign_id))) AS named, max(version) + 1 AS v FROM ${database}.order_lines WHERE 1 GROUP BY line_id) ARRAY JOIN named AS cid) ARRAY JOIN gkinds AS kind, gkeys AS k GROUP BY d, cur, kind, k, cid;
