import { afterAll, expect, test } from "bun:test";
import { freePort } from "../src/db/embedded.ts";
import { createPool } from "../src/db/pool.ts";
import { call, makeApp, newUser } from "./helpers/app.ts";
import { makeCoin } from "./helpers/coins.ts";

// A pool pointed at a port where no PostgreSQL listens: what a client sees when the database is down.
const port = await freePort();
const sql = createPool(`postgres://nobody:nothing@127.0.0.1:${port}/none`, { AQM_DB_CONNECT_TIMEOUT_S: 1 });
afterAll(() => sql.end({ timeout: 1 }));
const app = makeApp(sql);

test("health answers 503 degraded, quickly", async () => {
  const started = performance.now();
  const res = await call(app, "GET", "/v1/health");
  expect(res.status).toBe(503);
  expect(res.json).toEqual({ status: "degraded", db_connected: false });
  expect(performance.now() - started).toBeLessThan(5000);
});

test("live still answers 200 at once (it never asks the database); ready answers 503 not_ready, quickly", async () => {
  let started = performance.now();
  expect((await call(app, "GET", "/v1/health/live")).status).toBe(200);
  expect(performance.now() - started).toBeLessThan(1000);
  started = performance.now();
  const ready = await call(app, "GET", "/v1/health/ready");
  expect(ready.status).toBe(503);
  expect(ready.json).toEqual({ status: "not_ready", db_connected: false, schema_current: false });
  expect(ready.headers.get("retry-after")).toBe("1");
  expect(performance.now() - started).toBeLessThan(5000);
});

test("every data route answers 503 problem+json with Retry-After, not a hang or a 500", async () => {
  const user = await newUser({ admin: true });
  const started = performance.now();
  const requests = [
    call(app, "GET", "/v1/coins/count", { token: user.token }),
    call(app, "GET", "/v1/coins/fetch", { token: user.token, query: { target_user_id: user.id, coin_category: "GOLD", count: 1 } }),
    call(app, "POST", "/v1/coins/upload", { token: user.token, body: { coins: [makeCoin("GOLD")] } }),
    call(app, "POST", "/v1/coins/claim", { token: user.token, body: { target_user_id: user.id, want: { bronze: 1 } } }),
    call(app, "POST", "/v1/admin/purge-stale", { token: user.token }),
  ];
  for (const res of await Promise.all(requests)) {
    expect(res.status).toBe(503);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(res.text).not.toContain("ECONNREFUSED");
  }
  expect(performance.now() - started).toBeLessThan(2500); // AQM_DB_POOL_WAIT_MS (2 s) plus the margin
});
