import { randomBytes, randomUUID } from "node:crypto";
import { signToken } from "../src/auth/jwt.ts";
import { claimQuery, outcomesOf, type ClaimItem, type ClaimOutcome, deviceOne } from "../src/claims/batch.ts";
import { claimKeys } from "../src/claims/keys.ts";
import type { TierCounts } from "../src/coins/tiers.ts";
import { settings } from "../src/config.ts";
import type { Sql } from "../src/db/pool.ts";
import { randomOf, rotation, type ClaimLedger, type Population } from "./client.ts";
import { Recorder, type Stats } from "./load.ts";
import { tiers } from "./seed.ts";

/** The pair quota the `default` server runs with: AQM_PAIR_QUOTA from the environment (it reaches the servers too), else the default. */
export const pairQuota = Number(process.env.AQM_PAIR_QUOTA ?? settings.AQM_PAIR_QUOTA.default);

/**
 * Statements at once of the batched ceiling (issue 21's definition, kept since the servers send
 * one at a time): ceil(pool / 2), what the servers sent until 2026-12-05 — PostgreSQL's best of the two.
 */
export const statementsInFlight = (pool: number) => Math.max(1, Math.ceil(pool / 2));

/**
 * Claim statements a server on one PostgreSQL sends at once under the bench's load, whose
 * statements take far less than AQM_CLAIM_OVERLAP_MS (from the environment, it reaches the
 * servers; 50 by default): one, or ceil(pool / 2) when that is 0 (src/claims/queue.ts).
 */
export const serverStatementsInFlight = (pool: number) =>
  Number(process.env.AQM_CLAIM_OVERLAP_MS ?? settings.AQM_CLAIM_OVERLAP_MS.default) > 0 ? 1 : statementsInFlight(pool);

/** What one claim statement did, per claim. */
interface Statement {
  claims: number;
  ok: number;
  coins: number;
  short: number;
  /** Claims not served, by status ("retry", "quota", or the error that failed the statement). */
  failed: Record<string, number>;
}

export interface CeilingStats extends Stats {
  statementsPerS: number;
  claimsPerStatement: number;
  /** Statements running at once on average (their summed time ÷ the segment's). */
  statementsInFlight: number;
  /** Claims inside a statement on average (each claim's statement time, summed, ÷ the segment's). */
  claimsInStatements: number;
  /** Mean statement time, ms. */
  statementMs: number;
}

/**
 * The coalesced ceiling: the server's own claim statement (claimQuery), B fetch-style claims per
 * statement (one tier, count coins, no fallback, no last resort), sent straight through
 * postgres.js. Targets and tiers go round robin as in the HTTP load, requesters at random. With
 * the quota on, each claim carries a pair key derived from (requester, target) under a secret of
 * its own (so its quota rows are not the servers'), and a statement holds at most one claim per
 * pair, as the server's queue makes it.
 */
export function coalescedClaims(sql: Sql, pop: Population, count: number, quota: number | null, batch: number, ledger: ClaimLedger): () => Promise<Statement> {
  const next = rotation(pop.targets, tiers);
  const keys = claimKeys(randomBytes(32));
  return async () => {
    const items: ClaimItem[] = [];
    const pairs = new Set<string>();
    while (items.length < batch) {
      const { target, tier } = next();
      let requester = randomOf(pop.requesters);
      let pair: string | null = null;
      if (quota !== null) {
        for (pair = keys.pair(requester, target)[0]; pairs.has(pair); pair = keys.pair(requester, target)[0]) requester = randomOf(pop.requesters);
        pairs.add(pair);
      }
      const want: TierCounts = [0, 0, 0];
      want[tiers.indexOf(tier)] = count;
      items.push({ target, requester, want, fallback: false, lastResort: false, final: true, pair, pairPrev: null, ref: null, refPrev: null, body: null, ...deviceOne });
    }
    const result: Statement = { claims: items.length, ok: 0, coins: 0, short: 0, failed: {} };
    try {
      const outcomes = outcomesOf(await claimQuery(sql, items, quota), items.length);
      outcomes.forEach((outcome: ClaimOutcome | undefined, i) => {
        if (outcome?.status !== "ok") {
          const why = outcome?.status ?? "no status row";
          result.failed[why] = (result.failed[why] ?? 0) + 1;
          return;
        }
        for (const coin of outcome.coins) ledger.add(items[i]!.target, coin.key_id);
        result.ok++;
        result.coins += outcome.coins.length;
        if (outcome.coins.length < count) result.short++;
      });
    } catch (error) {
      result.failed[(error as Error).message] = items.length;
    }
    return result;
  };
}

/**
 * `workers` connections, each sending its next statement as soon as the previous one is answered.
 * Claims are counted, not statements: requests, errors, short, reqPerS and coins are per claim;
 * the latencies are per statement (what each claim in it waited, without the server's queue).
 * Stops early once `maxClaims` claims were answered (each worker may send one statement more).
 */
export async function closedBatches(run: () => Promise<Statement>, workers: number, durationS: number, maxClaims = Infinity): Promise<CeilingStats> {
  const latencies = new Recorder();
  const totals: Statement = { claims: 0, ok: 0, coins: 0, short: 0, failed: {} };
  let statements = 0;
  let statementMs = 0;
  let claimMs = 0;
  const start = performance.now();
  const end = start + durationS * 1000;
  const worker = async () => {
    while (performance.now() < end && totals.claims < maxClaims) {
      const at = performance.now();
      const s = await run();
      const took = performance.now() - at;
      latencies.record(took, { ok: s.ok > 0, coins: s.coins });
      statements++;
      statementMs += took;
      claimMs += took * s.claims;
      totals.claims += s.claims;
      totals.ok += s.ok;
      totals.coins += s.coins;
      totals.short += s.short;
      for (const [why, n] of Object.entries(s.failed)) totals.failed[why] = (totals.failed[why] ?? 0) + n;
    }
  };
  await Promise.all(Array.from({ length: workers }, worker));
  const elapsedS = (performance.now() - start) / 1000;
  const round = (x: number) => Math.round(x * 100) / 100;
  return {
    ...latencies.stats(elapsedS),
    requests: totals.claims, errors: totals.claims - totals.ok, errorKinds: totals.failed, short: totals.short, coins: totals.coins,
    reqPerS: round(totals.ok / elapsedS), coinsPerS: round(totals.coins / elapsedS),
    statementsPerS: round(statements / elapsedS), claimsPerStatement: round(totals.claims / Math.max(1, statements)),
    statementsInFlight: round(statementMs / 1000 / elapsedS), claimsInStatements: round(claimMs / 1000 / elapsedS),
    statementMs: round(statementMs / Math.max(1, statements)),
  };
}

/** A server's claim statements over a segment, from its /metrics (Little's law: claims inside statements = claims/s × the time each spends in one). */
export interface StatementProbe {
  /** Mean claims per statement (aqm_claim_batch_size). */
  claimsPerStatement: number;
  /** Statements running at once on average: their summed duration (aqm_claim_statement_seconds) ÷ the probe's wall time. */
  statementsInFlight: number;
  /** Mean statement duration, ms (gate wait, execution, commit). */
  statementMs: number;
  /** Mean time a claim waited in the queue until its first statement left (aqm_claim_queue_seconds), ms; null: an older server without it. */
  queueMs: number | null;
}

const series = (text: string, name: string) => {
  const value = text.match(new RegExp(`^${name}(?:\\{\\})? (\\S+)`, "m"))?.[1];
  return value === undefined ? undefined : Number(value);
};

/**
 * Reads a server's claim histograms (GET /metrics, admin token) at start and at stop: what its
 * claim statements did in between, or null when /metrics could not be read (not measured) or it
 * sent no statement.
 */
export async function startBatchProbe(baseUrl: string, secret: string): Promise<{ stop(): Promise<StatementProbe | null> }> {
  const token = await signToken(new TextEncoder().encode(secret), randomUUID(), { admin: true, ttlSeconds: 3600 });
  const read = async () => {
    const text = await fetch(`${baseUrl}/metrics`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(10_000) })
      .then((r) => (r.ok ? r.text() : ""), () => "");
    const at = performance.now();
    const [claims, statements, seconds] = ["aqm_claim_batch_size_sum", "aqm_claim_batch_size_count", "aqm_claim_statement_seconds_sum"].map((n) => series(text, n));
    if (claims === undefined || statements === undefined || seconds === undefined) return undefined;
    return { at, claims, statements, seconds, waited: series(text, "aqm_claim_queue_seconds_sum"), waits: series(text, "aqm_claim_queue_seconds_count") };
  };
  const before = await read();
  return {
    async stop() {
      const after = await read();
      if (!before || !after || after.statements <= before.statements) return null;
      const round = (x: number) => Math.round(x * 100) / 100;
      const statements = after.statements - before.statements;
      const waits = (after.waits ?? 0) - (before.waits ?? 0);
      return {
        claimsPerStatement: round((after.claims - before.claims) / statements),
        statementsInFlight: round((after.seconds - before.seconds) / ((after.at - before.at) / 1000)),
        statementMs: round(((after.seconds - before.seconds) * 1000) / statements),
        queueMs: after.waited === undefined || before.waited === undefined || waits <= 0 ? null : round(((after.waited - before.waited) * 1000) / waits),
      };
    },
  };
}
