-- Refunds of the pair quota for last-resort coins of claims that were never answered with them
-- (src/claims/return.ts). A last-resort coin stays in stock, so unlike an ordinary coin nothing
-- in coin_inventory shows that its quota was already given back: a return that runs again (its
-- first run's answer was lost) finds its row here and refunds nothing more. Keyed by the pair's
-- keyed hash and the claim statement's time; kept as long as the quota window (hard-delete job).
CREATE TABLE claim_refund (
    pair uuid        NOT NULL,
    at   timestamptz NOT NULL,
    PRIMARY KEY (pair, at)
);
