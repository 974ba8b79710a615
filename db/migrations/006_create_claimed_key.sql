-- The keys of claimed coins, kept after the hourly hard delete removed the coin itself: a
-- retried upload of a coin that was already handed out must not make it available again (the
-- unique (user_id, key_id) only guards while the row exists). Only the owner, the key id and
-- when it was claimed are kept — never who claimed it. Rows older than the purge age
-- (AQM_PURGE_MAX_AGE_DAYS) are deleted by the daily purge.
CREATE TABLE claimed_key (
    user_id    uuid        NOT NULL,
    key_id     varchar(36) NOT NULL,
    claimed_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, key_id)
);

CREATE INDEX claimed_key_claimed_at ON claimed_key (claimed_at);
