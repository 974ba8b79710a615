import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import type { Tier } from "../src/coins/tiers.ts";
import type { Sql } from "../src/db/pool.ts";
import { call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { makeCoins } from "./helpers/coins.ts";
import { resetClaims, useTestDatabase } from "./helpers/db.ts";

// POST /v1/coins/claim: several tiers in one call, downward fallback, idempotent retry.
const db = useTestDatabase();
let app: TestApp;
beforeAll(() => {
  app = makeApp(db.sql);
});
beforeEach(() => resetClaims(db.sql));

type Want = Partial<Record<"gold" | "silver" | "bronze", number>>;
const claim = (a: TestApp, user: User, target: string, want: Want, extra: Record<string, unknown> = {}, key?: string) =>
  call(a, "POST", "/v1/coins/claim", { token: user.token, body: { target_user_id: target, want, ...extra }, headers: key ? { "idempotency-key": key } : {} });

async function stock(owner: User, counts: Partial<Record<Tier, number>>) {
  const coins = Object.entries(counts).flatMap(([tier, n]) => makeCoins(n, tier as Tier));
  const res = await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins } });
  expect(res.status).toBe(200);
  return coins;
}
const tiersOf = (res: { json: { coins: { coin_category: string }[] } }) => res.json.coins.map((c) => c.coin_category);

describe("serving and fallback", () => {
  test("each tier from its own stock; GOLD first, then SILVER, then BRONZE, oldest first, each coin its real tier", async () => {
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    const coins = await stock(owner, { BRONZE: 3, SILVER: 4, GOLD: 5 });
    const res = await claim(app, bob, owner.id, { gold: 5, silver: 4, bronze: 1 });
    expect(res.status).toBe(200);
    expect(res.headers.get("cache-control")).toBe("no-store");
    expect(res.json.short).toEqual({ gold: 0, silver: 0, bronze: 0 });
    const byTier = (t: Tier) => coins.filter((c) => c.coin_category === t);
    expect(res.json.coins).toEqual([...byTier("GOLD"), ...byTier("SILVER"), ...byTier("BRONZE").slice(0, 1)]);
  });

  test("{gold:1, silver:1} against one SILVER coin: SILVER gets it, GOLD is short (never upward, own stock first)", async () => {
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await stock(owner, { SILVER: 1 });
    const res = await claim(app, bob, owner.id, { gold: 1, silver: 1 });
    expect(tiersOf(res)).toEqual(["SILVER"]);
    expect(res.json.short).toEqual({ gold: 1, silver: 0, bronze: 0 });
  });

  test("GOLD's shortfall from SILVER, then BRONZE; then SILVER's from BRONZE", async () => {
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await stock(owner, { GOLD: 1, SILVER: 2, BRONZE: 3 });
    // gold 3: 1 GOLD + 1 leftover SILVER + 1 BRONZE; silver 1: its own; bronze 1: its own; nothing left for more
    const res = await claim(app, bob, owner.id, { gold: 3, silver: 1, bronze: 1 });
    expect(tiersOf(res)).toEqual(["GOLD", "SILVER", "SILVER", "BRONZE", "BRONZE"]);
    expect(res.json.short).toEqual({ gold: 0, silver: 0, bronze: 0 });
    const again = await claim(app, bob, owner.id, { silver: 2, bronze: 1 });
    expect(tiersOf(again)).toEqual(["BRONZE"]); // BRONZE's own demand first; nothing left for SILVER
    expect(again.json.short).toEqual({ gold: 0, silver: 2, bronze: 0 });
  });

  test("fallback none: only each tier's own stock", async () => {
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await stock(owner, { SILVER: 2, BRONZE: 2 });
    const res = await claim(app, bob, owner.id, { gold: 2, bronze: 1 }, { fallback: "none" });
    expect(tiersOf(res)).toEqual(["BRONZE"]);
    expect(res.json.short).toEqual({ gold: 2, silver: 0, bronze: 0 });
  });

  test("want: nothing, more than 100, a negative or unknown tier → 422 naming the field; nothing is claimed", async () => {
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await stock(owner, { BRONZE: 2 });
    for (const [want, field] of [[{}, "want"], [{ gold: 0, bronze: 0 }, "want"], [{ gold: 60, silver: 41 }, "want"], [{ bronze: -1 }, "want.bronze"],
      [{ platinum: 1 }, "want.platinum"], [{ bronze: 101 }, "want.bronze"], [{ bronze: 1.5 }, "want.bronze"]] as const) {
      const res = await claim(app, bob, owner.id, want as Want);
      expect(res.status).toBe(422);
      expect(res.json.errors.map((e: { field: string }) => e.field)).toContain(field);
    }
    for (const extra of [{ fallback: "up" }, { wait_ms: 30_001 }, { allow_last_resort: "yes" }, { target_user_id: "someone" }, { extra: 1 }]) {
      expect((await claim(app, bob, owner.id, { bronze: 1 }, extra)).status).toBe(422);
    }
    expect((await call(app, "GET", "/v1/coins/count", { token: owner.token })).json.bronze).toBe(2);
  });

  test("the pair quota counts coins across tiers: what remains, then 429", async () => {
    const quota = makeApp(db.sql, { AQM_PAIR_QUOTA: "7" });
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await stock(owner, { GOLD: 5, SILVER: 5, BRONZE: 5 });
    const first = await claim(quota, bob, owner.id, { gold: 3, silver: 3 });
    expect(first.json.coins).toHaveLength(6);
    expect(first.headers.get("x-pair-quota-remaining")).toBe("1");
    const second = await claim(quota, bob, owner.id, { gold: 2, bronze: 2 });
    expect(tiersOf(second)).toEqual(["GOLD"]); // the quota cuts lower tiers first
    expect(second.json.short).toEqual({ gold: 1, silver: 0, bronze: 2 });
    const refused = await claim(quota, bob, owner.id, { bronze: 1 });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(23 * 3600);
  });
});

describe("Idempotency-Key", () => {
  let pools: Sql[];
  beforeAll(() => {
    pools = [db.pool({ AQM_DB_POOL_MAX: 4 }), db.pool({ AQM_DB_POOL_MAX: 4 })];
  });
  afterAll(() => Promise.all(pools.map((p) => p.end({ timeout: 5 }))));

  test("a retry from another instance returns the same answer byte for byte, claims nothing more, spends no quota", async () => {
    const [one, two] = pools.map((p) => makeApp(p, { AQM_PAIR_QUOTA: "5" }));
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await stock(owner, { GOLD: 2, SILVER: 2, BRONZE: 4 });
    const key = crypto.randomUUID();
    const first = await claim(one!, bob, owner.id, { gold: 3, bronze: 1 }, {}, key);
    expect(first.status).toBe(200);
    expect(first.json.coins).toHaveLength(4);
    const retry = await claim(two!, bob, owner.id, { gold: 3, bronze: 1 }, {}, key.toUpperCase());
    expect(retry.status).toBe(200);
    expect(retry.text).toBe(first.text);
    expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NOT NULL`)[0]!.n).toBe(4);
    // 1 of 5 left: a new claim gets one coin, then the quota is spent ...
    expect((await claim(two!, bob, owner.id, { bronze: 3 })).json.coins).toHaveLength(1);
    expect((await claim(one!, bob, owner.id, { bronze: 1 })).status).toBe(429);
    // ... and the retry still answers the original 200, not 429
    const late = await claim(one!, bob, owner.id, { gold: 3, bronze: 1 }, {}, key);
    expect(late.status).toBe(200);
    expect(late.text).toBe(first.text);
  });

  test("concurrent retries of one key claim once", async () => {
    const apps = pools.map((p) => makeApp(p));
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await stock(owner, { BRONZE: 20 });
    const key = crypto.randomUUID();
    const answers = await Promise.all(Array.from({ length: 10 }, (_, i) => claim(apps[i % 2]!, bob, owner.id, { bronze: 2 }, {}, key)));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    expect(new Set(answers.map((a) => a.text)).size).toBe(1);
    expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NOT NULL`)[0]!.n).toBe(2);
  });

  test("the same key with another body is 422; another requester's same key is unrelated; an empty answer replays too", async () => {
    const [owner, bob, carol] = await Promise.all([newUser(), newUser(), newUser()]);
    await stock(owner, { BRONZE: 3 });
    const key = crypto.randomUUID();
    expect((await claim(app, bob, owner.id, { bronze: 1 }, {}, key)).json.coins).toHaveLength(1);
    const other = await claim(app, bob, owner.id, { bronze: 2 }, {}, key);
    expect(other.status).toBe(422);
    expect(other.json.type).toBe("urn:aqm:problem:idempotency-key-reused");
    expect((await claim(app, carol, owner.id, { bronze: 1 }, {}, key)).json.coins).toHaveLength(1);
    const empty = crypto.randomUUID();
    const nobody = crypto.randomUUID();
    const nothing = await claim(app, bob, nobody, { gold: 1 }, {}, empty);
    expect(nothing.json).toEqual({ coins: [], short: { gold: 1, silver: 0, bronze: 0 } });
    expect((await claim(app, bob, nobody, { gold: 1 }, {}, empty)).text).toBe(nothing.text);
    expect((await claim(app, bob, owner.id, { gold: 1 }, {}, empty)).status).toBe(422); // the same key for another target
  });

  test("a malformed key is 422", async () => {
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    const res = await claim(app, bob, owner.id, { bronze: 1 }, {}, "not-a-uuid");
    expect(res.status).toBe(422);
    expect(res.json.errors[0].field).toBe("idempotency-key");
  });
});
