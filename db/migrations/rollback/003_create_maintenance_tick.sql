DROP TABLE IF EXISTS maintenance_tick;
