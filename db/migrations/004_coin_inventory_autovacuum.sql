-- coin_inventory behaves like a queue: every claim UPDATE changes fetched_at, a column in the
-- partial index predicates, so it is never a HOT update and leaves a dead heap tuple plus dead
-- index entries that the claim lookup walks until vacuum removes them; the hourly hard delete
-- then leaves another dead tuple per coin. The default thresholds (20 % of the table) let
-- millions of dead tuples pile up on a large table, so vacuum this one early and fast.
ALTER TABLE coin_inventory SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_limit = 2000,
    autovacuum_vacuum_cost_delay = 1
);

ALTER TABLE claim_quota SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_threshold = 500
);
