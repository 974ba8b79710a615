-- Devices: a user's coins, last-resort coins and stock watches belong to one of its devices (ids
-- 1–127), each holding its own private keys. A device row is created by the device's first
-- upload or by registering its identity keys (PUT /v1/devices/{id}); a claim for "all" devices
-- serves the devices that have a row. Coins and rows of before this migration are device 1's.
-- * ed25519 / ml_dsa: the device's public identity keys (NULL until registered): coins it uploads
--   are verified against them (AQM_VERIFY_SIGNATURES).
-- * generation: bumped whenever the keys are replaced (a random start: see below). An upload verifies against one generation
--   and stores its coins only while the row still has it (the upload holds the row FOR SHARE;
--   a replacement updates it, then deletes the device's unclaimed coins in a later statement of
--   its transaction, which sees every upload that committed before it).
CREATE TABLE device (
    user_id       uuid        NOT NULL,
    device_id     smallint    NOT NULL CHECK (device_id BETWEEN 1 AND 127),
    ed25519       bytea       CHECK (octet_length(ed25519) = 32),
    ml_dsa_set    text        CHECK (ml_dsa_set IN ('ML-DSA-44', 'ML-DSA-65', 'ML-DSA-87')),
    ml_dsa        bytea,
    -- starts anywhere: a device removed and created again never has the generation a stale read kept
    generation    integer     NOT NULL DEFAULT floor(random() * 1000000000)::int,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id),
    CONSTRAINT device_ml_dsa_complete CHECK ((ml_dsa IS NULL) = (ml_dsa_set IS NULL)),
    CONSTRAINT device_ml_dsa_needs_ed25519 CHECK (ml_dsa IS NULL OR ed25519 IS NOT NULL)
);

ALTER TABLE coin_inventory ADD COLUMN device_id smallint NOT NULL DEFAULT 1;
-- (index commands through EXECUTE: Citus sends DROP/CREATE INDEX to the workers as the text they
-- came in, and the text of a whole migration file is several commands, which it refuses)
DO $$ BEGIN EXECUTE 'DROP INDEX coin_inventory_available'; END $$;
DO $$ BEGIN EXECUTE 'CREATE INDEX coin_inventory_available ON coin_inventory (user_id, device_id, coin_category, record_id) WHERE fetched_at IS NULL'; END $$;

ALTER TABLE last_resort_coin ADD COLUMN device_id smallint NOT NULL DEFAULT 1;
-- (two statements: Citus refuses ADD CONSTRAINT beside other subcommands on a distributed table)
ALTER TABLE last_resort_coin DROP CONSTRAINT last_resort_coin_pkey;
ALTER TABLE last_resort_coin ADD PRIMARY KEY (user_id, device_id, coin_category);

ALTER TABLE stock_watch ADD COLUMN device_id smallint NOT NULL DEFAULT 1;
ALTER TABLE stock_watch DROP CONSTRAINT stock_watch_pkey;
ALTER TABLE stock_watch ADD PRIMARY KEY (user_id, device_id);

-- An all-devices claim's answer beside its coins: per device, its identity keys as served and
-- its shortfall (NULL for a claim of one device, whose shortfall is `short`).
ALTER TABLE claim_replay ADD COLUMN devices jsonb;

INSERT INTO device (user_id, device_id)
SELECT user_id, 1 FROM coin_inventory WHERE fetched_at IS NULL
UNION SELECT user_id, 1 FROM last_resort_coin;
