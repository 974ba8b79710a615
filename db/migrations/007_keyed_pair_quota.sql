-- The pair quota, rebuilt so that a batch of claims can check and spend it inside the claim
-- statement itself, exactly, across any number of server instances:
-- * one row per (requester, target) pair. The claim statement locks the rows of its pairs
--   (SELECT … FOR UPDATE, which in READ COMMITTED returns the newest committed version) and
--   writes them once (INSERT … ON CONFLICT DO UPDATE), so all the state a check needs lives in
--   the locked row: hourly buckets as two parallel arrays (hour number since the epoch, coins).
-- * the pair is a keyed hash (HMAC of requester and target with AQM_QUOTA_SECRET, 128 bits):
--   who claimed whose coins cannot be read from the database without the server's secret.
-- A bucket counts until its hour ended 24 h ago (the rolling window errs strict by at most an
-- hour). The old table held plain user ids; it is dropped, so every pair starts a fresh window.
DROP TABLE IF EXISTS claim_quota;

CREATE TABLE claim_quota (
    pair   uuid      PRIMARY KEY,
    hours  integer[] NOT NULL,
    counts integer[] NOT NULL
) WITH (fillfactor = 70);  -- room for HOT updates: every claim rewrites its pair's row

ALTER TABLE claim_quota SET (autovacuum_vacuum_scale_factor = 0.05, autovacuum_vacuum_threshold = 500);

-- The current hour as a bucket number. STABLE: one value per statement.
CREATE FUNCTION aqm_hour() RETURNS integer
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN floor(extract(epoch FROM now()) / 3600)::integer;

-- Coins claimed in the buckets that still count at hour `now_hour`.
CREATE FUNCTION aqm_quota_used(hours integer[], counts integer[], now_hour integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (SELECT coalesce(sum(c), 0)::integer FROM unnest(hours, counts) AS b(h, c) WHERE h > now_hour - 25);

-- The oldest bucket that still counts (NULL when none): it stops counting at that hour + 25.
CREATE FUNCTION aqm_quota_oldest(hours integer[], now_hour integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN (SELECT min(h) FROM unnest(hours) AS b(h) WHERE h > now_hour - 25);

-- The buckets after `n` more coins at `now_hour`, without the ones that no longer count.
CREATE FUNCTION aqm_quota_add(hours integer[], counts integer[], now_hour integer, n integer,
                              OUT hours integer[], OUT counts integer[])
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    BEGIN ATOMIC
        SELECT array_agg(h ORDER BY h), array_agg(c ORDER BY h)
        FROM (SELECT h, sum(c)::integer AS c
              FROM (SELECT b.h, b.c FROM unnest(hours, counts) AS b(h, c) WHERE b.h > now_hour - 25
                    UNION ALL SELECT now_hour, n) AS live
              GROUP BY h) AS merged;
    END;
