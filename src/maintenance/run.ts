import type { Config } from "../config.ts";
import type { Db } from "../db/db.ts";
import { translate } from "../db/errors.ts";
import type { Sql } from "../db/pool.ts";
import { InternalError, UnavailableError } from "../errors.ts";
import type { Metrics } from "../metrics/registry.ts";
import { jobs, type Job, type JobName, type JobParams } from "./jobs.ts";

export type JobResult = "ok" | "skipped" | "error";

export interface JobDeps {
  /** The session pool's (a run holds one of its connections for the whole run). */
  db: Db;
  config: Config;
  metrics?: Metrics;
  log?: (line: Record<string, unknown>) => void;
  /** The job table (tests swap a job's work). */
  table?: Record<JobName, Job>;
}

const MAINTENANCE_STATEMENT_TIMEOUT = "5min";

const defaultLog = (line: Record<string, unknown>) => console.log(JSON.stringify(line));

/** SQLSTATE (or error class) and message of a failed run, as logged. */
function describe(error: unknown): { code: string; error: string } {
  const e = translate(error);
  if (e instanceof InternalError) return { code: e.code, error: e.detail };
  return { code: (e as UnavailableError).sqlstate ?? e.kind, error: e.message };
}

/**
 * Runs one job now, under its session advisory lock so that no two runs overlap on any instance:
 * "skipped" when a run holds the lock. Logs `{ job, deleted, ms }` (or the error with its
 * SQLSTATE) and counts it. With `rethrow` (the admin routes) an error is thrown instead of logged:
 * the HTTP layer answers and logs it, once.
 */
export async function runJob(deps: JobDeps, name: JobName, params: JobParams = {}, extra: Record<string, unknown> = {}, rethrow = false)
  : Promise<{ result: JobResult; deleted: number }> {
  const { db, config, metrics, log = defaultLog, table = jobs } = deps;
  const job = table[name];
  const started = performance.now();
  let result: JobResult = "skipped";
  let deleted = 0;
  try {
    await db.hold(async (conn) => {
      const [{ locked }] = await conn<[{ locked: boolean }]>`SELECT pg_try_advisory_lock(${job.lockKey}) AS locked`;
      if (!locked) return;
      try {
        // batches of 5,000 deletes may take longer than a request's statement_timeout
        await conn`SELECT set_config('statement_timeout', ${MAINTENANCE_STATEMENT_TIMEOUT}, false)`;
        deleted = await job.run(conn, config, params);
        result = "ok";
        metrics?.maintenanceDeleted.inc({ job: name }, deleted);
        log({ time: new Date().toISOString(), job: name, ...extra, deleted, ms: Math.round(performance.now() - started) });
      } finally {
        await conn`RESET statement_timeout`;
        await conn`SELECT pg_advisory_unlock(${job.lockKey})`;
      }
    });
  } catch (error) {
    result = "error";
    if (rethrow) throw translate(error); // the HTTP layer answers, and logs, it
    log({ time: new Date().toISOString(), level: "error", job: name, ...extra, ...describe(error) });
  } finally {
    metrics?.maintenanceRuns.inc({ job: name, result });
  }
  return { result, deleted };
}

/**
 * Claims `tick` for `job` in maintenance_tick: true for exactly one caller per tick. A tick must
 * be at least `minGapMs` (half the schedule's period) after the last one, so an instance whose
 * trigger fired a second or more late does not take it for the next tick and run it again.
 */
async function claimTick(db: Db, job: JobName, tick: Date, minGapMs: number): Promise<boolean> {
  const rows = await db.run((sql) => sql`
    INSERT INTO maintenance_tick (job, last_tick) VALUES (${job}, ${tick})
    ON CONFLICT (job) DO UPDATE SET last_tick = excluded.last_tick
    WHERE maintenance_tick.last_tick <= excluded.last_tick - make_interval(secs => ${minGapMs / 1000})
    RETURNING 1`, { what: "maintenance tick" });
  return rows.length === 1;
}

/** A schedule tick: only the instance that claims the tick runs the job (with the configured parameters). */
export async function runTick(deps: JobDeps, name: JobName, tick: Date, minGapMs = 500): Promise<JobResult> {
  const { log = defaultLog, metrics } = deps;
  try {
    if (!(await claimTick(deps.db, name, tick, minGapMs))) {
      metrics?.maintenanceRuns.inc({ job: name, result: "skipped" });
      return "skipped";
    }
  } catch (error) {
    log({ time: new Date().toISOString(), level: "error", job: name, tick: tick.toISOString(), ...describe(error) });
    metrics?.maintenanceRuns.inc({ job: name, result: "error" });
    return "error";
  }
  return (await runJob(deps, name, {}, { tick: tick.toISOString() })).result;
}
