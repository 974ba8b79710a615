import { Counter, Gauge, Registry, collectDefaultMetrics } from "prom-client";
import type { ServedCoin } from "../coins/model.ts";
import { tiers, type Tier, type TierCounts } from "../coins/tiers.ts";
import { FastCounter, FastGauge, FastHistogram } from "./series.ts";

/** Bounds of the claim path's duration histograms, seconds. */
const claimSeconds = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/** Every metric of one app instance, in its own registry (tests build many apps in one process). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: "aqm_" });
  const registers = [registry];
  const tier = ["tier"] as const;
  return {
    registry,
    // (method, route, status): FastCounter and FastHistogram (series.ts), as are the per-claim ones
    requests: new FastCounter("aqm_http_requests_total", "HTTP requests by route and status", registers, false),
    latency: new FastHistogram("aqm_http_request_duration_seconds", "HTTP request duration by route and status", registers, false,
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]),
    uploaded: new Counter({ name: "aqm_coins_uploaded_total", help: "Coins stored by uploads", labelNames: tier, registers }),
    claimed: new FastCounter("aqm_coins_claimed_total", "Coins handed out by claims", registers, false),
    claimsShort: new FastCounter("aqm_claims_short_total", "Claims that returned fewer coins than asked (including none)", registers, false),
    claimsEmpty: new FastCounter("aqm_claims_empty_total", "Claims that returned no coin", registers, false),
    rateLimited: new Counter({ name: "aqm_rate_limited_total", help: "Requests refused by a per-user rate limit", labelNames: ["group"], registers }),
    quotaRejections: new Counter({ name: "aqm_pair_quota_rejections_total", help: "Fetches refused because the pair quota was spent", registers }),
    poolInUse: new FastGauge("aqm_db_pool_in_use", "Database connections held by requests", registers),
    poolWaiting: new FastGauge("aqm_db_pool_waiting", "Requests waiting for a database connection", registers),
    bodyRejections: new Counter({
      name: "aqm_body_gate_rejections_total", registers,
      help: "Uploads answered 503 because too many upload bodies were being processed and none finished in time",
    }),
    poolRejections: new Counter({ name: "aqm_db_pool_rejections_total", help: "Requests answered 503 because no connection was free in time", registers }),
    maintenanceDeleted: new Counter({ name: "aqm_maintenance_deleted_total", help: "Rows deleted by maintenance jobs", labelNames: ["job"], registers }),
    maintenanceRuns: new Counter({ name: "aqm_maintenance_runs_total", help: "Maintenance runs by result (ok, skipped, error)", labelNames: ["job", "result"], registers }),
    claimQueue: new FastGauge("aqm_claim_queue", "Claims waiting for the next claim statement", registers),
    claimBatch: new FastHistogram("aqm_claim_batch_size", "Claims served by one claim statement", registers, true, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]),
    claimStatement: new FastHistogram("aqm_claim_statement_seconds", "Duration of a claim statement (gate wait, execution, commit)", registers, true, claimSeconds),
    claimQueueWait: new FastHistogram("aqm_claim_queue_seconds", "Time a claim waited in the server's queue until its first claim statement left", registers, true, claimSeconds),
    shardMapReloads: new Counter({
      name: "aqm_claim_shard_map_reloads_total", registers,
      help: "Citus refused a claim batch whose owners spanned two shards (the shards were split since the map was read): the map was read again",
    }),
    claimReruns: new Counter({
      name: "aqm_claim_statement_reruns_total", labelNames: ["why"], registers,
      help: "Claim statements rolled back by a concurrent one (deadlock, serialization, coin_moved: a coin claimed and given back during the statement), whose claims ran again",
    }),
    claimWaiting: new Gauge({ name: "aqm_claim_waiting", help: "Claims and count long-polls waiting for a stock change (wait_ms)", registers }),
    lateFinishes: new Counter({
      name: "aqm_db_late_finishes_total", labelNames: ["statement"], registers,
      help: "Statements that finished after their answer was given up (a claim's coins then go back in stock: aqm_claim_coins_returned_total)",
    }),
    coinsReturned: new Counter({
      name: "aqm_claim_coins_returned_total", labelNames: ["why"], registers,
      help: "Coins put back in stock because their claim was never answered with them (late: finished after its 503; gone: the client left; failed: its result could not be read)",
    }),
    quotaRefunded: new Counter({
      name: "aqm_claim_quota_refunded_total", labelNames: ["why"], registers,
      help: "Pair-quota coins given back with those returns, last-resort coins included",
    }),
    available: new Gauge({ name: "aqm_coins_available", help: "Unclaimed coins per tier (refreshed at most once a minute)", labelNames: tier, registers }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

const tierLabels = Object.fromEntries(tiers.map((tier) => [tier, () => ({ tier })])) as Record<Tier, () => { tier: Tier }>;

/** One answered claim: coins by their tier; short and empty by the tiers asked for. */
export function countClaim(metrics: Metrics | undefined, want: TierCounts, coins: ServedCoin[], short: TierCounts): void {
  if (!metrics) return;
  for (const coin of coins) metrics.claimed.inc(coin.coin_category, tierLabels[coin.coin_category]);
  tiers.forEach((tier, i) => {
    if (want[i]! > 0 && short[i]! > 0) metrics.claimsShort.inc(tier, tierLabels[tier]);
    if (want[i]! > 0 && coins.length === 0) metrics.claimsEmpty.inc(tier, tierLabels[tier]);
  });
}
