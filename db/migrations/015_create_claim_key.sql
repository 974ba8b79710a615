-- Idempotency-Keys in use, by their keyed hash (the ref of claim_replay) alone, with the hash of
-- the body they were first sent with. Used on Citus only, where claim_replay lives on the shard of
-- the claim's target: a key reused for a target on another shard would not be found there, so a
-- keyed claim registers its key here first (distributed by ref: this table shares no shard with
-- the coins) and a key already registered with another body is refused (422) before anything is
-- claimed. On one PostgreSQL the claim statement finds a reused key in claim_replay itself and this
-- table stays empty. A key is registered at its first attempt, whether or not that attempt
-- records an answer (a waiting claim's early tries do not): on Citus the same key with another
-- body is refused from then on. Purged with the replay records, after the hard-delete grace.
CREATE TABLE claim_key (
    ref        uuid        PRIMARY KEY,
    body       uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX claim_key_created_at ON claim_key (created_at);
