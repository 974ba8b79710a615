import { Elysia } from "elysia";
import { adminController } from "./admin/controller.ts";
import { tokenVerifier } from "./auth/jwt.ts";
import type { AuthKeys } from "./auth/keys.ts";
import { coinsController } from "./coins/controller.ts";
import { coinService } from "./coins/service.ts";
import type { Config } from "./config.ts";
import type { Sql } from "./db/pool.ts";
import { healthController } from "./health/controller.ts";
import { docs } from "./http/openapi.ts";
import { problems } from "./http/problem.ts";
import { requestLog } from "./http/request-log.ts";
import { pairQuota } from "./limits/pair-quota.ts";
import { rateLimiter } from "./limits/rate-limit.ts";

export interface AppDeps {
  sql: Sql;
  config: Config;
  keys: AuthKeys;
}

/**
 * Builds the whole HTTP application. Runtime-neutral: serve `app.fetch` with Bun, or with
 * `Deno.serve(app.fetch)`; Bun-only concerns (embedded PostgreSQL, signals) live in index.ts.
 */
export function createApp({ sql, config, keys }: AppDeps) {
  const coins = coinService(sql);
  const verify = tokenVerifier(keys);
  const limit = rateLimiter(config);
  const quota = config.AQM_RATE_LIMITS === "on" ? pairQuota(sql, config.AQM_PAIR_QUOTA) : undefined;
  // normalize: false — unknown properties are rejected (422), not silently dropped: a typo in
  // an admin parameter must not run a purge with the default.
  return new Elysia({ normalize: false })
    .use(requestLog(config.AQM_LOG === "on"))
    .use(problems)
    .use(docs)
    .use(healthController(sql))
    .use(coinsController({ coins, quota, verify, limit, config }))
    .use(adminController({ coins, quota, verify, limit }));
}

export type App = ReturnType<typeof createApp>;
