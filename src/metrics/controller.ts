import { Elysia, t } from "elysia";
import { requireAdmin, type TokenVerifier } from "../auth/jwt.ts";
import { tiers, type Tier } from "../coins/tiers.ts";
import { UnauthorizedError } from "../errors.ts";
import { problemResponses } from "../http/openapi.ts";
import { requestInfo } from "../http/request-log.ts";
import type { Metrics } from "./registry.ts";
import { timingSafeEqual } from "node:crypto";

const AVAILABLE_TTL_MS = 60_000;

/** The available-coins gauge, recomputed at most once a minute. */
function availableCoins(read: () => Promise<Record<Tier, number>>, metrics: Metrics) {
  let refreshed = 0;
  return async () => {
    if (performance.now() - refreshed < AVAILABLE_TTL_MS && refreshed > 0) return;
    refreshed = performance.now();
    const counts = await read();
    for (const tier of tiers) metrics.available.set({ tier }, counts[tier]);
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
    const { method } = request;
    const path = route || "(unmatched)";
    const status = typeof set.status === "number" ? set.status : 200;
    const key = `${method} ${status} ${path}`;
    const labels = () => ({ method, route: path, status: String(status) });
    metrics.requests.inc(key, labels);
    metrics.latency.observe((performance.now() - info.start) / 1000, key, labels);
  });

/** GET /metrics: Prometheus text; needs AQM_METRICS_TOKEN or an admin-scoped JWT. */
export interface MetricsDeps {
  metrics: Metrics;
  verify: TokenVerifier;
  token: string;
  /** Unclaimed coins per tier (through the coins service and the gate). */
  available: () => Promise<Record<Tier, number>>;
}

export const metricsController = ({ metrics, verify, token, available }: MetricsDeps) => {
  const refreshAvailable = availableCoins(available, metrics);
  return new Elysia().get("/metrics", async ({ headers, set }) => {
    const given = headers.authorization?.match(/^Bearer +(.+?) *$/i)?.[1];
    if (!given) throw new UnauthorizedError("Send Authorization: Bearer <metrics token or admin JWT>");
    if (!(token && sameSecret(given, token))) requireAdmin(await verify(headers.authorization));
    await refreshAvailable().catch(() => {}); // the other metrics are still worth serving
    set.headers["content-type"] = metrics.registry.contentType;
    set.headers["cache-control"] = "no-store";
    return metrics.registry.metrics();
  }, {
    headers: t.Object({ authorization: t.Optional(t.String()) }),
    response: {
      200: t.String({
        description: "Prometheus text exposition format",
        examples: ["# HELP aqm_coins_uploaded_total Coins stored by uploads\n# TYPE aqm_coins_uploaded_total counter\naqm_coins_uploaded_total{tier=\"BRONZE\"} 16\n"],
      }),
      ...problemResponses(401, 403),
    },
    detail: { tags: ["health"], summary: "Prometheus metrics (AQM_METRICS_TOKEN or admin scope)" },
  });
};
