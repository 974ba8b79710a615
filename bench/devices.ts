// All-devices claims (issue 20): POST /v1/coins/claim with `devices: "all"` against users with 3
// devices, beside the same claim without `devices` (device 1 only), on the `default` server (rate
// limits and the pair quota on), interleaved in one run. See bench/README.md, "All-devices claims".
import { randomUUID } from "node:crypto";
import { typicalSizes } from "../src/coins/tiers.ts";
import type { Sql } from "../src/db/pool.ts";
import { claimedBy, randomOf, rotation, type ClaimLedger, type Population } from "./client.ts";
import { closedLoop, type Job } from "./load.ts";
import { log, measure, type Bench } from "./phases.ts";
import { perGroupFor, tiers, type RandomBytesSql } from "./seed.ts";

export const devicesPerUser = 3;
const deviceIds = Array.from({ length: devicesPerUser }, (_, i) => i + 1);
/** Segments per variant: (all, device 1) then (device 1, all). */
const rounds = 2;

/**
 * Brings every (user, device, tier) to at least `perGroup` available coins (one INSERT … SELECT),
 * the users' device rows created first: an all-devices claim serves the devices that have one.
 */
async function topUpDevices(sql: Sql, random: RandomBytesSql, users: string[], perGroup: number): Promise<number> {
  await sql`INSERT INTO device (user_id, device_id) SELECT u, d FROM unnest(${users}::uuid[]) AS u CROSS JOIN unnest(${deviceIds}::smallint[]) AS d
            ON CONFLICT DO NOTHING`;
  const result = await sql.unsafe(`
    WITH groups AS (
      SELECT u AS user_id, d AS device_id, t AS coin_category,
             (SELECT count(*) FROM coin_inventory c
              WHERE c.user_id = u AND c.device_id = d AND c.coin_category = t AND c.fetched_at IS NULL)::int AS have
      FROM unnest($1::uuid[]) AS u CROSS JOIN unnest($2::smallint[]) AS d CROSS JOIN unnest($3::text[]) AS t
    )
    INSERT INTO coin_inventory (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
    SELECT g.user_id, g.device_id, gen_random_uuid()::text, g.coin_category,
           CASE WHEN g.coin_category = 'BRONZE' THEN ${random(typicalSizes.BRONZE.key)} ELSE ${random(typicalSizes.GOLD.key)} END,
           CASE WHEN g.coin_category = 'GOLD' THEN ${random(typicalSizes.GOLD.sig)} ELSE ${random(typicalSizes.SILVER.sig)} END
    FROM groups g CROSS JOIN LATERAL generate_series(1, $4::int - g.have) AS s(i)`, [users, deviceIds, [...tiers], perGroup]);
  if (result.count > 0) await sql`ANALYZE coin_inventory`;
  return result.count;
}

/**
 * One coin of one tier (targets in round robin, then tiers; requesters at random): with `all`,
 * `devices: "all"` (one coin from each of the target's 3 devices), else device 1's only.
 */
function httpDevicesClaim(baseUrl: string, pop: Population, all: boolean, ledger: ClaimLedger): Job {
  const next = rotation(pop.targets, tiers);
  return async () => {
    const { target, tier } = next();
    const response = await fetch(`${baseUrl}/v1/coins/claim`, {
      method: "POST",
      headers: { authorization: `Bearer ${pop.tokens.get(randomOf(pop.requesters))}`, "content-type": "application/json" },
      body: JSON.stringify({ target_user_id: target, want: { [tier.toLowerCase()]: 1 }, ...(all ? { devices: "all" } : {}) }),
      signal: AbortSignal.timeout(60_000),
    });
    if (!response.ok) {
      await response.arrayBuffer();
      return { ok: false, coins: 0, error: String(response.status) };
    }
    const body = (await response.json()) as { coins?: { key_id: string }[]; devices?: { coins: { key_id: string }[] }[] };
    const coins = all ? (body.devices ?? []).flatMap((d) => d.coins) : body.coins ?? [];
    return claimedBy(target, coins, all ? devicesPerUser : 1, ledger);
  };
}

/**
 * --users targets of their own with 3 devices each (coins seeded per device), the run's
 * requesters (10,000 by default: the pair quota, 100 coins per requester and target, counts the
 * coins of every device, and is never near with this many); `rounds` rounds alternating which
 * variant goes first, each segment with its own warm-up and top-up.
 */
export async function devicesPhase(b: Bench): Promise<void> {
  if (!b.stack.servers.default) return;
  const baseUrl = b.stack.servers.default.baseUrl;
  const pop: Population = { targets: Array.from({ length: b.options.users }, () => randomUUID()), requesters: b.pop.requesters, tokens: b.pop.tokens };
  const { warmupS, durationS, concurrency, coinsPerTier } = b.options;
  const stock = async (claims: number) => {
    // each claim takes one coin of its (target, tier) from every device (all), or from device 1
    const perGroup = Math.max(coinsPerTier, perGroupFor(claims, pop.targets.length * tiers.length));
    const t = performance.now();
    const inserted = await topUpDevices(b.sql, b.random, pop.targets, perGroup);
    if (inserted > 0) log(`devices: seeded ${inserted.toLocaleString("en-US")} coins (${perGroup} per user, device and tier) in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  };
  await stock(0);
  const variants = { all: "claim all devices (3)", one: "claim device 1" } as const;
  for (let round = 1; round <= rounds; round++) {
    for (const variant of round % 2 === 1 ? (["all", "one"] as const) : (["one", "all"] as const)) {
      const job = httpDevicesClaim(baseUrl, pop, variant === "all", b.ledger);
      await stock(0);
      const warm = await closedLoop(job, concurrency, warmupS);
      await stock(warm.reqPerS * 2 * durationS);
      await measure(b, "default", variants[variant], `closed c=${concurrency}, want 1, #${round}`, () => closedLoop(job, concurrency, durationS));
    }
  }
}
