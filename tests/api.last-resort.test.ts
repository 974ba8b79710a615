import { beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { tierShapes } from "../src/coins/tiers.ts";
import { call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { inventory, makeCoin, makeCoins } from "./helpers/coins.ts";
import { resetClaims, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let app: TestApp;
beforeAll(() => {
  app = makeApp(db.sql);
});
beforeEach(() => resetClaims(db.sql));

const put = (user: User, coins: unknown[]) => call(app, "PUT", "/v1/coins/last-resort", { token: user.token, body: { coins } });
const claim = (a: TestApp, user: User, target: string, want: Record<string, number>, extra: Record<string, unknown> = {}) =>
  call(a, "POST", "/v1/coins/claim", { token: user.token, body: { target_user_id: target, want, ...extra } });

describe("last-resort coins", () => {
  test("one per tier, replaced by the next PUT of that tier; the count shows which exist and does not count them", async () => {
    const owner = await newUser();
    const [gold, bronze] = [makeCoin("GOLD"), makeCoin("BRONZE")];
    const res = await put(owner, [gold, bronze]);
    expect(res.status).toBe(200);
    expect(res.json).toEqual(inventory(0, 0, 0, { gold: true, silver: false, bronze: true }));
    const newer = makeCoin("BRONZE");
    expect((await put(owner, [newer])).json.last_resort).toEqual({ gold: true, silver: false, bronze: true });
    const stored = await db.sql`SELECT coin_category, key_id FROM last_resort_coin ORDER BY coin_category`;
    expect(stored.map((r) => [r.coin_category, r.key_id])).toEqual([["BRONZE", newer.key_id], ["GOLD", gold.key_id]]);
    const two = await put(owner, [makeCoin("SILVER"), makeCoin("SILVER")]);
    expect(two.status).toBe(422);
    expect(two.json.errors[0].field).toBe("coins[1].coin_category");
    expect((await put(owner, [])).status).toBe(422);
  });

  test("served after every ordinary coin, flagged, only with allow_last_resort, to a tier still short after fallback; never deleted", async () => {
    const [owner, bob, carol] = await Promise.all([newUser(), newUser(), newUser()]);
    const lr = makeCoin("GOLD");
    await put(owner, [lr, makeCoin("BRONZE")]);
    await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: makeCoins(1, "SILVER") } });
    const without = await claim(app, bob, owner.id, { gold: 2 });
    expect(without.json.coins.map((c: { coin_category: string }) => c.coin_category)).toEqual(["SILVER"]); // fallback, no last resort
    expect(without.json.short).toEqual({ gold: 1, silver: 0, bronze: 0 });
    await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: makeCoins(1, "SILVER") } });
    const res = await claim(app, carol, owner.id, { gold: 3, silver: 1 }, { allow_last_resort: true });
    expect(res.json.coins).toEqual([expect.objectContaining({ coin_category: "SILVER" }), { ...lr, last_resort: true }]);
    expect(res.json.short).toEqual({ gold: 0, silver: 0, bronze: 0 }); // SILVER got its own coin; GOLD's shortfall is filled by its last-resort coin
    const again = await claim(app, bob, owner.id, { gold: 1, bronze: 1 }, { allow_last_resort: true });
    expect(again.json.coins.map((c: { last_resort?: boolean; coin_category: string }) => `${c.coin_category}${c.last_resort ? "*" : ""}`)).toEqual(["GOLD*", "BRONZE*"]);
    expect((await db.sql`SELECT count(*)::int AS n FROM last_resort_coin`)[0]!.n).toBe(2);
  });

  test("a last-resort coin counts against the pair quota", async () => {
    const quota = makeApp(db.sql, { AQM_PAIR_QUOTA: "2" });
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await put(owner, [makeCoin("BRONZE")]);
    await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: makeCoins(1, "BRONZE") } });
    const first = await claim(quota, bob, owner.id, { bronze: 3 }, { allow_last_resort: true });
    expect(first.json.coins.map((c: { last_resort?: boolean }) => !!c.last_resort)).toEqual([false, true]);
    expect(first.headers.get("x-pair-quota-remaining")).toBe("0");
    expect((await claim(quota, bob, owner.id, { bronze: 1 }, { allow_last_resort: true })).status).toBe(429);
  });

  test("a waiting claim takes a last-resort coin only at its deadline", async () => {
    const [owner, bob] = await Promise.all([newUser(), newUser()]);
    await put(owner, [makeCoin("BRONZE")]);
    const started = performance.now();
    const res = await claim(app, bob, owner.id, { bronze: 1 }, { allow_last_resort: true, wait_ms: 300 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(290);
    expect(res.json.coins[0].last_resort).toBe(true);
  });
});

describe("exact tier sizes", () => {
  const blob = (n: number) => randomBytes(n).toString("base64");

  test("strict (default): every tier's key and signature sizes, on both upload routes; 422 names the field and the sizes", async () => {
    const owner = await newUser();
    for (const [tier, shape] of Object.entries(tierShapes)) {
      for (const sig of shape.signature) {
        const ok = await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: [{ ...makeCoin(tier as never), public_key_b64: blob(shape.publicKey[0]!), signature_b64: blob(sig) }] } });
        expect(ok.status).toBe(200);
      }
    }
    const wrongKey = { ...makeCoin("SILVER"), public_key_b64: blob(1183) };
    const res = await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: [makeCoin("GOLD"), wrongKey] } });
    expect(res.status).toBe(422);
    expect(res.json.errors).toEqual([{ field: "coins[1].public_key_b64", message: expect.stringMatching(/1183 bytes; a SILVER public key has 1184 bytes/) }]);
    const wrongSig = await put(owner, [{ ...makeCoin("GOLD"), signature_b64: blob(3000) }]);
    expect(wrongSig.status).toBe(422);
    expect(wrongSig.json.errors[0].message).toContain("2420, 3309 or 4627");
    const before = (await db.sql`SELECT count(*)::int AS n FROM coin_inventory`)[0]!.n;
    expect(before).toBe(5); // the valid ones above, nothing of the refused batches
  });

  test("loose: any size up to the limits", async () => {
    const loose = makeApp(db.sql, { AQM_TIER_SIZES: "loose" });
    const owner = await newUser();
    const res = await call(loose, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: [{ ...makeCoin("BRONZE"), public_key_b64: blob(100), signature_b64: blob(10) }] } });
    expect(res.status).toBe(200);
  });
});
