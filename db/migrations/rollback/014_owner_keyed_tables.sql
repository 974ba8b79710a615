-- Back to keys without the owner. Quota rows and refunds are dropped (their keys may collide
-- across owners once the owner is gone from the key: a pair hash names one owner, so they do
-- not, but the old shape has no room to say so); replay records keep their ref.
-- On Citus the tables go back to the coordinator first: the old keys cannot be distributed.
DO $$
DECLARE t regclass;
BEGIN
  IF to_regclass('pg_dist_partition') IS NOT NULL THEN
    FOR t IN SELECT logicalrelid FROM pg_dist_partition
             WHERE logicalrelid::text IN ('coin_inventory', 'last_resort_coin', 'claimed_key', 'stock_watch',
                                          'claim_quota', 'claim_replay', 'claim_refund') LOOP
      PERFORM undistribute_table(t);
    END LOOP;
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
ALTER TABLE claim_quota DROP CONSTRAINT claim_quota_pkey, ADD PRIMARY KEY (pair);
ALTER TABLE claim_quota DROP COLUMN target;

ALTER TABLE coin_inventory DROP CONSTRAINT coin_inventory_pkey, ADD PRIMARY KEY (record_id);
