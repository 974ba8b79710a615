-- Idempotent claims (POST /v1/coins/claim with Idempotency-Key): a retry returns the coins of
-- the first attempt instead of claiming more.
-- * claim_ref marks the coins a keyed claim took: a keyed hash of (requester, Idempotency-Key),
--   so it names nobody without the server's secret. It goes with the row at the hard delete.
-- * claim_replay holds the rest of the first answer: which request body it answered (a hash,
--   to refuse the same key with another body), the per-tier shortfall and the last-resort
--   coins served (those are not deleted by a claim, and may be replaced by their owner later).
--   Rows are deleted with the claimed coins, after the hard-delete grace.
ALTER TABLE coin_inventory ADD COLUMN claim_ref uuid;

CREATE INDEX coin_inventory_claim_ref ON coin_inventory (claim_ref) WHERE claim_ref IS NOT NULL;

CREATE TABLE claim_replay (
    ref         uuid        PRIMARY KEY,
    body        uuid        NOT NULL,
    short       integer[]   NOT NULL,
    last_resort jsonb       NOT NULL DEFAULT '[]',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX claim_replay_created_at ON claim_replay (created_at);
