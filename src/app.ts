import { Elysia } from "elysia";
import { adminController } from "./admin/controller.ts";
import { tokenVerifier } from "./auth/jwt.ts";
import type { AuthKeys } from "./auth/keys.ts";
import { coinsController } from "./coins/controller.ts";
import { ClaimCoalescer } from "./coins/claim-batch.ts";
import { coinService } from "./coins/service.ts";
import type { Config } from "./config.ts";
import { ConnectionGate, gated } from "./db/gate.ts";
import type { Sql } from "./db/pool.ts";
import { healthController } from "./health/controller.ts";
import { docs } from "./http/openapi.ts";
import { problems } from "./http/problem.ts";
import { requestLog } from "./http/request-log.ts";
import { pairQuota } from "./limits/pair-quota.ts";
import { rateLimiter } from "./limits/rate-limit.ts";
import { maintenanceSchedule } from "./maintenance/schedule.ts";
import { httpMetrics, metricsController } from "./metrics/controller.ts";
import { createMetrics } from "./metrics/registry.ts";

export interface AppDeps {
  sql: Sql;
  config: Config;
  keys: AuthKeys;
  /** Start the maintenance cron jobs with the app (the entry point does; tests mostly don't). */
  maintenance?: boolean;
}

/**
 * Builds the whole HTTP application. Runtime-neutral: serve `app.fetch` with Bun, or with
 * `Deno.serve(app.fetch)`; Bun-only concerns (embedded PostgreSQL, signals) live in index.ts.
 */
export function createApp({ sql, config, keys, maintenance = false }: AppDeps) {
  const metrics = createMetrics();
  const gate = new ConnectionGate(config.AQM_DB_POOL_MAX, config.AQM_DB_POOL_WAIT_MS, config.AQM_DB_POOL_QUEUE_MAX, metrics);
  const coins = coinService(sql);
  const quota = config.AQM_RATE_LIMITS === "on" ? pairQuota(sql, config.AQM_PAIR_QUOTA, metrics) : undefined;
  const verify = tokenVerifier(keys);
  const limit = rateLimiter(config, metrics);
  const gatedCoins = gated(gate, coins);
  if (config.AQM_CLAIM_COALESCING === "on") {
    // Half the pool for claim statements, the rest stays free for uploads and counts.
    const coalescer = new ClaimCoalescer(sql, gate, Math.max(1, Math.ceil(config.AQM_DB_POOL_MAX / 2)));
    gatedCoins.fetchCoins = (target, requester, tier, count) => coalescer.claim(target, requester, tier, count);
  }
  const routeDeps = { coins: gatedCoins, quota: quota && gated(gate, quota), verify, limit, metrics };

  const app = new Elysia({ normalize: false }) // unknown properties are a 422, not silently dropped
    .use(requestLog(config.AQM_LOG === "on"))
    .use(httpMetrics(metrics))
    .use(problems)
    .use(docs)
    .use(healthController(sql))
    .use(metricsController({ sql, metrics, verify, token: config.AQM_METRICS_TOKEN }))
    .use(coinsController({ ...routeDeps, config }))
    .use(adminController(routeDeps));
  return maintenance ? app.use(maintenanceSchedule({ sql, config, metrics })) : app;
}

export type App = ReturnType<typeof createApp>;
