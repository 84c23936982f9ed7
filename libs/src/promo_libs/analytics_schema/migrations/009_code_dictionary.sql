-- code_dictionary: code text -> the ids that ever carried it, per source (0 the promo_codes
-- dimension, 1 usages, 2 orders), with the newest (dimension) or first (usages, orders) creation
-- second of those rows (issue 11: GetPromoCodeStats by code text reads the text's primary-key
-- range here instead of scanning the event tables' code columns). Filled by sync-consumer from
-- the stored rows of each batch's entities; readers take min or max per (id, source), so
-- duplicates are harmless (adapters/derived.py, refresh_code_dictionary, says why).
--
-- Idempotent: the table is derived, so a run that dies midway drops what it made and
-- recomputes it from the event tables again.

DROP TABLE IF EXISTS ${database}.code_dictionary;

CREATE TABLE IF NOT EXISTS ${database}.code_dictionary (
    code String,
    promo_code_id String,
    source UInt8,
    since DateTime('UTC'),
    preference UInt32
) ENGINE = ReplacingMergeTree(preference)
ORDER BY (code, source, promo_code_id);

-- The statement sync_consumer.adapters.derived.refresh_code_dictionary builds for every entity
-- (a unit test keeps the two equal).
INSERT INTO ${database}.code_dictionary (code, promo_code_id, source, since, preference) SELECT t, cid, s, seen, if(s = 0, toUInt32(seen), 4294967295 - toUInt32(seen)) FROM (SELECT code AS t, promo_code_id AS cid, toUInt8(0) AS s, max(create_time) AS seen FROM ${database}.promo_codes WHERE 1 AND code != '' GROUP BY t, cid UNION ALL SELECT code AS t, promo_code_id AS cid, toUInt8(1) AS s, min(create_time) AS seen FROM ${database}.promo_code_usages_analytics WHERE 1 AND code != '' GROUP BY t, cid UNION ALL SELECT promo_code AS t, promo_code_id AS cid, toUInt8(2) AS s, min(create_time) AS seen FROM ${database}.orders_analytics WHERE 1 AND promo_code != '' AND promo_code_id != '' GROUP BY t, cid);
