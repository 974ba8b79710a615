import type { ConnectionGate } from "../db/gate.ts";
import type { Sql } from "../db/pool.ts";
import { UnavailableError } from "../errors.ts";
import type { Coin, Tier } from "./model.ts";
import { coinColumns, mapped } from "./service.ts";

export interface ClaimRequest {
  target: string;
  requester: string;
  tier: Tier;
  count: number;
}

/**
 * Claims for many requests in one statement and one commit. Requests for the same target and
 * tier share ONE sub-claim (a single `LIMIT total FOR UPDATE SKIP LOCKED` scan) whose rows are
 * then split between them in request order: SKIP LOCKED does not skip rows locked by the same
 * statement, so two separate sub-claims for one target and tier could pick the same rows.
 * Returns each request's coins, oldest first.
 */
export async function claimBatch(sql: Sql, requests: ClaimRequest[]): Promise<Coin[][]> {
  const rows = await mapped(sql<(Coin & { idx: number; record_id: string })[]>`
    WITH req AS (
      SELECT idx, target, tier, requester, n,
             sum(n) OVER (PARTITION BY target, tier ORDER BY idx) - n AS lo
      FROM unnest(${requests.map((_, i) => i)}::int[], ${requests.map((r) => r.target)}::uuid[],
                  ${requests.map((r) => r.tier)}::text[], ${requests.map((r) => r.requester)}::uuid[],
                  ${requests.map((r) => r.count)}::int[]) AS r(idx, target, tier, requester, n)
    ), grp AS (
      SELECT target, tier, sum(n) AS total FROM req GROUP BY target, tier
    ), picked AS (
      SELECT p.record_id, g.target, g.tier,
             row_number() OVER (PARTITION BY g.target, g.tier ORDER BY p.record_id) AS rn
      FROM grp g CROSS JOIN LATERAL (
        SELECT record_id FROM coin_inventory
        WHERE user_id = g.target AND coin_category = g.tier AND fetched_at IS NULL
        ORDER BY record_id
        LIMIT g.total
        FOR UPDATE SKIP LOCKED
      ) p
    ), assigned AS (
      SELECT p.record_id, r.idx, r.requester FROM picked p
      JOIN req r ON r.target = p.target AND r.tier = p.tier AND p.rn > r.lo AND p.rn <= r.lo + r.n
    )
    UPDATE coin_inventory c SET fetched_by = a.requester, fetched_at = now()
    FROM assigned a WHERE c.record_id = a.record_id
    RETURNING a.idx, c.record_id, ${coinColumns(sql)}`);
  const out: (Coin & { record_id: string })[][] = requests.map(() => []);
  for (const { idx, record_id, key_id, coin_category, public_key_b64, signature_b64 } of rows) {
    out[idx]!.push({ record_id, key_id, coin_category, public_key_b64, signature_b64 });
  }
  return out.map((coins) => coins
    .sort((a, b) => (BigInt(a.record_id) < BigInt(b.record_id) ? -1 : 1))
    .map(({ key_id, coin_category, public_key_b64, signature_b64 }) => ({ key_id, coin_category, public_key_b64, signature_b64 })));
}

interface Pending extends ClaimRequest {
  resolve: (coins: Coin[]) => void;
  reject: (error: unknown) => void;
}

/**
 * Merges claims that arrive while earlier ones are at the database into one statement. At low
 * load a claim goes out at once (alone); under load, claims queue behind the `maxInFlight`
 * statements already running and leave together with the next one — no timer, no added delay.
 * Each statement passes the connection gate, so pool limits and 503s apply per statement.
 */
export class ClaimCoalescer {
  private queue: Pending[] = [];
  private inFlight = 0;

  constructor(
    private readonly sql: Sql,
    private readonly gate: ConnectionGate,
    private readonly maxInFlight: number,
    private readonly maxBatch = 512,
    private readonly maxQueued = 20_000,
  ) {}

  claim(target: string, requester: string, tier: Tier, count: number): Promise<Coin[]> {
    if (this.queue.length >= this.maxQueued) return Promise.reject(new UnavailableError("The server is at capacity; retry shortly"));
    return new Promise((resolve, reject) => {
      this.queue.push({ target, requester, tier, count, resolve, reject });
      if (this.queue.length === 1) queueMicrotask(() => this.pump()); // gather same-tick arrivals
    });
  }

  private pump(): void {
    while (this.inFlight < this.maxInFlight && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      this.gate.run(() => claimBatch(this.sql, batch))
        .then((results) => batch.forEach((p, i) => p.resolve(results[i]!)), (error) => batch.forEach((p) => p.reject(error)))
        .finally(() => {
          this.inFlight--;
          this.pump();
        });
    }
  }
}
