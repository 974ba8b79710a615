import { beforeEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import type { Tier } from "../src/coins/tiers.ts";
import { testClaims, testDb, testCoins } from "./helpers/claims.ts";
import { makeCoins } from "./helpers/coins.ts";
import { resetCoins, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase({ AQM_DB_POOL_MAX: 10 });
beforeEach(() => resetCoins(db.sql));

type Instance = ReturnType<typeof testClaims> & { coins: ReturnType<typeof testCoins> };

/** Several independent pools with the claim path on each, as several server instances would have. */
async function withPools<T>(n: number, size: number, work: (pools: Instance[]) => Promise<T>): Promise<T> {
  const pools = Array.from({ length: n }, () => db.pool({ AQM_DB_POOL_MAX: size }));
  try {
    return await work(pools.map((p) => ({ ...testClaims(p, { size }), coins: testCoins(testDb(p, { size })) })));
  } finally {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  }
}

const svc = () => testCoins(testDb(db.sql));

function duplicates(keys: string[]): string[] {
  const seen = new Set<string>();
  return keys.filter((k) => (seen.has(k) ? true : (seen.add(k), false)));
}

test("20 concurrent fetchers of 1 coin each on 20 coins: 20 distinct key_ids, none left", async () => {
  const owner = randomUUID();
  await svc().uploadCoins(owner, 1, makeCoins(20));
  const results = await withPools(1, 20, ([pool]) =>
    Promise.all(Array.from({ length: 20 }, () => pool!.fetch(owner, randomUUID(), "BRONZE", 1))));
  const keys = results.flat().map((c) => c.key_id);
  expect(keys).toHaveLength(20);
  expect(new Set(keys).size).toBe(20);
  expect(await svc().getInventoryCount(owner, 1)).toMatchObject({ gold: 0, silver: 0, bronze: 0 });
});

test("200 concurrent fetchers asking 1–5 coins over 500 coins, through several pools: no key twice, min(demand, supply) handed out", async () => {
  const owner = randomUUID();
  const supply = makeCoins(500, "SILVER");
  for (let i = 0; i < supply.length; i += 100) await svc().uploadCoins(owner, 1, supply.slice(i, i + 100));
  const asks = Array.from({ length: 200 }, (_, i) => (i % 5) + 1); // demand 600 > supply 500
  const results = await withPools(4, 5, (pools) =>
    Promise.all(asks.map((n, i) => pools[i % pools.length]!.fetch(owner, randomUUID(), "SILVER", n))));
  results.forEach((got, i) => expect(got.length).toBeLessThanOrEqual(asks[i]!));
  const keys = results.flat().map((c) => c.key_id);
  expect(duplicates(keys)).toEqual([]);
  expect(keys.length).toBe(Math.min(600, 500));
  expect(new Set(keys)).toEqual(new Set(supply.map((c) => c.key_id)));
  const [{ claimed }] = await db.sql`SELECT count(*)::int AS claimed FROM coin_inventory WHERE fetched_at IS NOT NULL` as never as [{ claimed: number }];
  expect(claimed).toBe(500);
});

test("when demand is below supply, exactly the demand is handed out", async () => {
  const owner = randomUUID();
  const supply = makeCoins(100, "BRONZE");
  await svc().uploadCoins(owner, 1, supply);
  const asks = Array.from({ length: 40 }, (_, i) => (i % 3) + 1); // 79 coins
  const demand = asks.reduce((a, b) => a + b, 0);
  const results = await withPools(2, 8, (pools) =>
    Promise.all(asks.map((n, i) => pools[i % 2]!.fetch(owner, randomUUID(), "BRONZE", n))));
  results.forEach((got, i) => expect(got).toHaveLength(asks[i]!));
  expect(duplicates(results.flat().map((c) => c.key_id))).toEqual([]);
  expect((await svc().getInventoryCount(owner, 1)).bronze).toBe(100 - demand);
});

test("different tiers fetched concurrently never cross tiers and never repeat", async () => {
  const owner = randomUUID();
  const tiers: Tier[] = ["GOLD", "SILVER", "BRONZE"];
  for (const tier of tiers) await svc().uploadCoins(owner, 1, makeCoins(30, tier));
  const jobs = Array.from({ length: 120 }, (_, i) => tiers[i % 3]!);
  const results = await withPools(3, 4, (pools) =>
    Promise.all(jobs.map((tier, i) => pools[i % 3]!.fetch(owner, randomUUID(), tier, 1).then((coins) => ({ tier, coins })))));
  for (const { tier, coins } of results) for (const c of coins) expect(c.coin_category).toBe(tier);
  const keys = results.flatMap((r) => r.coins.map((c) => c.key_id));
  expect(keys).toHaveLength(90);
  expect(duplicates(keys)).toEqual([]);
});

test("uploads and claims racing on the same user never duplicate and never lose a coin", async () => {
  const owner = randomUUID();
  const batches = Array.from({ length: 10 }, () => makeCoins(20));
  const claims = await withPools(2, 6, async (pools) => {
    const uploads = batches.map((b, i) => pools[i % 2]!.coins.uploadCoins(owner, 1, b));
    const fetches = Array.from({ length: 100 }, (_, i) => pools[i % 2]!.fetch(owner, randomUUID(), "BRONZE", 1));
    await Promise.all(uploads);
    return Promise.all(fetches);
  });
  const keys = claims.flat().map((c) => c.key_id);
  expect(duplicates(keys)).toEqual([]);
  expect(keys.length + (await svc().getInventoryCount(owner, 1)).bronze).toBe(200);
});
