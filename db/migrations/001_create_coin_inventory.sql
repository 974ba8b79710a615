-- The coin inventory: the signed public halves of one-time key pairs, each handed out once.
--
-- Column choices, made for the queries the service actually runs:
-- * record_id is an identity column filled in upload order (the upload statement inserts in the
--   order of the request, WITH ORDINALITY). All coins of one upload share uploaded_at, so FIFO
--   order is record_id order, not uploaded_at order; the lookup index is keyed on it.
-- * coin_category is text with a CHECK: readable in psql and in monitoring queries; the three
--   values are also enforced by the API schema.
-- * fetched_by and fetched_at are set together by a claim (CHECK below) and the row is removed
--   entirely by the hourly hard delete, so who fetched what is kept for one grace period only.

CREATE TABLE coin_inventory (
    record_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id          uuid        NOT NULL,
    key_id           varchar(36) NOT NULL,
    coin_category    text        NOT NULL CHECK (coin_category IN ('GOLD', 'SILVER', 'BRONZE')),
    public_key_blob  bytea       NOT NULL,
    signature_blob   bytea       NOT NULL,
    uploaded_at      timestamptz NOT NULL DEFAULT now(),
    fetched_by       uuid,
    fetched_at       timestamptz,
    CONSTRAINT coin_inventory_owner_key UNIQUE (user_id, key_id),
    CONSTRAINT coin_inventory_claim_complete CHECK ((fetched_by IS NULL) = (fetched_at IS NULL))
);

-- Claim and count: the available coins of one user and tier, oldest first.
CREATE INDEX coin_inventory_available
    ON coin_inventory (user_id, coin_category, record_id)
    WHERE fetched_at IS NULL;

-- Daily purge of coins nobody claimed for too long.
CREATE INDEX coin_inventory_expiry
    ON coin_inventory (uploaded_at)
    WHERE fetched_at IS NULL;

-- Hourly hard delete of claimed coins once the grace period is over.
CREATE INDEX coin_inventory_claimed
    ON coin_inventory (fetched_at)
    WHERE fetched_at IS NOT NULL;
