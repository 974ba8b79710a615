import { Elysia, t } from "elysia";
import { healthCheck, type Sql } from "../db/pool.ts";

const Health = t.Object({
  status: t.Union([t.Literal("ok"), t.Literal("degraded")]),
  db_connected: t.Boolean(),
});

export const healthController = (sql: Sql) =>
  new Elysia({ name: "health" }).get("/v1/health", async ({ set }) => {
    const db_connected = await healthCheck(sql, 800); // answered within a second, reachable or not
    set.headers["cache-control"] = "no-store";
    if (db_connected) return { status: "ok" as const, db_connected };
    set.status = 503;
    set.headers["retry-after"] = "1";
    return { status: "degraded" as const, db_connected };
  }, {
    response: { 200: Health, 503: Health },
    detail: { summary: "Liveness and database reachability", tags: ["health"], security: [] },
  });
