-- The campaign of a code, of a usage (its code's campaign at the redemption) and of an order
-- (its code's), from the snapshots' campaign_id; empty when none and in rows stored before
-- campaigns existed. GetCampaignStats selects a campaign's usages and orders by them.
--
-- Idempotent: ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS, so the migrator
-- (promo_libs.clickhouse.migrations) runs such a statement only when system.columns lacks the
-- column, and without the IF NOT EXISTS on servers that would refuse it.

ALTER TABLE ${database}.promo_codes ADD COLUMN IF NOT EXISTS campaign_id String;

ALTER TABLE ${database}.promo_code_usages_analytics ADD COLUMN IF NOT EXISTS campaign_id String;

ALTER TABLE ${database}.orders_analytics ADD COLUMN IF NOT EXISTS campaign_id String;
