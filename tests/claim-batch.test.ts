import { beforeEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { ClaimCoalescer, claimBatch } from "../src/coins/claim-batch.ts";
import { coinService } from "../src/coins/service.ts";
import { ConnectionGate } from "../src/db/gate.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { makeCoins } from "./helpers/coins.ts";
import { resetCoins, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
beforeEach(() => resetCoins(db.sql));

const keysOf = (coins: { key_id: string }[]) => coins.map((c) => c.key_id);

test("one statement serves many requests: same target and tier split one FIFO sub-claim in request order", async () => {
  const [alice, bob] = [randomUUID(), randomUUID()];
  const aliceGold = makeCoins(5, "GOLD");
  const bobBronze = makeCoins(2, "BRONZE");
  await coinService(db.sql).uploadCoins(alice, aliceGold);
  await coinService(db.sql).uploadCoins(bob, bobBronze);
  const [r1, r2, r3, r4] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
  const results = await claimBatch(db.sql, [
    { target: alice, requester: r1, tier: "GOLD", count: 2 },
    { target: bob, requester: r2, tier: "BRONZE", count: 3 },
    { target: alice, requester: r3, tier: "GOLD", count: 2 },
    { target: alice, requester: r4, tier: "GOLD", count: 2 },
  ]);
  expect(keysOf(results[0]!)).toEqual(keysOf(aliceGold.slice(0, 2)));
  expect(keysOf(results[1]!)).toEqual(keysOf(bobBronze));
  expect(keysOf(results[2]!)).toEqual(keysOf(aliceGold.slice(2, 4)));
  expect(keysOf(results[3]!)).toEqual(keysOf(aliceGold.slice(4))); // short: only one left
  expect(results[3]![0]).toEqual(aliceGold[4]!);
  const owners = await db.sql`SELECT key_id, fetched_by FROM coin_inventory WHERE user_id = ${alice}::uuid ORDER BY record_id`;
  expect(owners.map((r) => r.fetched_by)).toEqual([r1, r1, r3, r3, r4]);
});

test("a request for an empty tier gets an empty list", async () => {
  const results = await claimBatch(db.sql, [{ target: randomUUID(), requester: randomUUID(), tier: "SILVER", count: 5 }]);
  expect(results).toEqual([[]]);
});

test("200 concurrent claims through coalescers of several instances: no key twice, min(demand, supply) handed out", async () => {
  const owner = randomUUID();
  const supply = makeCoins(500, "SILVER");
  for (let i = 0; i < 500; i += 100) await coinService(db.sql).uploadCoins(owner, supply.slice(i, i + 100));
  const pools: Sql[] = Array.from({ length: 3 }, () => createPool(db.url, { AQM_DB_POOL_MAX: 4 }));
  try {
    const coalescers = pools.map((p) => new ClaimCoalescer(p, new ConnectionGate(4, 5000, 10_000), 2));
    const asks = Array.from({ length: 200 }, (_, i) => (i % 5) + 1); // demand 600 > supply 500
    const results = await Promise.all(asks.map((n, i) => coalescers[i % 3]!.claim(owner, randomUUID(), "SILVER", n)));
    results.forEach((got, i) => expect(got.length).toBeLessThanOrEqual(asks[i]!));
    const keys = results.flat().map((c) => c.key_id);
    expect(keys).toHaveLength(500);
    expect(new Set(keys).size).toBe(500);
  } finally {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  }
});

test("10,000 concurrent single-coin claims over several users and tiers: none twice, none lost", async () => {
  const owners = Array.from({ length: 5 }, () => randomUUID());
  for (const owner of owners) {
    for (const tier of ["GOLD", "BRONZE"] as const) {
      await db.sql`
        INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
        SELECT ${owner}::uuid, ${tier} || '-' || i, ${tier}, '\\x01', '\\x02' FROM generate_series(1, 900) AS i`;
    }
  }
  const pools: Sql[] = Array.from({ length: 2 }, () => createPool(db.url, { AQM_DB_POOL_MAX: 5 }));
  try {
    const coalescers = pools.map((p) => new ClaimCoalescer(p, new ConnectionGate(5, 30_000, 20_000), 3));
    const jobs = Array.from({ length: 10_000 }, (_, i) => ({ owner: owners[i % 5]!, tier: i % 3 === 0 ? "GOLD" as const : "BRONZE" as const }));
    const demand = new Map<string, number>();
    for (const { owner, tier } of jobs) demand.set(`${owner}/${tier}`, (demand.get(`${owner}/${tier}`) ?? 0) + 1);
    const expected = [...demand.values()].reduce((sum, d) => sum + Math.min(d, 900), 0); // GOLD under-, BRONZE over-demanded
    const results = await Promise.all(jobs.map(({ owner, tier }, i) =>
      coalescers[i % 2]!.claim(owner, randomUUID(), tier, 1).then((coins) => coins.map((c) => `${owner}/${c.key_id}`))));
    const keys = results.flat();
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.length).toBe(expected);
    const [{ left }] = await db.sql`SELECT count(*)::int AS left FROM coin_inventory WHERE fetched_at IS NULL` as never as [{ left: number }];
    expect(left).toBe(9000 - expected);
  } finally {
    await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  }
}, 60_000);
