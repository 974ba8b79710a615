-- Back to keys without the owner: quota rows and refunds are dropped (every pair's window starts
-- afresh, as at 014); replay records keep their ref, those without an answer (Citus's) are dropped.
-- On Citus the old keys cannot be distributed, and Citus cannot take a table with an identity
-- column back to the coordinator (undistribute_table: 0A000): go back to one PostgreSQL first
-- (docs/runbook.md, "Citus": leaving it), then roll back there.
DO $$
DECLARE distributed boolean := false;
BEGIN
  IF to_regclass('pg_dist_partition') IS NOT NULL THEN  -- (read through EXECUTE: the table exists only with Citus)
    EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = ''coin_inventory''::regclass)' INTO distributed;
  END IF;
  IF distributed THEN
    RAISE EXCEPTION 'migration 014 cannot be rolled back while the tables are distributed (Citus): move the data to one PostgreSQL first'
      USING ERRCODE = '0A000';
  END IF;
END
$$;
DELETE FROM claim_refund;
ALTER TABLE claim_refund DROP CONSTRAINT claim_refund_pkey, ADD PRIMARY KEY (pair, at);
ALTER TABLE claim_refund DROP COLUMN target;

DROP INDEX IF EXISTS claim_replay_ref;
DELETE FROM claim_replay WHERE short IS NULL;
ALTER TABLE claim_replay ALTER COLUMN short SET NOT NULL;
ALTER TABLE claim_replay DROP CONSTRAINT claim_replay_pkey, ADD PRIMARY KEY (ref);
ALTER TABLE claim_replay DROP COLUMN target;

DELETE FROM claim_quota;
DROP INDEX IF EXISTS claim_quota_pair;
ALTER TABLE claim_quota DROP CONSTRAINT claim_quota_pkey, ADD PRIMARY KEY (pair);
ALTER TABLE claim_quota DROP COLUMN target;

ALTER TABLE coin_inventory DROP CONSTRAINT coin_inventory_pkey, ADD PRIMARY KEY (record_id);
