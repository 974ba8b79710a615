import { Elysia, t } from "elysia";
import type { Db } from "../db/db.ts";
import type { Migration } from "../db/migrate.ts";
import { reachable, readiness } from "./readiness.ts";

/**
 * Every health answer comes within a second, whatever the database does: the statement's deadline
 * plus the 250 ms a cancelled statement may take to confirm (db.ts).
 */
const DB_DEADLINE_MS = 700;

const Health = (description: string, example: object) => t.Object({
  status: t.Union([t.Literal("ok"), t.Literal("degraded")]),
  db_connected: t.Boolean(),
}, { description, examples: [example] });

const Live = t.Object({ status: t.Literal("ok") }, { description: "The process answers", examples: [{ status: "ok" }] });

const Ready = (description: string, example: object) => t.Object({
  status: t.Union([t.Literal("ready"), t.Literal("not_ready")]),
  db_connected: t.Boolean({ description: "PostgreSQL answered" }),
  schema_current: t.Boolean({ description: "Every migration of this build is applied (newer ones from a later build are fine)" }),
}, { description, examples: [example] });

const probe = { tags: ["health"], security: [] };

/**
 * GET /v1/health/live (the process answers), GET /v1/health/ready (the database answers and its
 * schema is current) and the original GET /v1/health (the database answers). No token needed.
 */
export const healthController = (db: Db, migrations: readonly Migration[]) =>
  new Elysia({ name: "health" })
    .get("/v1/health", async ({ set }) => {
      set.headers["cache-control"] = "no-store";
      const db_connected = await reachable(db, performance.now() + DB_DEADLINE_MS);
      if (db_connected) return { status: "ok" as const, db_connected };
      set.status = 503;
      set.headers["retry-after"] = "1";
      return { status: "degraded" as const, db_connected };
    }, {
      response: {
        200: Health("PostgreSQL answered", { status: "ok", db_connected: true }),
        503: Health("PostgreSQL did not answer within a second, or this instance's connections were all busy for that long", { status: "degraded", db_connected: false }),
      },
      detail: {
        ...probe, summary: "Database reachability (kept as it was; probes use /v1/health/live and /v1/health/ready)",
      },
    })
    .get("/v1/health/live", ({ set }) => {
      set.headers["cache-control"] = "no-store";
      return { status: "ok" as const };
    }, {
      response: { 200: Live },
      detail: {
        ...probe, summary: "Liveness: the process answers (the database is not asked)",
        description: "For a liveness probe that restarts the process: a database outage never fails it, so it cannot restart every instance at once.",
      },
    })
    .get("/v1/health/ready", async ({ set }) => {
      set.headers["cache-control"] = "no-store";
      const state = await readiness(db, migrations, performance.now() + DB_DEADLINE_MS);
      if (state.db_connected && state.schema_current) return { status: "ready" as const, ...state };
      set.status = 503;
      set.headers["retry-after"] = "1";
      return { status: "not_ready" as const, ...state };
    }, {
      response: {
        200: Ready("Ready to serve", { status: "ready", db_connected: true, schema_current: true }),
        503: Ready("Not ready: PostgreSQL did not answer within a second (or this instance's connections were all busy for that long), or a migration of this build is missing", { status: "not_ready", db_connected: true, schema_current: false }),
      },
      detail: {
        ...probe, summary: "Readiness: PostgreSQL answers and the schema is current; 503 otherwise",
        description: "For taking an instance out of the load balancer (and keeping a new one out until it may serve).",
      },
    });
