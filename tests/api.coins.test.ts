import { beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { makeCoin, makeCoins, standardBatch } from "./helpers/coins.ts";
import { call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { resetCoins, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let app: TestApp;
let alice: User;
let bob: User;
let admin: User;

beforeAll(async () => {
  app = makeApp(db.sql);
  [alice, bob, admin] = await Promise.all([newUser(), newUser(), newUser({ admin: true })]);
});
beforeEach(() => resetCoins(db.sql));

const upload = (user: User, coins: unknown[], extra: Record<string, unknown> = {}) =>
  call(app, "POST", "/v1/coins/upload", { token: user.token, body: { coins, ...extra } });
const fetchCoins = (user: User, target: string, coin_category: string, count: number) =>
  call(app, "GET", "/v1/coins/fetch", { token: user.token, query: { target_user_id: target, coin_category, count } });

const noLastResort = { gold: false, silver: false, bronze: false };
const counts = (gold: number, silver: number, bronze: number) => ({ gold, silver, bronze, last_resort: noLastResort });

function expectProblem(res: { status: number; headers: Headers; json: any }, status: number) {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  expect(res.json).toMatchObject({ status, type: expect.stringMatching(/^urn:aqm:problem:/), title: expect.any(String), detail: expect.any(String) });
}

describe("POST /v1/coins/upload", () => {
  test("stores the caller's coins and counts duplicates", async () => {
    const batch = standardBatch();
    const first = await upload(alice, batch);
    expect(first.status).toBe(200);
    expect(first.json).toEqual({ inserted: 16, duplicates: 0 });
    expect((await upload(alice, batch)).json).toEqual({ inserted: 0, duplicates: 16 });
    expect((await upload(alice, batch, { user_id: alice.id })).json).toEqual({ inserted: 0, duplicates: 16 });
  });

  test("same key_id with different content → 409 naming the key_ids, nothing written", async () => {
    const coin = makeCoin();
    await upload(alice, [coin]);
    const res = await upload(alice, [makeCoin(), { ...makeCoin(), key_id: coin.key_id }]);
    expectProblem(res, 409);
    expect(res.json.key_ids).toEqual([coin.key_id]);
    expect((await call(app, "GET", "/v1/coins/count", { token: alice.token })).json).toEqual(counts(0, 0, 1));
  });

  test("a blob that decodes past its limit → 413 naming the field, nothing written", async () => {
    const big = { ...makeCoin(), public_key_b64: Buffer.alloc(2049).toString("base64") };
    const res = await upload(alice, [makeCoin(), big]);
    expectProblem(res, 413);
    expect(res.json.errors).toEqual([{ field: "coins[1].public_key_b64", message: "decodes to more than 2048 bytes" }]);
    const sig = await upload(alice, [{ ...makeCoin(), signature_b64: Buffer.alloc(5121).toString("base64") }]);
    expect(sig.json.errors[0].field).toBe("coins[0].signature_b64");
    const loose = makeApp(db.sql, { AQM_TIER_SIZES: "loose" });
    const atLimit = await call(loose, "POST", "/v1/coins/upload", {
      token: alice.token, body: { coins: [{ ...makeCoin(), public_key_b64: Buffer.alloc(2048).toString("base64"), signature_b64: Buffer.alloc(5120).toString("base64") }] },
    });
    expect(atLimit.status).toBe(200);
    expect((await db.sql`SELECT count(*)::int AS n FROM coin_inventory`)[0]!.n).toBe(1);
  });

  test("a body over 1 MiB → 413 before parsing, by Content-Length and by streaming", async () => {
    const huge = JSON.stringify({ coins: [{ pad: "x".repeat(1024 * 1024) }] });
    expectProblem(await call(app, "POST", "/v1/coins/upload", { token: alice.token, rawBody: huge, headers: { "content-type": "application/json" } }), 413);
    const stream = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 20; i++) controller.enqueue(new TextEncoder().encode("x".repeat(64 * 1024)));
        controller.close();
      },
    });
    expectProblem(await call(app, "POST", "/v1/coins/upload", { token: alice.token, rawBody: stream, headers: { "content-type": "application/json" } }), 413);
  });

  test("more than 100 coins, or none → 422", async () => {
    expectProblem(await upload(alice, makeCoins(101)), 422);
    const none = await upload(alice, []);
    expectProblem(none, 422);
    expect(none.json.errors[0].field).toBe("coins");
  });

  test("invalid tier, key_id or base64 → 422 naming the field", async () => {
    const res = await upload(alice, [{ ...makeCoin(), coin_category: "PLATINUM" }, { ...makeCoin(), key_id: "has space" }, { ...makeCoin(), signature_b64: "abc" }]);
    expectProblem(res, 422);
    expect(res.json.errors.map((e: { field: string }) => e.field)).toEqual(["coins[0].coin_category", "coins[1].key_id", "coins[2].signature_b64"]);
  });
});

describe("GET /v1/coins/fetch", () => {
  test("claims oldest first for the caller, never twice, with no-store", async () => {
    const batch = makeCoins(5, "SILVER");
    await upload(alice, batch);
    const first = await fetchCoins(bob, alice.id, "SILVER", 3);
    expect(first.status).toBe(200);
    expect(first.headers.get("cache-control")).toBe("no-store");
    expect(first.json.coins).toEqual(batch.slice(0, 3));
    const second = await fetchCoins(bob, alice.id, "SILVER", 3);
    expect(second.json.coins).toEqual(batch.slice(3));
    expect((await fetchCoins(bob, alice.id, "SILVER", 3)).json).toEqual({ coins: [] });
    const [row] = await db.sql`SELECT DISTINCT fetched_by FROM coin_inventory`;
    expect(row!.fetched_by).toBe(bob.id);
  });

  test("requester_id equal to the token's subject is accepted", async () => {
    await upload(alice, makeCoins(1));
    const res = await call(app, "GET", "/v1/coins/fetch", { token: bob.token, query: { target_user_id: alice.id, coin_category: "BRONZE", count: 1, requester_id: bob.id } });
    expect(res.json.coins).toHaveLength(1);
  });

  test("count outside 1–100 → 422", async () => {
    for (const count of [0, 101, -1]) {
      const res = await fetchCoins(bob, alice.id, "GOLD", count);
      expectProblem(res, 422);
      expect(res.json.errors[0].field).toBe("count");
    }
  });
});

describe("GET /v1/coins/count", () => {
  test("defaults to the caller's device; any user's counts are readable, summed over its devices and per device", async () => {
    await upload(alice, standardBatch());
    expect((await call(app, "GET", "/v1/coins/count", { token: alice.token })).json).toEqual(counts(5, 6, 5));
    const other = await call(app, "GET", "/v1/coins/count", { token: bob.token, query: { user_id: alice.id } });
    expect(other.status).toBe(200);
    expect(other.json).toEqual({ ...counts(5, 6, 5), devices: [{ device_id: 1, ...counts(5, 6, 5) }] });
  });

  test("AQM_COUNT_VISIBILITY=self: own counts only (403 otherwise)", async () => {
    const strict = makeApp(db.sql, { AQM_COUNT_VISIBILITY: "self" });
    expect((await call(strict, "GET", "/v1/coins/count", { token: alice.token, query: { user_id: alice.id } })).status).toBe(200);
    expectProblem(await call(strict, "GET", "/v1/coins/count", { token: bob.token, query: { user_id: alice.id } }), 403);
  });
});

describe("admin routes", () => {
  test("purge-stale and hard-delete report rows deleted", async () => {
    await upload(alice, makeCoins(3));
    await db.sql`UPDATE coin_inventory SET uploaded_at = now() - interval '40 days'`;
    await fetchCoins(bob, alice.id, "BRONZE", 1);
    const purge = await call(app, "POST", "/v1/admin/purge-stale", { token: admin.token, body: { max_age_days: 30 } });
    expect(purge.status).toBe(200);
    expect(purge.json).toEqual({ deleted: 2 });
    expect((await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token })).json).toEqual({ deleted: 0 });
    expect((await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token, body: { grace_hours: 0 } })).json).toEqual({ deleted: 1 });
  });

  test("parameters out of range → 422", async () => {
    expectProblem(await call(app, "POST", "/v1/admin/purge-stale", { token: admin.token, body: { max_age_days: 0 } }), 422);
    expectProblem(await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token, body: { grace_hours: 8761 } }), 422);
  });
});

describe("GET /v1/health", () => {
  test("needs no token and reports the database", async () => {
    const res = await call(app, "GET", "/v1/health");
    expect(res.status).toBe(200);
    expect(res.json).toEqual({ status: "ok", db_connected: true });
  });
});

test("X-Request-Id is echoed when well-formed and generated otherwise", async () => {
  const given = await call(app, "GET", "/v1/health", { headers: { "x-request-id": "abc-123" } });
  expect(given.headers.get("x-request-id")).toBe("abc-123");
  const generated = await call(app, "GET", "/v1/health", { headers: { "x-request-id": "bad id\twith junk" } });
  expect(generated.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  const onError = await call(app, "GET", "/v1/nothing-here", { headers: { "x-request-id": "err-1" } });
  expectProblem(onError, 404);
  expect(onError.headers.get("x-request-id")).toBe("err-1");
});
