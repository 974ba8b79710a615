import { coinService } from "../coins/service.ts";
import type { Config } from "../config.ts";
import type { Sql } from "../db/pool.ts";
import { pairQuota } from "../limits/pair-quota.ts";
import type { Metrics } from "../metrics/registry.ts";

export type JobName = "purge-stale" | "hard-delete";
export type JobResult = "ok" | "skipped" | "error";

export interface JobDeps {
  sql: Sql;
  config: Config;
  metrics?: Metrics;
  log?: (line: Record<string, unknown>) => void;
}

/** What each job does, on the one connection that holds the job's lock. */
export type JobWork = Record<JobName, (conn: Sql, config: Config) => Promise<number>>;

const lockKeys: Record<JobName, number> = { "purge-stale": 0x41514d_10, "hard-delete": 0x41514d_11 };

// The deletes run on the connection that holds the lock, never on the pool: with a small pool,
// waiting for a second connection while holding one could wait forever.
export const jobWork: JobWork = {
  "purge-stale": async (conn, config) => {
    const coins = coinService(conn);
    const deleted = await coins.purgeStale(config.AQM_PURGE_MAX_AGE_DAYS);
    await coins.purgeClaimedKeys(config.AQM_PURGE_MAX_AGE_DAYS);
    return deleted;
  },
  "hard-delete": async (conn, config) => {
    const deleted = await coinService(conn).hardDeleteFetched(config.AQM_HARD_DELETE_GRACE_HOURS);
    await pairQuota(conn, config.AQM_PAIR_QUOTA).purgeExpired();
    return deleted;
  },
};

/**
 * Claims `tick` for `job` in maintenance_tick: true for exactly one caller per tick. A tick must
 * be at least `minGapMs` (half the schedule's period) after the last one, so an instance whose
 * trigger fired a second or more late does not take it for the next tick and run it again.
 */
async function claimTick(sql: Sql, job: JobName, tick: Date, minGapMs: number): Promise<boolean> {
  const rows = await sql`
    INSERT INTO maintenance_tick (job, last_tick) VALUES (${job}, ${tick})
    ON CONFLICT (job) DO UPDATE SET last_tick = excluded.last_tick
    WHERE maintenance_tick.last_tick <= excluded.last_tick - make_interval(secs => ${minGapMs / 1000})
    RETURNING 1`;
  return rows.length === 1;
}

/**
 * Runs one maintenance job for one schedule tick: only the instance that claims the tick runs
 * it, under a session advisory lock so a run never overlaps a slow previous one. The deletes
 * themselves go in bounded batches (see coins/service.ts). Logs `{ job, deleted, ms }`.
 */
export async function runJob(deps: JobDeps, job: JobName, tick: Date, minGapMs = 500, work: JobWork = jobWork): Promise<JobResult> {
  const { sql, config, metrics, log = (line) => console.log(JSON.stringify(line)) } = deps;
  const started = performance.now();
  let result: JobResult = "skipped";
  try {
    if (!(await claimTick(sql, job, tick, minGapMs))) return result;
    const conn = await sql.reserve();
    try {
      const [{ locked }] = await conn<[{ locked: boolean }]>`SELECT pg_try_advisory_lock(${lockKeys[job]}) AS locked`;
      if (!locked) return result;
      try {
        const deleted = await work[job](conn as unknown as Sql, config);
        result = "ok";
        metrics?.maintenanceDeleted.inc({ job }, deleted);
        log({ time: new Date().toISOString(), job, tick: tick.toISOString(), deleted, ms: Math.round(performance.now() - started) });
      } finally {
        await conn`SELECT pg_advisory_unlock(${lockKeys[job]})`;
      }
    } finally {
      conn.release();
    }
  } catch (error) {
    result = "error";
    const { code, message } = error as { code?: string; message?: string };
    log({ time: new Date().toISOString(), level: "error", job, tick: tick.toISOString(), code, error: String(message ?? error).slice(0, 200) });
  } finally {
    metrics?.maintenanceRuns.inc({ job, result });
  }
  return result;
}
