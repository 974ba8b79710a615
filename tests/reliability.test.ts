import { afterAll, beforeAll, beforeEach, describe, expect, spyOn, test } from "bun:test";
import { connect } from "node:net";
import { claimKeys } from "../src/claims/keys.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { call, makeApp, newUser, testHashSecrets, type TestApp, type User } from "./helpers/app.ts";
import { makeCoin, makeCoins } from "./helpers/coins.ts";
import { createDatabase, databaseUrl, dropDatabase, lockWaiters, resetClaims, useTestDatabase } from "./helpers/db.ts";
import { waitFor } from "./helpers/wait.ts";

const db = useTestDatabase();
beforeEach(() => resetClaims(db.sql));

const upload = (app: TestApp, user: User, coins: unknown[]) => call(app, "POST", "/v1/coins/upload", { token: user.token, body: { coins } });

describe("concurrent uploads of one key_id", () => {
  let pools: Sql[];
  beforeAll(() => {
    pools = [createPool(db.url, { AQM_DB_POOL_MAX: 4 }), createPool(db.url, { AQM_DB_POOL_MAX: 4 })];
  });
  afterAll(() => Promise.all(pools.map((p) => p.end({ timeout: 5 }))));

  for (const instances of [1, 2]) {
    test(`with other content: exactly one stored (200) and one 409, in every trial (${instances} instance${instances > 1 ? "s" : ""})`, async () => {
      const apps = pools.slice(0, instances).map((p) => makeApp(p, { AQM_RATE_LIMITS: "off" }));
      const owner = await newUser();
      for (let trial = 0; trial < 60; trial++) {
        const a = makeCoin("SILVER");
        const b = { ...makeCoin("SILVER"), key_id: a.key_id };
        const [ra, rb] = await Promise.all([upload(apps[0]!, owner, [a]), upload(apps[instances - 1]!, owner, [b])]);
        expect([ra.status, rb.status].sort()).toEqual([200, 409]);
        const won = ra.status === 200 ? a : b;
        expect((ra.status === 200 ? ra : rb).json).toEqual({ inserted: 1, duplicates: 0 });
        expect((ra.status === 409 ? ra : rb).json.key_ids).toEqual([a.key_id]);
        const [row] = await db.sql`SELECT encode(public_key_blob, 'base64') AS pk FROM coin_inventory WHERE key_id = ${a.key_id}`;
        expect(row!.pk.replace(/\n/g, "")).toBe(won.public_key_b64);
      }
    }, 30_000);
  }

  test("with the same content: both 200, one inserted and one duplicate", async () => {
    const apps = pools.map((p) => makeApp(p, { AQM_RATE_LIMITS: "off" }));
    const owner = await newUser();
    for (let trial = 0; trial < 30; trial++) {
      const coin = makeCoin();
      const results = await Promise.all(apps.map((app) => upload(app, owner, [coin])));
      expect(results.map((r) => r.status)).toEqual([200, 200]);
      expect(results.map((r) => r.json.inserted).sort()).toEqual([0, 1]);
    }
  }, 30_000);
});

test("the courier forgets: after the hard delete nothing in the database or the log names who claimed whose coins", async () => {
  const app = makeApp(db.sql, { AQM_LOG: "on" });
  const [owner, requester, admin] = await Promise.all([newUser(), newUser(), newUser({ admin: true })]);
  await upload(app, owner, makeCoins(6));
  const key = "7d1f4a3c-2b6e-4f8a-9c0d-1e2f3a4b5c6d";
  const logged = spyOn(console, "log").mockImplementation(() => {});
  try {
    expect((await call(app, "GET", "/v1/coins/fetch", { token: requester.token, query: { target_user_id: owner.id, coin_category: "BRONZE", count: 2 } })).status).toBe(200);
    expect((await call(app, "POST", "/v1/coins/claim", { token: requester.token, headers: { "idempotency-key": key }, body: { target_user_id: owner.id, want: { bronze: 2 } } })).status).toBe(200);
    // a claim's log line names the requester and the route, never the target
    const claimLines = () => logged.mock.calls.map((c) => String(c[0])).filter((l) => /"route":"\/v1\/coins\/(fetch|claim)"/.test(l));
    await waitFor(() => claimLines().length === 2, "both claims logged"); // logged after the response
    const lines = claimLines();
    for (const line of lines) expect(line).not.toContain(owner.id);
  } finally {
    logged.mockRestore();
  }
  expect((await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token, body: { grace_hours: 0 } })).json).toEqual({ deleted: 4 });
  // every row of every table, as text: the requester's id appears nowhere
  const tables = (await db.sql<{ t: string }[]>`SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public'`).map((r) => r.t);
  for (const table of tables) {
    const [{ hit }] = await db.sql.unsafe(`SELECT count(*)::int AS hit FROM ${table} x WHERE x::text ILIKE '%' || $1 || '%'`, [requester.id]) as [{ hit: number }];
    expect(hit, `${table} mentions the requester`).toBe(0);
  }
  // what the quota keeps is a keyed hash; the claimed key ids keep the day only
  const [quota] = await db.sql`SELECT pair::text AS pair FROM claim_quota`;
  expect(quota!.pair).toBe(claimKeys(testHashSecrets.current).pair(requester.id, owner.id)[0]);
  expect(quota!.pair).not.toBe(claimKeys(new TextEncoder().encode("another-secret-another-secret-another!!")).pair(requester.id, owner.id)[0]);
  const kept = await db.sql`SELECT * FROM claimed_key`;
  expect(kept).toHaveLength(4);
  for (const row of kept) expect(Object.keys(row).sort()).toEqual(["claimed_on", "key_id", "user_id"]);
  expect((await db.sql`SELECT count(*)::int AS n FROM claim_replay`)[0]!.n).toBe(0);
});

test("an unexpected database error is a 500 that says nothing, logged once with its SQLSTATE and message", async () => {
  const name = await createDatabase(); // never migrated: every table is missing
  const sql = createPool(databaseUrl(name), { AQM_DB_POOL_MAX: 2 });
  const errors = spyOn(console, "error").mockImplementation(() => {});
  try {
    const app = makeApp(sql);
    const user = await newUser();
    const res = await call(app, "GET", "/v1/coins/count", { token: user.token, headers: { "x-request-id": "broken-1" } });
    expect(res.status).toBe(500);
    expect(res.json).toEqual({ type: "urn:aqm:problem:internal", title: "Internal server error", status: 500, detail: "The request could not be completed" });
    const lines = errors.mock.calls.map((c) => JSON.parse(String(c[0])));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: "error", request_id: "broken-1", code: "42P01" });
    expect(lines[0].error).toContain("does not exist");
  } finally {
    errors.mockRestore();
    await sql.end({ timeout: 1 });
    await dropDatabase(name);
  }
});

test("a Host header shorter than four characters cannot shift routing", async () => {
  const app = makeApp(db.sql);
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: app.fetch });
  const raw = (host: string, path: string) => new Promise<string>((resolve) => {
    const socket = connect(server.port!, "127.0.0.1", () => socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`));
    let data = "";
    socket.on("data", (d) => (data += d));
    socket.on("end", () => resolve(data.split("\r\n")[0]!));
  });
  try {
    for (const host of ["a", "ab", "abc", "abcd"]) {
      expect(await raw(host, "/zz/v1/health")).toContain("404");
      expect(await raw(host, "/v1/health")).toContain("200");
      expect(await raw(host, "/x/docs/json")).toContain("404");
    }
  } finally {
    server.stop(true);
  }
});

test("a queued claim whose client has gone leaves its batch: no coin is claimed for it", async () => {
  const app = makeApp(db.sql, { AQM_DB_POOL_MAX: "4" }); // two claim statements in flight at most (the second once the first waited AQM_CLAIM_OVERLAP_MS)
  const [owner, r1, r2, r3] = await Promise.all([newUser(), newUser(), newUser(), newUser()]);
  await upload(app, owner, makeCoins(10));
  // hold the quota rows of r1's and r2's pairs: their claim statements wait at the database
  const keys = claimKeys(testHashSecrets.current);
  const holder = await db.sql.reserve();
  try {
    await holder`BEGIN`;
    for (const r of [r1, r2]) {
      await holder`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner.id}::uuid, ${keys.pair(r.id, owner.id)[0]}::uuid, '{}', '{}')`;
    }
    const fetchAs = (r: User, signal?: AbortSignal) => app.handle(new Request(
      `http://localhost/v1/coins/fetch?target_user_id=${owner.id}&coin_category=BRONZE&count=1`,
      { headers: { authorization: `Bearer ${r.token}` }, signal }));
    const blocked = [fetchAs(r1)];
    await waitFor(async () => (await lockWaiters(db)) === 1, "the first claim statement waiting");
    blocked.push(fetchAs(r2));
    await waitFor(async () => (await lockWaiters(db)) === 2, "the second claim statement waiting");
    const gone = new AbortController();
    const queued = fetchAs(r3, gone.signal).catch(() => undefined);
    const admin = await newUser({ admin: true });
    await waitFor(async () => (await call(app, "GET", "/metrics", { token: admin.token })).text.includes("aqm_claim_queue 1"), "the third claim queued");
    gone.abort();
    await holder`ROLLBACK`;
    expect((await Promise.all(blocked)).map((r) => r.status)).toEqual([200, 200]);
    await queued;
  } finally {
    holder.release();
  }
  const claimers = await db.sql`SELECT fetched_by FROM coin_inventory WHERE fetched_at IS NOT NULL`;
  expect(claimers.map((r) => r.fetched_by).sort()).toEqual([r1.id, r2.id].sort());
});

test("a client that leaves while its claim runs at the database gets nothing claimed: its coins go back in stock, its quota is refunded; a keyed claim keeps its answer for the retry", async () => {
  const app = makeApp(db.sql, { AQM_DB_POOL_MAX: "4" }); // two claim statements in flight at most (the second once the first waited AQM_CLAIM_OVERLAP_MS)
  const [owner, r1, r2] = await Promise.all([newUser(), newUser(), newUser()]);
  await upload(app, owner, makeCoins(10));
  const keys = claimKeys(testHashSecrets.current);
  const pairOf = (r: User) => keys.pair(r.id, owner.id)[0];
  const holder = await db.sql.reserve();
  const left = [new AbortController(), new AbortController()];
  const idempotencyKey = crypto.randomUUID();
  try {
    // a keyed claim needs its pair's row to exist (else it creates it first, then runs again)
    await db.sql`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner.id}::uuid, ${pairOf(r2)}::uuid, '{}', '{}')`;
    await holder`BEGIN`;
    await holder`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner.id}::uuid, ${pairOf(r1)}::uuid, '{}', '{}')`;
    await holder`SELECT 1 FROM claim_quota WHERE target = ${owner.id}::uuid AND pair = ${pairOf(r2)}::uuid FOR UPDATE`;
    const unkeyed = app.handle(new Request(`http://localhost/v1/coins/fetch?target_user_id=${owner.id}&coin_category=BRONZE&count=2`, {
      headers: { authorization: `Bearer ${r1.token}` }, signal: left[0]!.signal,
    })).catch(() => undefined);
    await waitFor(async () => (await lockWaiters(db)) === 1, "the unkeyed claim waiting at the database");
    const keyed = app.handle(new Request("http://localhost/v1/coins/claim", {
      method: "POST", signal: left[1]!.signal,
      headers: { authorization: `Bearer ${r2.token}`, "content-type": "application/json", "idempotency-key": idempotencyKey },
      body: JSON.stringify({ target_user_id: owner.id, want: { bronze: 2 } }),
    })).catch(() => undefined);
    await waitFor(async () => (await lockWaiters(db)) === 2, "the keyed claim waiting at the database");
    for (const c of left) c.abort();
    await holder`ROLLBACK`;
    await Promise.all([unkeyed, keyed]);
  } finally {
    holder.release();
  }
  // r1's two coins are back; r2's stay claimed, under its key
  await waitFor(async () => (await db.sql`SELECT 1 FROM coin_inventory WHERE fetched_by = ${r1.id}`).length === 0, "r1's coins back in stock");
  const claimed = await db.sql<{ fetched_by: string; key_id: string }[]>`SELECT fetched_by, key_id FROM coin_inventory WHERE fetched_at IS NOT NULL ORDER BY key_id`;
  expect(claimed.map((c) => c.fetched_by)).toEqual([r2.id, r2.id]);
  const spent = await db.sql<{ pair: string; n: number }[]>`
    SELECT pair::text, (SELECT coalesce(sum(c), 0)::int FROM unnest(counts) c) AS n FROM claim_quota WHERE pair IN (${pairOf(r1)}, ${pairOf(r2)})`;
  expect(Object.fromEntries(spent.map((s) => [s.pair, s.n]))).toEqual({ [pairOf(r1)]: 0, [pairOf(r2)]: 2 });
  const admin = await newUser({ admin: true });
  expect((await call(app, "GET", "/metrics", { token: admin.token })).text).toContain('aqm_claim_coins_returned_total{why="gone"} 2');

  // the retry with the same key gets the two coins the claim took; r1 asking again gets two of the stock
  const retry = await call(app, "POST", "/v1/coins/claim", {
    token: r2.token, headers: { "idempotency-key": idempotencyKey }, body: { target_user_id: owner.id, want: { bronze: 2 } },
  });
  expect(retry.status).toBe(200);
  expect(retry.json.coins.map((c: { key_id: string }) => c.key_id).sort()).toEqual(claimed.map((c) => c.key_id));
  const again = await call(app, "GET", `/v1/coins/fetch?target_user_id=${owner.id}&coin_category=BRONZE&count=2`, { token: r1.token });
  expect(again.json.coins).toHaveLength(2);
  expect(again.json.coins.map((c: { key_id: string }) => c.key_id).some((k: string) => claimed.some((c) => c.key_id === k))).toBe(false);
});
