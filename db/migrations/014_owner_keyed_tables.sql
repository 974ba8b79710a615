-- Every row a claim touches is keyed by the coins' owner first, so that the tables can be
-- distributed by owner (Citus: a unique key must contain the distribution column) and a claim
-- batch of one shard's owners stays on that shard:
-- * coin_inventory: primary key (user_id, record_id). record_id stays an identity, unique by
--   construction; every statement now names a coin by owner and record_id.
-- * claim_quota, claim_replay and claim_refund gain the owner (target) the pair or the claim is
--   about. That is the owner of the coins, never the requester: who claimed whose coins stays a
--   keyed hash. The quota rows and refunds of the old shape cannot be given an owner (the pair
--   is a hash): they are dropped, so every pair's 24-hour window starts afresh, as it did at 007.
--   Replay records take the owner of the coins they replay; records that served no coin (none
--   to name the owner) are dropped: a retry of such a claim claims again.
-- Not backward compatible: instances of the previous version cannot write these tables. Stop
-- them before this migration runs (docs/runbook.md, "Upgrading to 014").
ALTER TABLE coin_inventory DROP CONSTRAINT coin_inventory_pkey, ADD PRIMARY KEY (user_id, record_id);

DELETE FROM claim_quota;
ALTER TABLE claim_quota ADD COLUMN target uuid NOT NULL;
ALTER TABLE claim_quota DROP CONSTRAINT claim_quota_pkey, ADD PRIMARY KEY (target, pair);
-- the claim locks a batch's pairs by key (pair = ANY): one index probe per pair, where the
-- primary key would probe every (owner, pair) combination of the batch
CREATE INDEX claim_quota_pair ON claim_quota (pair);

ALTER TABLE claim_replay ADD COLUMN target uuid;
UPDATE claim_replay p SET target = c.user_id FROM coin_inventory c WHERE c.claim_ref = p.ref;
DELETE FROM claim_replay WHERE target IS NULL;
ALTER TABLE claim_replay ALTER COLUMN target SET NOT NULL;
ALTER TABLE claim_replay DROP CONSTRAINT claim_replay_pkey, ADD PRIMARY KEY (target, ref);
-- a key is looked up by itself too: the same key for another owner is a reused key
CREATE INDEX claim_replay_ref ON claim_replay (ref);
-- On Citus a keyed claim's record is created (short NULL) by a statement of its own before the
-- claim, which then fills it in (src/claims/ensure.ts): a record without short answers nothing.
ALTER TABLE claim_replay ALTER COLUMN short DROP NOT NULL;

DELETE FROM claim_refund;
ALTER TABLE claim_refund ADD COLUMN target uuid NOT NULL;
ALTER TABLE claim_refund DROP CONSTRAINT claim_refund_pkey, ADD PRIMARY KEY (target, pair, at);
