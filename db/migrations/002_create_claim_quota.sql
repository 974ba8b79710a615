-- The exhaustion quota: how many coins one requester claimed of one target, per hour.
-- It lives in PostgreSQL so it holds across restarts and across server instances. Hourly
-- buckets keep it small (at most 25 rows per active pair); a bucket counts until its hour ended
-- 24 h ago, so the rolling window errs on the strict side by at most one hour. Rows older than
-- that are deleted by the hourly maintenance, so who fetched whose coins is kept no longer
-- than the quota needs it.
CREATE TABLE claim_quota (
    requester_id uuid        NOT NULL,
    target_id    uuid        NOT NULL,
    hour         timestamptz NOT NULL,
    claimed      integer     NOT NULL CHECK (claimed > 0),
    PRIMARY KEY (requester_id, target_id, hour)
);

CREATE INDEX claim_quota_hour ON claim_quota (hour);
