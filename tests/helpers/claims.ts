import { claimQuery, type ClaimItem } from "../../src/claims/batch.ts";
import { ensureParams } from "../../src/claims/ensure.ts";
import { claimKeys } from "../../src/claims/keys.ts";
import { ClaimQueue } from "../../src/claims/queue.ts";
import { claimService, type ClaimRequest } from "../../src/claims/service.ts";
import { coinService } from "../../src/coins/service.ts";
import { StockEvents } from "../../src/coins/stock-events.ts";
import type { Config } from "../../src/config.ts";
import { deviceCheck } from "../../src/devices/check.ts";
import { deviceService } from "../../src/devices/service.ts";
import { tiers, type Tier, type TierCounts } from "../../src/coins/tiers.ts";
import { Db } from "../../src/db/db.ts";
import { ConnectionGate } from "../../src/db/gate.ts";
import { listen } from "../../src/db/notifications.ts";
import type { Sql } from "../../src/db/pool.ts";
import { testHashSecrets } from "./app.ts";
import { isCitus, sessionFor } from "./db.ts";

/**
 * One claim statement for `items`, as the queue sends it: on one PostgreSQL the statement alone;
 * on Citus (tests/citus/suite.ts) the routed shape, the rows it updates created first (the items'
 * owners must then be one shard's).
 */
export async function claimRows(sql: Sql, items: ClaimItem[], quota: number | null) {
  const ensure = isCitus() ? ensureParams(items, quota !== null) : null;
  if (ensure) await sql.unsafe(ensure.text, ensure.params as never[]);
  return claimQuery(sql, items, quota, true, isCitus());
}

/** The coin service as the app composes it (devices created on first upload; signatures checked for devices with keys). */
export function testCoins(db: Db, config: Partial<Pick<Config, "AQM_MAX_DEVICES" | "AQM_VERIFY_SIGNATURES">> = {}) {
  const devices = deviceService(db, { AQM_MAX_DEVICES: config.AQM_MAX_DEVICES ?? 10 });
  return coinService(db, deviceCheck(devices, config.AQM_VERIFY_SIGNATURES ?? "registered"));
}

/** The database layer the services run on: a gate as wide as the pool, generous deadlines. */
export function testDb(sql: Sql, { size = 10, waitMs = 10_000 } = {}): Db {
  return new Db(sql, new ConnectionGate(size, 100_000), { waitMs, prepare: true });
}

export interface TestClaimsOptions {
  /** The pair quota; null (default): off. */
  quota?: number | null;
  maxInFlight?: number;
  /** One PostgreSQL: a further statement only once those in flight ran this long (AQM_CLAIM_OVERLAP_MS; default 0). */
  overlapAfterMs?: number;
  size?: number;
  waitMs?: number;
  /** Listen for stock changes (waits across instances). */
  listens?: boolean;
}

/** The claim path as the app composes it: service, coalescing queue, keyed hashes, stock events. */
export function testClaims(sql: Sql, { quota = null, maxInFlight = 2, overlapAfterMs, size = 10, waitMs, listens = false }: TestClaimsOptions = {}) {
  const db = testDb(sql, { size, waitMs });
  const queue = new ClaimQueue(db, { quota, maxInFlight, overlapAfterMs, maxWaitMs: 30_000 });
  const events = new StockEvents(listens ? (message, ready) => listen(sessionFor(sql), "aqm_stock", message, ready) : undefined);
  const claims = claimService({ queue, events, quota, keys: claimKeys(testHashSecrets.current) });
  return {
    db, queue, events, claims,
    claim: (request: Partial<ClaimRequest> & Pick<ClaimRequest, "requester" | "target" | "want">) =>
      claims.claim({ fallback: true, allowLastResort: false, waitMs: 0, ...request }),
    /** GET /v1/coins/fetch's claim: one tier, no fallback. */
    async fetch(target: string, requester: string, tier: Tier, count: number) {
      const want: TierCounts = [0, 0, 0];
      want[tiers.indexOf(tier)] = count;
      return (await claims.claim({ requester, target, want, fallback: false, allowLastResort: false, waitMs: 0 })).coins;
    },
  };
}
