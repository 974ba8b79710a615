import { beforeAll, expect, test } from "bun:test";
import { makeCoin, makeCoins } from "./helpers/coins.ts";
import { call, makeApp, newUser, type TestApp, type User } from "./helpers/app.ts";
import { useTestDatabase } from "./helpers/db.ts";

// Every payload here must get a 4xx problem+json, never a 5xx, and leave the database as it was.
const db = useTestDatabase();
let app: TestApp;
let alice: User;
let admin: User;

beforeAll(async () => {
  app = makeApp(db.sql, { AQM_RATE_LIMITS: "off" });
  [alice, admin] = await Promise.all([newUser(), newUser({ admin: true })]);
  await call(app, "POST", "/v1/coins/upload", { token: alice.token, body: { coins: makeCoins(10) } });
});

const snapshot = async () => (await db.sql`
  SELECT count(*)::int AS n, coalesce(string_agg(md5(key_id || coalesce(fetched_by::text, '')), ',' ORDER BY record_id), '') AS digest
  FROM coin_inventory`)[0];

const coin = makeCoin();
const deep = (n: number): unknown => (n === 0 ? {} : { a: deep(n - 1) });
const sqlish = ["'; DROP TABLE coin_inventory; --", "1 OR 1=1", "\" OR \"\"=\"", "' UNION SELECT * FROM pg_shadow --", "$$; SELECT pg_sleep(10); $$"];

const uploads: [string, unknown][] = [
  ["null body", null],
  ["array body", [coin]],
  ["string body", "coins"],
  ["number body", 42],
  ["coins not an array", { coins: coin }],
  ["coins null", { coins: null }],
  ["coins of numbers", { coins: [1, 2, 3] }],
  ["coins of strings", { coins: ["a"] }],
  ["empty coin", { coins: [{}] }],
  ["missing key_id", { coins: [{ ...coin, key_id: undefined }] }],
  ["missing signature", { coins: [{ ...coin, signature_b64: undefined }] }],
  ["key_id number", { coins: [{ ...coin, key_id: 7 }] }],
  ["key_id empty", { coins: [{ ...coin, key_id: "" }] }],
  ["key_id 37 chars", { coins: [{ ...coin, key_id: "a".repeat(37) }] }],
  ["key_id unicode", { coins: [{ ...coin, key_id: "ключ-🔑" }] }],
  ["key_id NUL", { coins: [{ ...coin, key_id: "a\u0000b" }] }],
  ["key_id newline", { coins: [{ ...coin, key_id: "a\nb" }] }],
  ...sqlish.map((s): [string, unknown] => [`key_id SQL ${s}`, { coins: [{ ...coin, key_id: s }] }]),
  ...sqlish.map((s): [string, unknown] => [`category SQL ${s}`, { coins: [{ ...coin, coin_category: s }] }]),
  ["category lower case", { coins: [{ ...coin, coin_category: "gold" }] }],
  ["category null", { coins: [{ ...coin, coin_category: null }] }],
  ["category array", { coins: [{ ...coin, coin_category: ["GOLD"] }] }],
  ["truncated base64", { coins: [{ ...coin, public_key_b64: coin.public_key_b64.slice(0, -3) }] }],
  ["base64 without padding", { coins: [{ ...coin, signature_b64: Buffer.from("abcd").toString("base64").replace(/=+$/, "") + "x" }] }],
  ["base64url alphabet", { coins: [{ ...coin, public_key_b64: "ab-_" }] }],
  ["base64 with spaces", { coins: [{ ...coin, public_key_b64: "YWJj ZA==" }] }],
  ["base64 empty", { coins: [{ ...coin, public_key_b64: "" }] }],
  ["base64 only padding", { coins: [{ ...coin, signature_b64: "====" }] }],
  ["base64 number", { coins: [{ ...coin, public_key_b64: 1234 }] }],
  ["blob too large (413)", { coins: [{ ...coin, signature_b64: Buffer.alloc(6000).toString("base64") }] }],
  ["101 coins", { coins: makeCoins(101) }],
  ["user_id not a uuid", { user_id: "alice", coins: [coin] }],
  ["user_id SQL", { user_id: "' OR 1=1 --", coins: [coin] }],
  ["user_id of someone else (403)", { user_id: "00000000-0000-4000-8000-000000000000", coins: [coin] }],
  ["deep nesting", deep(2000)],
  ["deep nesting inside coins", { coins: [deep(500)] }],
  ["unknown property", { coins: [coin], owner: "someone" }],
  ["unknown property in a coin", { coins: [{ ...coin, private_key_b64: "AAAA" }] }],
  ["prototype pollution", JSON.parse(`{"__proto__": {"admin": true}, "coins": [{"__proto__": {}}]}`)],
];

const fetches: [string, Record<string, string>][] = [
  ["no params", {}],
  ["count huge", { count: "99999999999999999999999" }],
  ["count negative", { count: "-5" }],
  ["count float", { count: "2.5" }],
  ["count NaN", { count: "NaN" }],
  ["count Infinity", { count: "Infinity" }],
  ["count hex", { count: "0x10" }],
  ["count SQL", { count: "1; DELETE FROM coin_inventory" }],
  ["count empty", { count: "" }],
  ["target SQL", { target_user_id: "' OR '1'='1" }],
  ["target truncated uuid", { target_user_id: "6f1c0a9e-3b5d-4c1e-9a43-2f0f7d8b1c2" }],
  ["target unicode", { target_user_id: "６f1c0a9e-3b5d-4c1e-9a43-2f0f7d8b1c2a" }],
  ["category unknown", { coin_category: "PLATINUM" }],
  ["category SQL", { coin_category: "GOLD' OR '1'='1" }],
  ["requester of someone else (403)", { requester_id: "00000000-0000-4000-8000-000000000000" }],
];

test(`${uploads.length} hostile uploads and ${fetches.length} hostile fetches: always 4xx problem+json, nothing written`, async () => {
  expect(uploads.length + fetches.length).toBeGreaterThanOrEqual(50);
  const before = await snapshot();
  for (const [name, body] of uploads) {
    const res = await call(app, "POST", "/v1/coins/upload", { token: alice.token, rawBody: JSON.stringify(body), headers: { "content-type": "application/json" } });
    expect({ name, status: res.status >= 400 && res.status < 500 }).toEqual({ name, status: true });
    expect({ name, type: res.headers.get("content-type") }).toEqual({ name, type: "application/problem+json" });
    expect(res.text).not.toMatch(/at .*\.ts|postgres|SELECT|INSERT/i);
  }
  const good = { target_user_id: alice.id, coin_category: "BRONZE", count: "1" };
  for (const [name, params] of fetches) {
    const res = await call(app, "GET", "/v1/coins/fetch", { token: alice.token, query: name === "no params" ? {} : { ...good, ...params } });
    expect({ name, status: res.status >= 400 && res.status < 500 }).toEqual({ name, status: true });
    expect({ name, type: res.headers.get("content-type") }).toEqual({ name, type: "application/problem+json" });
  }
  expect(await snapshot()).toEqual(before);
});

test("raw bodies that are not JSON objects", async () => {
  const before = await snapshot();
  const raws: [string, string, string][] = [
    ["empty", "", "application/json"],
    ["garbage", "{{{{", "application/json"],
    ["truncated JSON", JSON.stringify({ coins: [coin] }).slice(0, 50), "application/json"],
    ["text/plain", JSON.stringify({ coins: [coin] }), "text/plain"],
    ["form", "coins=1", "application/x-www-form-urlencoded"],
    ["invalid UTF-8", "\xff\xfe{", "application/json"],
    ["1 MiB + 1 of spaces", " ".repeat(1024 * 1024 + 1), "application/json"],
  ];
  for (const [name, rawBody, type] of raws) {
    const res = await call(app, "POST", "/v1/coins/upload", { token: alice.token, rawBody, headers: { "content-type": type } });
    expect({ name, ok: res.status >= 400 && res.status < 500 }).toEqual({ name, ok: true });
    expect(res.headers.get("content-type")).toBe("application/problem+json");
  }
  for (const body of [{ max_age_days: -1 }, { max_age_days: 1e300 }, { max_age_days: 2.5 }, { max_age_day: 365 }, { grace_hours: 1 }, { extra: "x", max_age_days: "'; --" }]) {
    const res = await call(app, "POST", "/v1/admin/purge-stale", { token: admin.token, body });
    expect(res.status).toBe(422);
  }
  expect(await snapshot()).toEqual(before);
});

test("deep nesting is refused at once with 400, before validation", async () => {
  for (const depth of [10, 10_000, 100_000]) {
    const body = "[".repeat(depth) + "]".repeat(depth);
    const started = performance.now();
    const res = await call(app, "POST", "/v1/coins/upload", { token: alice.token, rawBody: `{"coins":${body}}`, headers: { "content-type": "application/json" } });
    expect(res.status).toBe(400);
    expect(res.json.detail).toContain("nested deeper");
    expect(performance.now() - started).toBeLessThan(1000);
  }
});

test("admin routes refuse a caller without the scope before looking at the body", async () => {
  const res = await call(app, "POST", "/v1/admin/purge-stale", { token: alice.token, body: { max_age_days: "nope", junk: [[[1]]] } });
  expect(res.status).toBe(403);
});

test("random mutations of a valid upload never produce a 5xx (seeded fuzz)", async () => {
  let seed = 0x5eed;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const valid = JSON.stringify({ coins: [makeCoin("GOLD"), makeCoin("SILVER")] });
  const alphabet = '{}[]":,0123456789abcdefAZ=+/ \\\u0000é🔑-';
  const statuses = new Set<number>();
  for (let i = 0; i < 300; i++) {
    const chars = [...valid];
    for (let m = 0; m <= rand(4); m++) {
      const at = rand(chars.length);
      const op = rand(3);
      if (op === 0) chars.splice(at, 1);
      else if (op === 1) chars.splice(at, 0, alphabet[rand(alphabet.length)]!);
      else chars[at] = alphabet[rand(alphabet.length)]!;
    }
    const res = await call(app, "POST", "/v1/coins/upload", { token: alice.token, rawBody: chars.join(""), headers: { "content-type": "application/json" } });
    statuses.add(res.status);
    expect(res.status).toBeLessThan(500);
  }
  expect([...statuses].some((s) => s >= 400)).toBe(true);
});
