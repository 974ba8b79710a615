-- Back to one inventory per user: what belonged to devices other than 1 is deleted (its private
-- keys are on another device: served as device 1's, it would be useless), and identity keys go.
DELETE FROM coin_inventory WHERE device_id <> 1 AND fetched_at IS NULL;
DELETE FROM last_resort_coin WHERE device_id <> 1;
DELETE FROM stock_watch WHERE device_id <> 1;

-- (each command through EXECUTE: Citus sends some DDL to the workers as the text it came in, and
-- the text of a whole migration file is several commands, which it refuses)
DO $$
BEGIN
  EXECUTE 'DROP INDEX coin_inventory_available';
  EXECUTE 'ALTER TABLE coin_inventory DROP COLUMN device_id';
  EXECUTE 'CREATE INDEX coin_inventory_available ON coin_inventory (user_id, coin_category, record_id) WHERE fetched_at IS NULL';
  EXECUTE 'ALTER TABLE last_resort_coin DROP CONSTRAINT last_resort_coin_pkey';
  EXECUTE 'ALTER TABLE last_resort_coin ADD PRIMARY KEY (user_id, coin_category)';
  EXECUTE 'ALTER TABLE last_resort_coin DROP COLUMN device_id';
  EXECUTE 'ALTER TABLE stock_watch DROP CONSTRAINT stock_watch_pkey';
  EXECUTE 'ALTER TABLE stock_watch ADD PRIMARY KEY (user_id)';
  EXECUTE 'ALTER TABLE stock_watch DROP COLUMN device_id';
  EXECUTE 'ALTER TABLE claim_replay DROP COLUMN devices';
  EXECUTE 'DROP TABLE device';
END
$$;
