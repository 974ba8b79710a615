import { Elysia, t } from "elysia";
import { requireAdmin, type TokenVerifier } from "../auth/jwt.ts";
import type { Tier } from "../coins/model.ts";
import type { Sql } from "../db/pool.ts";
import { UnauthorizedError } from "../errors.ts";
import { problems } from "../http/openapi.ts";
import { requestInfo } from "../http/request-log.ts";
import type { Metrics } from "./registry.ts";
import { timingSafeEqual } from "node:crypto";

const AVAILABLE_TTL_MS = 60_000;

/** Unclaimed coins per tier, from the partial index; recomputed at most once a minute. */
function availableCoins(sql: Sql, metrics: Metrics) {
  let refreshed = 0;
  return async () => {
    if (performance.now() - refreshed < AVAILABLE_TTL_MS && refreshed > 0) return;
    refreshed = performance.now();
    const rows = await sql<{ tier: Tier; n: number }[]>`
      SELECT coin_category AS tier, count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NULL GROUP BY 1`;
    metrics.available.reset();
    for (const tier of ["GOLD", "SILVER", "BRONZE"] as const) metrics.available.set({ tier }, rows.find((r) => r.tier === tier)?.n ?? 0);
  };
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Request counts and latency for every answered request, labelled by route pattern. */
export const httpMetrics = (metrics: Metrics) =>
  new Elysia({ name: "http-metrics" }).onAfterResponse({ as: "global" }, ({ request, route, set }) => {
    const info = requestInfo(request);
    if (!info || info.measured) return;
    info.measured = true;
    const labels = { method: request.method, route: route || "(unmatched)", status: String(typeof set.status === "number" ? set.status : 200) };
    metrics.requests.inc(labels);
    metrics.latency.observe(labels, (performance.now() - info.start) / 1000);
  });

/** GET /metrics: Prometheus text; needs AQM_METRICS_TOKEN or an admin-scoped JWT. */
export const metricsController = ({ sql, metrics, verify, token }: { sql: Sql; metrics: Metrics; verify: TokenVerifier; token: string }) => {
  const refreshAvailable = availableCoins(sql, metrics);
  return new Elysia().get("/metrics", async ({ headers, set }) => {
    const given = headers.authorization?.match(/^Bearer (.+)$/)?.[1];
    if (!given) throw new UnauthorizedError("Send Authorization: Bearer <metrics token or admin JWT>");
    if (!(token && sameSecret(given, token))) requireAdmin(await verify(headers.authorization));
    await refreshAvailable().catch(() => {}); // the other metrics are still worth serving
    set.headers["content-type"] = metrics.registry.contentType;
    set.headers["cache-control"] = "no-store";
    return metrics.registry.metrics();
  }, {
    headers: t.Object({ authorization: t.Optional(t.String()) }),
    response: { 200: t.String({ description: "Prometheus text exposition format" }), ...problems(401, 403) },
    detail: { tags: ["health"], summary: "Prometheus metrics (AQM_METRICS_TOKEN or admin scope)" },
  });
};
