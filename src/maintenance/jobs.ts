import type { CoinService } from "../coins/service.ts";
import type { Config } from "../config.ts";
import type { Sql } from "../db/pool.ts";
import type { PairQuota } from "../limits/pair-quota.ts";
import type { Metrics } from "../metrics/registry.ts";

export type JobName = "purge-stale" | "hard-delete";
export type JobResult = "ok" | "skipped" | "error";

export interface JobDeps {
  sql: Sql;
  coins: CoinService;
  quota?: PairQuota;
  config: Config;
  metrics?: Metrics;
  log?: (line: Record<string, unknown>) => void;
}

const lockKeys: Record<JobName, number> = { "purge-stale": 0x41514d_10, "hard-delete": 0x41514d_11 };

export function jobWork({ coins, quota, config }: JobDeps): Record<JobName, () => Promise<number>> {
  return {
    "purge-stale": () => coins.purgeStale(config.AQM_PURGE_MAX_AGE_DAYS),
    "hard-delete": async () => {
      const deleted = await coins.hardDeleteFetched(config.AQM_HARD_DELETE_GRACE_HOURS);
      await quota?.purgeExpired();
      return deleted;
    },
  };
}

/** Claims `tick` for `job` in maintenance_tick; true for exactly one caller per tick. */
async function claimTick(sql: Sql, job: JobName, tick: Date): Promise<boolean> {
  const rows = await sql`
    INSERT INTO maintenance_tick (job, last_tick) VALUES (${job}, ${tick})
    ON CONFLICT (job) DO UPDATE SET last_tick = excluded.last_tick
    WHERE maintenance_tick.last_tick < excluded.last_tick
    RETURNING 1`;
  return rows.length === 1;
}

/**
 * Runs one maintenance job for one schedule tick: only the instance that claims the tick runs
 * it, under a session advisory lock so a run never overlaps a slow previous one. The deletes
 * themselves go in bounded batches (see coins/service.ts). Logs `{ job, deleted, ms }`.
 */
export async function runJob(deps: JobDeps, job: JobName, tick: Date): Promise<JobResult> {
  const { sql, metrics, log = (line) => console.log(JSON.stringify(line)) } = deps;
  const started = performance.now();
  let result: JobResult = "skipped";
  try {
    if (!(await claimTick(sql, job, tick))) return result;
    const conn = await sql.reserve();
    try {
      const [{ locked }] = await conn<[{ locked: boolean }]>`SELECT pg_try_advisory_lock(${lockKeys[job]}) AS locked`;
      if (!locked) return result;
      try {
        const deleted = await jobWork(deps)[job]();
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
