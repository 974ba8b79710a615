DROP TABLE IF EXISTS claim_quota;
CREATE TABLE claim_quota (
    requester_id uuid        NOT NULL,
    target_id    uuid        NOT NULL,
    hour         timestamptz NOT NULL,
    claimed      integer     NOT NULL CHECK (claimed > 0),
    PRIMARY KEY (requester_id, target_id, hour)
);
CREATE INDEX claim_quota_hour ON claim_quota (hour);
