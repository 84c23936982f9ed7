-- campaigns: an event table like promo_codes (issue 14), one row per (campaign, version) from
-- CampaignCreated and CampaignUpdated, ReplacingMergeTree keyed by the campaign id; readers take
-- the latest version (FINAL or argMax), and sync-consumer's version guard stores each version
-- once (ENTITY_KEYS in promo_libs.analytics_schema).
--
-- Limits are optional in the contract and a set limit may be any value, so each one has its own
-- `has_` flag instead of promo_codes' "0 means none". Counters are not here: they follow from
-- the usages (promo_code_usages_analytics.campaign_id, migration 011).

CREATE TABLE IF NOT EXISTS ${database}.campaigns (
    campaign_id String,
    version UInt64,
    display_name String,
    description String,
    has_max_uses UInt8,
    max_uses Int64,
    has_max_uses_per_user UInt8,
    max_uses_per_user Int64,
    has_budget UInt8,
    budget_minor Int64,
    currency_code String,
    valid_from DateTime('UTC'),
    valid_until DateTime('UTC'),
    create_time DateTime('UTC'),
    update_time DateTime('UTC'),
    ${event_source_columns}
) ENGINE = ReplacingMergeTree(version)
ORDER BY campaign_id;
