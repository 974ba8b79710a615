-- Back to one inventory per user: what belonged to devices other than 1 is deleted (its private
-- keys are on another device: served as device 1's, it would be useless), and identity keys go.
DELETE FROM coin_inventory WHERE device_id <> 1 AND fetched_at IS NULL;
DROP INDEX coin_inventory_available;
ALTER TABLE coin_inventory DROP COLUMN device_id;
CREATE INDEX coin_inventory_available
    ON coin_inventory (user_id, coin_category, record_id)
    WHERE fetched_at IS NULL;

DELETE FROM last_resort_coin WHERE device_id <> 1;
ALTER TABLE last_resort_coin DROP CONSTRAINT last_resort_coin_pkey, ADD PRIMARY KEY (user_id, coin_category);
ALTER TABLE last_resort_coin DROP COLUMN device_id;

DELETE FROM stock_watch WHERE device_id <> 1;
ALTER TABLE stock_watch DROP CONSTRAINT stock_watch_pkey, ADD PRIMARY KEY (user_id);
ALTER TABLE stock_watch DROP COLUMN device_id;

ALTER TABLE claim_replay DROP COLUMN devices;
DROP TABLE device;
