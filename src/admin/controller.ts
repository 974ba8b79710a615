import { Elysia, t } from "elysia";
import { authenticated } from "../auth/plugin.ts";
import { requireAdmin, type TokenVerifier } from "../auth/jwt.ts";
import type { Config } from "../config.ts";
import type { Db } from "../db/db.ts";
import { UnavailableError } from "../errors.ts";
import { problemResponses } from "../http/openapi.ts";
import type { Throttle } from "../rate-limit/throttle.ts";
import type { JobName, JobParams } from "../maintenance/jobs.ts";
import { runJob } from "../maintenance/run.ts";
import type { Metrics } from "../metrics/registry.ts";

export const PurgeBody = t.Optional(t.Object({
  max_age_days: t.Optional(t.Integer({
    minimum: 1, maximum: 3650, description: "Unclaimed coins older than this are deleted (default AQM_PURGE_MAX_AGE_DAYS)",
    error: { message: "must be an integer from 1 to 3650" },
  })),
}, { additionalProperties: false, examples: [{ max_age_days: 30 }] }));

export const HardDeleteBody = t.Optional(t.Object({
  grace_hours: t.Optional(t.Integer({
    minimum: 0, maximum: 8760, description: "Claimed coins older than this are deleted (default AQM_HARD_DELETE_GRACE_HOURS)",
    error: { message: "must be an integer from 0 to 8760" },
  })),
}, { additionalProperties: false, examples: [{ grace_hours: 1 }] }));

const Deleted = t.Object({ deleted: t.Integer({ minimum: 0 }) }, { description: "Rows this run deleted", examples: [{ deleted: 120 }] });

export interface AdminDeps {
  /** The session pool's: a run holds its job's advisory lock on one of its connections. */
  session: Db;
  config: Config;
  verify: TokenVerifier;
  throttle: Throttle;
  metrics?: Metrics;
}

/** The maintenance jobs on demand: the same runs as the cron schedule, with the same defaults and lock. */
export const adminController = ({ session, config, verify, throttle, metrics }: AdminDeps) => {
  const run = async (job: JobName, params: JobParams) => {
    const { result, deleted } = await runJob({ db: session, config, metrics }, job, params, { by: "admin" }, true);
    if (result === "skipped") throw new UnavailableError(`A run of ${job} is in progress; retry shortly`, 5);
    return { deleted };
  };
  return new Elysia({ prefix: "/v1/admin" })
    .use(authenticated(verify))
    // A derive runs before body validation: a caller without the scope learns nothing more.
    .derive(({ caller, set }) => {
      requireAdmin(caller);
      Object.assign(set.headers, throttle("admin", caller.userId));
      return {};
    })
    .post("/purge-stale", ({ body }) => run("purge-stale", { maxAgeDays: body?.max_age_days }), {
      body: PurgeBody,
      parse: "json", // for the OpenAPI media type; the bounded parser in http/body.ts runs first
      response: { 200: Deleted, ...problemResponses(400, 401, 403, 415, 422, 429, 503) },
      detail: { tags: ["admin"], summary: "Run the purge job now: unclaimed coins older than max_age_days, and old claimed key ids" },
    })
    .post("/hard-delete", ({ body }) => run("hard-delete", { graceHours: body?.grace_hours }), {
      body: HardDeleteBody,
      parse: "json",
      response: { 200: Deleted, ...problemResponses(400, 401, 403, 415, 422, 429, 503) },
      detail: { tags: ["admin"], summary: "Run the hard-delete job now: claimed coins (and who claimed them) older than grace_hours, replay records, spent quota rows and quota refunds" },
    });
};
