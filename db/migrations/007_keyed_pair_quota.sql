-- The pair quota, rebuilt so that a batch of claims can check and spend it inside the claim
-- statement itself, exactly, across any number of server instances:
-- * one row per (requester, target) pair. The claim statement locks the rows of its pairs
--   (SELECT … FOR UPDATE, which in READ COMMITTED returns the newest committed version) and
--   writes them once (INSERT … ON CONFLICT DO UPDATE), so all the state a check needs lives in
--   the locked row: hourly buckets as two parallel arrays (hour number since the epoch, coins).
-- * the pair is a keyed hash (HMAC of requester and target with AQM_QUOTA_SECRET, 128 bits):
--   who claimed whose coins cannot be read from the database without the server's secret.
-- Hours are floor(epoch / 3600); a bucket counts until its hour ended 24 h ago (the rolling window
-- errs strict by at most an hour). The arithmetic is written inline in the statements that use it
-- (src/coins/claim-sql.ts), not as SQL functions, which PostgreSQL would plan again on every run.
-- The old table held plain user ids; it is dropped, so every pair starts a fresh window.
DROP TABLE IF EXISTS claim_quota;

CREATE TABLE claim_quota (
    pair   uuid      PRIMARY KEY,
    hours  integer[] NOT NULL,
    counts integer[] NOT NULL
) WITH (fillfactor = 70);  -- room for HOT updates: every claim rewrites its pair's row

ALTER TABLE claim_quota SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_threshold = 500);
