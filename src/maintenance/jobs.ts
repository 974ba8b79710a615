import { retention } from "../coins/retention.ts";
import type { Config, SettingName } from "../config.ts";
import type { Sql } from "../db/pool.ts";

/** A job's parameter, from the configuration unless an admin call gives it. */
export interface JobParams {
  maxAgeDays?: number;
  graceHours?: number;
}

export interface Job {
  /** The setting holding its cron pattern. */
  schedule: SettingName;
  /** Its session advisory lock: one run at a time across every instance. */
  lockKey: number;
  /** Runs on the one connection that holds the lock; returns the coins deleted. */
  run(conn: Sql, config: Config, params: JobParams): Promise<number>;
}

/**
 * Every maintenance job, for the cron schedule and the admin routes alike: a new job is one entry
 * here plus its SQL (coins/retention.ts). The work runs on the connection that holds the lock,
 * never on the pool: with a small pool, waiting for a second connection while holding one could
 * wait forever.
 */
export const jobs = {
  "purge-stale": {
    schedule: "AQM_CRON_PURGE_STALE",
    lockKey: 0x41514d_10,
    async run(conn, config, { maxAgeDays = config.AQM_PURGE_MAX_AGE_DAYS }) {
      const r = retention(conn);
      const deleted = await r.purgeStale(maxAgeDays);
      await r.purgeClaimedKeys(maxAgeDays);
      return deleted;
    },
  },
  "hard-delete": {
    schedule: "AQM_CRON_HARD_DELETE",
    lockKey: 0x41514d_11,
    async run(conn, config, { graceHours = config.AQM_HARD_DELETE_GRACE_HOURS }) {
      const r = retention(conn);
      const deleted = await r.hardDeleteClaimed(graceHours);
      await r.purgeReplays(graceHours);
      await r.purgeKeys(graceHours);
      await r.purgeQuota();
      await r.purgeRefunds();
      await r.purgeWatches();
      return deleted;
    },
  },
} satisfies Record<string, Job>;

export type JobName = keyof typeof jobs;
export const jobNames = Object.keys(jobs) as JobName[];
