import { claimCoins } from "../coins/service.ts";
import type { Coin, Tier } from "../coins/model.ts";
import type { Sql } from "../db/pool.ts";
import { RateLimitedError } from "../errors.ts";
import type { Metrics } from "../metrics/registry.ts";

export interface QuotaClaim {
  coins: Coin[];
  /** Coins the requester may still claim of this target in the current window. */
  remaining: number;
}

/**
 * The exhaustion quota: one requester may claim at most `limit` coins of one target per rolling
 * 24 h (hourly buckets in claim_quota). Each claim runs in one short transaction holding an
 * advisory lock on the pair, so concurrent fetches of the same pair cannot overspend it.
 */
export function pairQuota(sql: Sql, limit: number, metrics?: Metrics) {
  return {
    async claim(targetUserId: string, requesterId: string, tier: Tier, count: number): Promise<QuotaClaim> {
      return sql.begin(async (tx) => {
        const q = tx as unknown as Sql;
        await q`SELECT pg_advisory_xact_lock(hashtextextended(${requesterId}::uuid::text || ${targetUserId}::uuid::text, 0))`;
        const [usage] = await q<{ used: number; oldest: Date | null }[]>`
          SELECT coalesce(sum(claimed), 0)::int AS used, min(hour) AS oldest FROM claim_quota
          WHERE requester_id = ${requesterId}::uuid AND target_id = ${targetUserId}::uuid
            AND hour > now() - interval '25 hours'`;
        const remaining = limit - usage!.used;
        if (remaining <= 0) {
          const freesAt = (usage!.oldest?.getTime() ?? Date.now()) + 25 * 3600_000;
          const retryAfter = Math.max(1, Math.ceil((freesAt - Date.now()) / 1000));
          metrics?.quotaRejections.inc();
          throw new RateLimitedError(`At most ${limit} coins of one user may be claimed per 24 hours`, retryAfter);
        }
        const coins = await claimCoins(q, targetUserId, requesterId, tier, Math.min(count, remaining));
        if (coins.length > 0) {
          await q`
            INSERT INTO claim_quota (requester_id, target_id, hour, claimed)
            VALUES (${requesterId}::uuid, ${targetUserId}::uuid, date_trunc('hour', now()), ${coins.length})
            ON CONFLICT (requester_id, target_id, hour) DO UPDATE SET claimed = claim_quota.claimed + excluded.claimed`;
        }
        return { coins, remaining: remaining - coins.length };
      });
    },

    /** Deletes buckets that no longer count; returns rows deleted. */
    async purgeExpired(): Promise<number> {
      const { count } = await sql`DELETE FROM claim_quota WHERE hour <= now() - interval '25 hours'`;
      return count;
    },
  };
}

export type PairQuota = ReturnType<typeof pairQuota>;
