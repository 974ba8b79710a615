-- One row per maintenance job: the last schedule tick some instance claimed. With several
-- server instances every one fires each tick; the one whose UPDATE moves last_tick forward
-- runs the job, the others skip it. (An advisory lock additionally keeps a slow run from
-- overlapping the next one.)
CREATE TABLE maintenance_tick (
    job       text        PRIMARY KEY,
    last_tick timestamptz NOT NULL
);
