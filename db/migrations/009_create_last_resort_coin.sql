-- Last-resort coins: at most one per owner and tier, served (never deleted) to a claim that
-- allows it when that tier has nothing else left, as Signal's last-resort key and Matrix's
-- fallback keys are. A PUT replaces the owner's coin of a tier.
CREATE TABLE last_resort_coin (
    user_id         uuid        NOT NULL,
    coin_category   text        NOT NULL CHECK (coin_category IN ('GOLD', 'SILVER', 'BRONZE')),
    key_id          varchar(36) NOT NULL,
    public_key_blob bytea       NOT NULL,
    signature_blob  bytea       NOT NULL,
    uploaded_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, coin_category)
);

ALTER TABLE last_resort_coin
    ALTER COLUMN public_key_blob SET STORAGE EXTERNAL,
    ALTER COLUMN signature_blob SET STORAGE EXTERNAL;
