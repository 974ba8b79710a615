DROP TABLE IF EXISTS claim_replay;
DROP INDEX IF EXISTS coin_inventory_claim_ref;
ALTER TABLE coin_inventory DROP COLUMN IF EXISTS claim_ref;
