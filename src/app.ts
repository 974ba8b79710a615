import { Elysia } from "elysia";
import { adminController } from "./admin/controller.ts";
import { tokenVerifier } from "./auth/jwt.ts";
import type { AuthKeys, HashSecrets } from "./auth/keys.ts";
import { claimController } from "./claims/controller.ts";
import { claimKeys } from "./claims/keys.ts";
import { ClaimQueue } from "./claims/queue.ts";
import { claimService } from "./claims/service.ts";
import { coinsController } from "./coins/controller.ts";
import { countWatch } from "./coins/count-watch.ts";
import { coinProblemExamples, exampleCoin } from "./coins/model.ts";
import { coinService } from "./coins/service.ts";
import { StockEvents } from "./coins/stock-events.ts";
import { wireLimits } from "./coins/tiers.ts";
import type { Config } from "./config.ts";
import { Db } from "./db/db.ts";
import { ConnectionGate } from "./db/gate.ts";
import { listMigrations } from "./db/migrate.ts";
import { listen } from "./db/notifications.ts";
import { SESSION_POOL_MAX, type Sql } from "./db/pool.ts";
import { devicesController } from "./devices/controller.ts";
import { deviceCheck } from "./devices/check.ts";
import { deviceService } from "./devices/service.ts";
import { healthController } from "./health/controller.ts";
import { jsonBody } from "./http/body.ts";
import { bodyGate } from "./http/body-gate.ts";
import { withCors } from "./http/cors.ts";
import { docs } from "./http/openapi.ts";
import { problemHandler } from "./http/problems.ts";
import { withRoutableHost } from "./http/host.ts";
import { requestLog } from "./http/request-log.ts";
import { maintenanceSchedule } from "./maintenance/schedule.ts";
import { httpMetrics, metricsController } from "./metrics/controller.ts";
import { createMetrics } from "./metrics/registry.ts";
import { throttle } from "./rate-limit/throttle.ts";

export interface AppDeps {
  sql: Sql;
  config: Config;
  keys: AuthKeys;
  hashSecrets: HashSecrets;
  /**
   * The session pool (SESSION_POOL_MAX connections of its own), for the maintenance lock and
   * LISTEN; behind a transaction-mode pooler, on a direct connection (AQM_DATABASE_DIRECT_URL).
   */
  session: Sql;
  /** Start the maintenance cron jobs with the app (the entry point does; tests mostly don't). */
  maintenance?: boolean;
  /** The clock tokens are checked against, ms (tests move it). */
  now?: () => number;
  /** Keeps a request's connection open for `seconds` (Bun: server.timeout); for requests that wait on purpose. */
  holdOpen?: (request: Request, seconds: number) => void;
}

/**
 * Builds the whole HTTP application. Runtime-neutral: serve `app.fetch` with Bun, or with
 * `Deno.serve(app.fetch)`; Bun-only concerns (embedded PostgreSQL, signals) live in index.ts.
 * `app.decorator.aqm.close()` answers waiting requests and closes the notification listener.
 */
export function createApp({ sql, session, config, keys, hashSecrets, maintenance = false, now, holdOpen }: AppDeps) {
  const metrics = createMetrics();
  const gate = new ConnectionGate(config.AQM_DB_POOL_MAX, config.AQM_DB_POOL_QUEUE_MAX, {
    changed: ({ inUse, waiting }) => {
      metrics.poolInUse.set(inUse);
      metrics.poolWaiting.set(waiting);
    },
    refused: () => metrics.poolRejections.inc(),
  });
  const db = new Db(sql, gate, {
    waitMs: config.AQM_DB_POOL_WAIT_MS, prepare: config.AQM_DB_POOLER === "none",
    late: (statement) => {
      metrics.lateFinishes.inc({ statement });
      console.error(JSON.stringify({ time: new Date().toISOString(), level: "warn", msg: "statement finished after its answer was given up", statement }));
    },
  });
  // the session pool's own gate: a maintenance run holds a connection, the tick and the other job share the rest
  const sessionDb = new Db(session, new ConnectionGate(SESSION_POOL_MAX, 16), { waitMs: config.AQM_DB_POOL_WAIT_MS, prepare: true });
  const quota = config.AQM_RATE_LIMITS === "on" ? config.AQM_PAIR_QUOTA : null;
  const events = new StockEvents((message, ready) => listen(session, "aqm_stock", message, ready, { aliveEveryS: config.AQM_DB_UNRESPONSIVE_S }), (n) => metrics.claimWaiting.set(n));
  const queue = new ClaimQueue(db, {
    quota, maxInFlight: Math.max(1, Math.ceil(config.AQM_DB_POOL_MAX / 2)), maxWaitMs: config.AQM_CLAIM_QUEUE_MAX_MS, // the rest of the pool stays free for uploads and counts
    overlapAfterMs: config.AQM_CLAIM_OVERLAP_MS,
    queued: (n) => metrics.claimQueue.set(n),
    sent: (claims, seconds) => {
      metrics.claimBatch.observe(claims);
      metrics.claimStatement.observe(seconds);
    },
    left: (waited) => metrics.claimQueueWait.observe(waited),
    rerun: (why) => metrics.claimReruns.inc({ why }),
    rerouted: () => {
      metrics.shardMapReloads.inc();
      console.error(JSON.stringify({ time: new Date().toISOString(), level: "warn", msg: "a claim batch spanned two shards (split since the shard map was read): reading it again" }));
    },
    returned: ({ coins, refunded, why, failed }) => {
      metrics.coinsReturned.inc({ why }, coins);
      metrics.quotaRefunded.inc({ why }, refunded);
      if (failed) {
        console.error(JSON.stringify({
          time: new Date().toISOString(), level: "error", msg: "coins of an unanswered claim could not be put back in stock", why, coins: failed.coins, error: String(failed.error),
        }));
      }
    },
  });
  const claims = claimService({
    queue, events, quota, keys: claimKeys(hashSecrets.current, hashSecrets.previous), quotaRejected: () => metrics.quotaRejections.inc(),
  });
  const devices = deviceService(db, config);
  const coins = coinService(db, deviceCheck(devices, config.AQM_VERIFY_SIGNATURES));
  const verify = tokenVerifier(keys, { requireExp: config.AQM_JWT_REQUIRE_EXP === "on", maxTtlS: config.AQM_JWT_MAX_TTL_S, now });
  const rateLimit = throttle(config, (group) => metrics.rateLimited.inc({ group }));
  const claimBoundMs = config.AQM_DB_POOL_WAIT_MS + 250;

  const app = new Elysia({ normalize: false }) // unknown properties are a 422, not silently dropped
    // close: answer waiting requests; settle: wait (bounded) for claim statements and coin returns in progress
    .decorate("aqm", { close: () => events.close(), settle: (ms: number) => queue.settle(ms) })
    .use(requestLog(config.AQM_LOG === "on"))
    .use(httpMetrics(metrics))
    .use(problemHandler)
    .use(bodyGate(config.AQM_DB_POOL_MAX * 2, config.AQM_DB_POOL_WAIT_MS, ["/v1/coins/upload", "/v1/coins/last-resort"], {
      refused: () => metrics.bodyRejections.inc(),
    }))
    .use(jsonBody(wireLimits.requestBodyBytes))
    .use(docs({ problemExamples: coinProblemExamples, upload: { path: "/v1/coins/upload", exampleKeyIds: [exampleCoin.key_id] } }))
    .use(healthController(db, listMigrations()))
    .use(metricsController({ metrics, verify, token: config.AQM_METRICS_TOKEN, available: () => coins.availableByTier() }))
    .use(coinsController({ coins, countWatch: countWatch({ db, coins, events, claimBoundMs }), verify, throttle: rateLimit, metrics, config, holdOpen }))
    .use(claimController({ claims, verify, throttle: rateLimit, metrics, holdOpen }))
    .use(devicesController({ devices, verify, throttle: rateLimit }))
    .use(adminController({ session: sessionDb, config, verify, throttle: rateLimit, metrics }));
  const built = maintenance ? app.use(maintenanceSchedule({ db: sessionDb, config, metrics })) : app;
  // app.fetch (and app.handle, which calls it) route every request, whatever its Host header, with CORS when configured
  Object.defineProperty(built, "fetch", { value: withCors(withRoutableHost(built.fetch), config.AQM_CORS_ORIGINS), configurable: true, writable: true });
  return built;
}

export type App = ReturnType<typeof createApp>;
