import { beforeEach, describe, expect, test } from "bun:test";
import { RateLimitedError } from "../src/errors.ts";
import { TokenBuckets } from "../src/rate-limit/throttle.ts";
import { makeCoins } from "./helpers/coins.ts";
import { call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { resetClaims, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
beforeEach(() => resetClaims(db.sql));

const fetchAs = (app: TestApp, user: User, target: string, count: number) =>
  call(app, "GET", "/v1/coins/fetch", { token: user.token, query: { target_user_id: target, coin_category: "BRONZE", count } });

async function stock(app: TestApp, owner: User, n: number) {
  for (let i = 0; i < n; i += 100) {
    const res = await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: makeCoins(Math.min(100, n - i)) } });
    expect(res.status).toBe(200);
  }
}

describe("TokenBuckets", () => {
  test("allows a burst of `capacity`, then refills at the configured rate", () => {
    let now = 0;
    const buckets = new TokenBuckets(3, 60, () => now); // one token per second
    for (let i = 0; i < 3; i++) expect(buckets.take("u")["RateLimit-Remaining"]).toBe(String(2 - i));
    let error: any;
    try {
      buckets.take("u");
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(RateLimitedError);
    expect(error.retryAfterS).toBe(1);
    expect(() => buckets.take("someone-else")).not.toThrow();
    now += 1000;
    expect(() => buckets.take("u")).not.toThrow();
    expect(() => buckets.take("u")).toThrow();
  });

  test("forgets full buckets when swept", () => {
    let now = 0;
    const buckets = new TokenBuckets(2, 60, () => now);
    buckets.take("a");
    buckets.take("b");
    expect(buckets.size).toBe(2);
    now += 5000;
    buckets.sweep();
    expect(buckets.size).toBe(0);
  });
});

describe("per-user rate limits", () => {
  test("over the limit → 429 with Retry-After and RateLimit headers; other users unaffected", async () => {
    const app = makeApp(db.sql, { AQM_RATE_COUNT_PER_MIN: "3" });
    const [u, v] = await Promise.all([newUser(), newUser()]);
    for (let i = 0; i < 3; i++) {
      const ok = await call(app, "GET", "/v1/coins/count", { token: u.token });
      expect(ok.status).toBe(200);
      expect(ok.headers.get("ratelimit-limit")).toBe("3");
      expect(ok.headers.get("ratelimit-remaining")).toBe(String(2 - i));
    }
    const limited = await call(app, "GET", "/v1/coins/count", { token: u.token });
    expect(limited.status).toBe(429);
    expect(limited.headers.get("content-type")).toBe("application/problem+json");
    expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(limited.headers.get("ratelimit-remaining")).toBe("0");
    expect((await call(app, "GET", "/v1/coins/count", { token: v.token })).status).toBe(200);
  });

  test("route groups have separate buckets", async () => {
    const app = makeApp(db.sql, { AQM_RATE_COUNT_PER_MIN: "1", AQM_RATE_FETCH_PER_MIN: "1" });
    const u = await newUser();
    expect((await call(app, "GET", "/v1/coins/count", { token: u.token })).status).toBe(200);
    expect((await call(app, "GET", "/v1/coins/count", { token: u.token })).status).toBe(429);
    expect((await fetchAs(app, u, u.id, 1)).status).toBe(200);
    expect((await fetchAs(app, u, u.id, 1)).status).toBe(429);
  });
});

describe("pair quota (exhaustion defence)", () => {
  test("a requester gets what remains of the quota, then 429; other requesters are unaffected", async () => {
    const app = makeApp(db.sql, { AQM_PAIR_QUOTA: "10" });
    const [victim, thief, friend] = await Promise.all([newUser(), newUser(), newUser()]);
    await stock(app, victim, 30);
    expect((await fetchAs(app, thief, victim.id, 8)).json.coins).toHaveLength(8);
    const partial = await fetchAs(app, thief, victim.id, 5);
    expect(partial.status).toBe(200);
    expect(partial.json.coins).toHaveLength(2);
    expect(partial.headers.get("x-pair-quota-remaining")).toBe("0");
    const refused = await fetchAs(app, thief, victim.id, 1);
    expect(refused.status).toBe(429);
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThan(23 * 3600);
    expect(retryAfter).toBeLessThanOrEqual(25 * 3600);
    expect((await fetchAs(app, friend, victim.id, 5)).json.coins).toHaveLength(5);
    expect((await call(app, "GET", "/v1/coins/count", { token: victim.token })).json.bronze).toBe(15);
  });

  test("only coins actually handed out count against the quota", async () => {
    const app = makeApp(db.sql, { AQM_PAIR_QUOTA: "5" });
    const [owner, requester] = await Promise.all([newUser(), newUser()]);
    expect((await fetchAs(app, requester, owner.id, 5)).json.coins).toEqual([]);
    await stock(app, owner, 5);
    expect((await fetchAs(app, requester, owner.id, 5)).json.coins).toHaveLength(5);
  });

  test("the quota lives in PostgreSQL: it holds across restarts and across instances", async () => {
    const env = { AQM_PAIR_QUOTA: "6" };
    const [owner, requester] = await Promise.all([newUser(), newUser()]);
    const one = makeApp(db.sql, env);
    await stock(one, owner, 20);
    expect((await fetchAs(one, requester, owner.id, 4)).json.coins).toHaveLength(4);
    const two = makeApp(db.sql, env); // another instance, or the same one restarted
    expect((await fetchAs(two, requester, owner.id, 4)).json.coins).toHaveLength(2);
    expect((await fetchAs(one, requester, owner.id, 1)).status).toBe(429);
  });

  test("a rotated AQM_HASH_SECRET: quotas and replays under the previous secret still count", async () => {
    const oldSecret = new TextEncoder().encode("old-hash-secret-old-hash-secret-0123456");
    const newSecret = new TextEncoder().encode("new-hash-secret-new-hash-secret-0123456");
    const env = { AQM_PAIR_QUOTA: "5" };
    const before = makeApp(db.sql, env, undefined, undefined, { current: oldSecret });
    const after = makeApp(db.sql, env, undefined, undefined, { current: newSecret, previous: oldSecret });
    const [owner, requester] = await Promise.all([newUser(), newUser()]);
    await stock(before, owner, 20);
    const key = crypto.randomUUID();
    const body = { target_user_id: owner.id, want: { bronze: 3 } };
    const first = await call(before, "POST", "/v1/coins/claim", { token: requester.token, body, headers: { "idempotency-key": key } });
    expect(first.json.coins).toHaveLength(3);
    const replay = await call(after, "POST", "/v1/coins/claim", { token: requester.token, body, headers: { "idempotency-key": key } });
    expect(replay.text).toBe(first.text);
    expect((await fetchAs(after, requester, owner.id, 5)).json.coins).toHaveLength(2); // 3 of 5 spent under the old secret
    expect((await fetchAs(after, requester, owner.id, 1)).status).toBe(429);
  });

  test("concurrent fetches of one pair cannot overspend the quota", async () => {
    const env = { AQM_PAIR_QUOTA: "25" };
    const [owner, requester] = await Promise.all([newUser(), newUser()]);
    const apps = [makeApp(db.sql, env), makeApp(db.sql, env), makeApp(db.sql, env)];
    await stock(apps[0]!, owner, 200);
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => fetchAs(apps[i % 3]!, requester, owner.id, 3)));
    const served = results.flatMap((r) => (r.status === 200 ? r.json.coins : []));
    expect(served).toHaveLength(25);
    expect(new Set(served.map((c: { key_id: string }) => c.key_id)).size).toBe(25);
    expect(results.every((r) => r.status === 200 || r.status === 429)).toBe(true);
  });

  test("old buckets stop counting and are deleted by the hourly hard delete", async () => {
    const app = makeApp(db.sql, { AQM_PAIR_QUOTA: "3" });
    const [owner, requester, admin] = await Promise.all([newUser(), newUser(), newUser({ admin: true })]);
    await stock(app, owner, 10);
    expect((await fetchAs(app, requester, owner.id, 3)).json.coins).toHaveLength(3);
    expect((await fetchAs(app, requester, owner.id, 1)).status).toBe(429);
    await db.sql`UPDATE claim_quota SET hours = ARRAY(SELECT h - 25 FROM unnest(hours) AS h)`; // 25 hours later
    expect((await fetchAs(app, requester, owner.id, 1)).json.coins).toHaveLength(1);
    const hardDelete = () => call(app, "POST", "/v1/admin/hard-delete", { token: admin.token, body: { grace_hours: 0 } });
    await hardDelete();
    const [row] = await db.sql`SELECT hours, counts FROM claim_quota`; // the spent bucket went with the write
    expect(row!.counts).toEqual([1]);
    await db.sql`UPDATE claim_quota SET hours = ARRAY(SELECT h - 25 FROM unnest(hours) AS h)`;
    await hardDelete();
    expect((await db.sql`SELECT count(*)::int AS n FROM claim_quota`)[0]!.n).toBe(0);
  });
});

test("AQM_RATE_LIMITS=off disables rate limits and the quota", async () => {
  const app = makeApp(db.sql, { AQM_RATE_LIMITS: "off", AQM_RATE_FETCH_PER_MIN: "1", AQM_PAIR_QUOTA: "1" });
  const [owner, requester] = await Promise.all([newUser(), newUser()]);
  await stock(app, owner, 10);
  for (let i = 0; i < 5; i++) expect((await fetchAs(app, requester, owner.id, 2)).json.coins).toHaveLength(2);
  expect((await db.sql`SELECT count(*)::int AS n FROM claim_quota`)[0]!.n).toBe(0);
});
