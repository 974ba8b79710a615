import { beforeEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { outcomesOf, type ClaimItem, type ClaimOutcome, deviceOne } from "../src/claims/batch.ts";
import type { Tier, TierCounts } from "../src/coins/tiers.ts";
import type { Sql } from "../src/db/pool.ts";
import { claimRows, testClaims } from "./helpers/claims.ts";
import { makeCoins } from "./helpers/coins.ts";
import { isCitus, lockWaiters, resetClaims, useTestDatabase } from "./helpers/db.ts";
import { waitFor } from "./helpers/wait.ts";

const db = useTestDatabase();
beforeEach(() => resetClaims(db.sql));

const keysOf = (coins: { key_id: string }[]) => coins.map((c) => c.key_id);
const upload = (owner: string, coins: ReturnType<typeof makeCoins>) => testClaims(db.sql).db.run((sql) => sql`
  INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
  SELECT ${owner}::uuid, k, c, decode(p, 'base64'), decode(s, 'base64')
  FROM unnest(${coins.map((c) => c.key_id)}::text[], ${coins.map((c) => c.coin_category)}::text[],
              ${coins.map((c) => c.public_key_b64)}::text[], ${coins.map((c) => c.signature_b64)}::text[]) WITH ORDINALITY AS u(k, c, p, s, o)
  ORDER BY o`);

function item(target: string, want: TierCounts, extra: Partial<ClaimItem> = {}): ClaimItem {
  return { target, requester: randomUUID(), want, fallback: false, lastResort: false, final: true, pair: null, pairPrev: null, ref: null, refPrev: null, body: null, ...deviceOne, ...extra };
}
/** One claim statement for `items` (the routed shape on Citus: helpers/claims.ts). */
const run = async (items: ClaimItem[], quota: number | null = null, sql: Sql = db.sql) => outcomesOf(await claimRows(sql, items, quota), items.length);
/** `n` owners: any on one PostgreSQL; on Citus, owners whose coins share one shard (a claim statement's batch). */
async function sameShardOwners(n: number): Promise<string[]> {
  if (!isCitus()) return Array.from({ length: n }, () => randomUUID());
  const candidates = Array.from({ length: 64 * n }, () => randomUUID());
  const rows = await db.sql<{ u: string; s: string }[]>`
    SELECT u::text, get_shard_id_for_distribution_column('coin_inventory', u)::text AS s FROM unnest(${candidates}::uuid[]) AS u`;
  // the shard with the most candidates (the first candidate's could have no other: ~2 % of runs)
  const byShard = Map.groupBy(rows, (r) => r.s);
  const owners = [...byShard.values()].sort((a, b) => b.length - a.length)[0]!.slice(0, n).map((r) => r.u);
  if (owners.length < n) throw new Error(`no shard got ${n} of ${candidates.length} random owners`);
  return owners;
}
const coinsOf = (o: ClaimOutcome) => (o.status === "ok" || o.status === "replay" ? o.coins : []);
const one = (tier: Tier, n: number): TierCounts => [tier === "GOLD" ? n : 0, tier === "SILVER" ? n : 0, tier === "BRONZE" ? n : 0];

test("one statement serves many requests: same target and tier split one FIFO sub-claim in request order", async () => {
  const [alice, bob] = (await sameShardOwners(2)) as [string, string];
  const aliceGold = makeCoins(5, "GOLD");
  const bobBronze = makeCoins(2, "BRONZE");
  await upload(alice, aliceGold);
  await upload(bob, bobBronze);
  const items = [item(alice, one("GOLD", 2)), item(bob, one("BRONZE", 3)), item(alice, one("GOLD", 2)), item(alice, one("GOLD", 2))];
  const results = await run(items);
  expect(keysOf(coinsOf(results[0]!))).toEqual(keysOf(aliceGold.slice(0, 2)));
  expect(keysOf(coinsOf(results[1]!))).toEqual(keysOf(bobBronze));
  expect(keysOf(coinsOf(results[2]!))).toEqual(keysOf(aliceGold.slice(2, 4)));
  expect(coinsOf(results[3]!)).toEqual([aliceGold[4]!]); // short: only one left, with its content
  expect(results[3]).toMatchObject({ status: "ok", short: [1, 0, 0] });
  const owners = await db.sql`SELECT fetched_by FROM coin_inventory WHERE user_id = ${alice}::uuid ORDER BY record_id`;
  expect(owners.map((r) => r.fetched_by)).toEqual([items[0]!.requester, items[0]!.requester, items[2]!.requester, items[2]!.requester, items[3]!.requester]);
});

test("a request for an empty tier gets an empty list and its whole want as short", async () => {
  const [outcome] = await run([item(randomUUID(), one("SILVER", 5))]);
  expect(outcome).toMatchObject({ status: "ok", coins: [], short: [0, 5, 0] }); // (remaining: the quota is off here)
});

test("the same pair twice in one statement with the quota on: the second runs again rather than overspend", async () => {
  const owner = randomUUID();
  await upload(owner, makeCoins(10));
  const pair = randomUUID();
  const results = await run([item(owner, one("BRONZE", 3), { pair }), item(owner, one("BRONZE", 3), { pair })], 4);
  expect(results[0]).toMatchObject({ status: "ok", remaining: 1 });
  expect(results[1]).toEqual({ status: "retry" });
  expect(coinsOf((await run([item(owner, one("BRONZE", 3), { pair })], 4))[0]!)).toHaveLength(1);
});

test("a claim that waited for a pair's quota row counts what the other transaction spent (no stale read)", async () => {
  const owner = randomUUID();
  await upload(owner, makeCoins(10));
  const pair = randomUUID();
  const hour = Math.floor(Date.now() / 3_600_000);
  await db.sql`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner}::uuid, ${pair}::uuid, ${[hour]}::int[], ${[3]}::int[])`;
  const other = await db.sql.reserve();
  try {
    await other`BEGIN`;
    await other`UPDATE claim_quota SET counts = ${[5]}::int[] WHERE target = ${owner}::uuid AND pair = ${pair}::uuid`; // spends the rest of a quota of 5
    const claim = run([item(owner, one("BRONZE", 2), { pair })], 5); // waits for the row
    await waitFor(async () => (await lockWaiters(db)) > 0, "the claim to wait");
    await other`COMMIT`;
    expect((await claim)[0]).toMatchObject({ status: "quota" });
  } finally {
    other.release();
  }
  expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NOT NULL`)[0]!.n).toBe(0);
});

/**
 * Three bursts of 20 claims, each in one tick, a turn of the event loop apart; the first claim
 * statement is held at the database (not sent) until `holdMs` after the third burst is queued.
 * Reports the most claim statements in flight at once, how many ran, when each left (ms after
 * the first) and the coins served.
 */
async function bursts(options: { maxInFlight: number; overlapAfterMs?: number }, holdMs = 0) {
  const owners = await sameShardOwners(4);
  for (const owner of owners) await upload(owner, makeCoins(15, "BRONZE"));
  const { db: instance, fetch } = testClaims(db.sql, { size: 4, ...options });
  await fetch(randomUUID(), randomUUID(), "GOLD", 1); // the queue reads the engine once, before its first statement
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let running = 0;
  let most = 0;
  const left: number[] = [];
  const run = instance.run.bind(instance);
  instance.run = ((make, opts) => {
    if (opts?.what !== "claim") return run(make, opts);
    left.push(performance.now());
    most = Math.max(most, ++running);
    return (left.length === 1 ? held.then(() => run(make, opts)) : run(make, opts)).finally(() => running--);
  }) as typeof instance.run;
  const claims: Promise<{ key_id: string }[]>[] = [];
  for (let burst = 0; burst < 3; burst++) {
    for (let i = 0; i < 20; i++) claims.push(fetch(owners[i % 4]!, randomUUID(), "BRONZE", 1));
    await new Promise((resolve) => setImmediate(resolve));
  }
  await Bun.sleep(holdMs);
  release();
  const keys = (await Promise.all(claims)).flat().map((c) => c.key_id);
  return { most, statements: left.length, after: left.map((t) => t - left[0]!), keys };
}

test("claim statements at once (AQM_CLAIM_OVERLAP_MS): on one PostgreSQL a second leaves only once the first has run that long, and the claims queued meanwhile leave together", async () => {
  // a first statement that never reaches the wait: bursts 2 and 3 leave together after it
  const waiting = await bursts({ maxInFlight: 2, overlapAfterMs: 60_000 });
  expect(new Set(waiting.keys).size).toBe(60);
  if (isCitus()) {
    expect(waiting.most).toBe(2); // not on Citus: each statement serves one shard
  } else {
    expect(waiting.most).toBe(1);
    expect(waiting.statements).toBe(2);
  }
  // without the wait, burst 2 leaves beside the held first statement
  await resetClaims(db.sql);
  const atOnce = await bursts({ maxInFlight: 2, overlapAfterMs: 0 });
  expect(atOnce.most).toBe(2);
  expect(atOnce.after[1]!).toBeLessThan(100);
  expect(new Set(atOnce.keys).size).toBe(60);
  // a first statement held 400 ms: the second leaves beside it once it has run 100 ms, not before
  await resetClaims(db.sql);
  const stuck = await bursts({ maxInFlight: 2, overlapAfterMs: 100 }, 400);
  expect(stuck.most).toBe(2);
  if (!isCitus()) expect(stuck.after[1]!).toBeGreaterThanOrEqual(100);
  expect(stuck.after[1]!).toBeLessThan(400);
  expect(new Set(stuck.keys).size).toBe(60);
});

test("200 concurrent claims through the queues of three instances: no key twice, min(demand, supply) handed out", async () => {
  const owner = randomUUID();
  const supply = makeCoins(500, "SILVER");
  for (let i = 0; i < 500; i += 100) await upload(owner, supply.slice(i, i + 100));
  const pools: Sql[] = Array.from({ length: 3 }, () => db.pool({ AQM_DB_POOL_MAX: 4 }));
  try {
    const instances = pools.map((p) => testClaims(p, { size: 4, maxInFlight: 2 }));
    const asks = Array.from({ length: 200 }, (_, i) => (i % 5) + 1); // demand 600 > supply 500
    const results = await Promise.all(asks.map((n, i) => instances[i % 3]!.fetch(owner, randomUUID(), "SILVER", n)));
    results.forEach((got, i) => expect(got.length).toBeLessThanOrEqual(asks[i]!));
    const keys = results.flat().map((c) => c.key_id);
    expect(keys).toHaveLength(500);
    expect(new Set(keys).size).toBe(500);
  } finally {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  }
});

test("10,000 concurrent single-coin claims over several users and tiers, quota on: none twice, none lost", async () => {
  const owners = Array.from({ length: 5 }, () => randomUUID());
  for (const owner of owners) {
    for (const tier of ["GOLD", "BRONZE"] as const) {
      await db.sql`
        INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
        SELECT ${owner}::uuid, ${tier} || '-' || i, ${tier}, '\\x01', '\\x02' FROM generate_series(1, 900) AS i`;
    }
  }
  const pools: Sql[] = Array.from({ length: 2 }, () => db.pool({ AQM_DB_POOL_MAX: 5 }));
  try {
    const instances = pools.map((p) => testClaims(p, { size: 5, maxInFlight: 3, quota: 100, waitMs: 30_000 }));
    const jobs = Array.from({ length: 10_000 }, (_, i) => ({ owner: owners[i % 5]!, tier: i % 3 === 0 ? "GOLD" as const : "BRONZE" as const }));
    const demand = new Map<string, number>();
    for (const { owner, tier } of jobs) demand.set(`${owner}/${tier}`, (demand.get(`${owner}/${tier}`) ?? 0) + 1);
    const expected = [...demand.values()].reduce((sum, d) => sum + Math.min(d, 900), 0); // GOLD under-, BRONZE over-demanded
    const results = await Promise.all(jobs.map(({ owner, tier }, i) =>
      instances[i % 2]!.fetch(owner, randomUUID(), tier, 1).then((coins) => coins.map((c) => `${owner}/${c.key_id}`))));
    const keys = results.flat();
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.length).toBe(expected);
    const [{ left }] = await db.sql`SELECT count(*)::int AS left FROM coin_inventory WHERE fetched_at IS NULL` as never as [{ left: number }];
    expect(left).toBe(9000 - expected);
    const [{ spent }] = await db.sql`SELECT coalesce(sum(c), 0)::int AS spent FROM claim_quota, unnest(counts) AS c` as never as [{ spent: number }];
    expect(spent).toBe(expected); // every coin served was counted against its pair, none more
  } finally {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  }
}, 60_000);
