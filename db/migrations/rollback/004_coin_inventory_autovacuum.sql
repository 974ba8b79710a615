ALTER TABLE coin_inventory RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold, autovacuum_vacuum_insert_scale_factor,
    autovacuum_analyze_scale_factor, autovacuum_vacuum_cost_limit, autovacuum_vacuum_cost_delay
);
ALTER TABLE claim_quota RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
