import { expect, test } from "bun:test";
import { signToken } from "../src/auth/jwt.ts";
import { randomUUID } from "node:crypto";
import { makeCoin } from "./helpers/coins.ts";
import { holdKey, lockWaiters, useTestDatabase } from "./helpers/db.ts";
import { startServer } from "./helpers/server.ts";
import { waitFor } from "./helpers/wait.ts";

const db = useTestDatabase();
const secret = new TextEncoder().encode("test-secret-test-secret-test-secret-0123");

test("SIGTERM lets a request in flight finish with 200, refuses new ones, and exits 0", async () => {
  const server = await startServer({ DATABASE_URL: db.url, AQM_CRON: "on", AQM_SHUTDOWN_DRAIN_MS: "10000" });
  const owner = randomUUID();
  const token = await signToken(secret, owner);
  const coin = makeCoin();
  const blocker = await holdKey(db.sql, owner, coin); // the upload below waits for it
  const inFlight = fetch(`${server.url}/v1/coins/upload`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ coins: [coin] }),
  });
  await waitFor(async () => (await lockWaiters(db)) === 1, "the upload to wait for the held key");
  server.proc.kill("SIGTERM");
  await waitFor(async () => (await fetch(`${server.url}/v1/health`).then((r) => r.status, () => "refused")) === "refused", "new connections refused");
  await blocker.release();
  const res = await inFlight;
  expect(res.status).toBe(200);
  expect(await res.json()).toEqual({ inserted: 1, duplicates: 0 });
  expect(await server.exited).toBe(0);
  expect(server.lines.map((l) => l.msg).filter(Boolean)).toEqual(["listening", "shutting down", "stopped"]);
  const [{ n }] = await db.sql`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${db.name} AND application_name = 'aqm-coin-server'` as never as [{ n: number }];
  expect(n).toBe(0); // the pool was closed
}, 30000);

test("the drain timeout bounds shutdown when a request never finishes", async () => {
  const server = await startServer({ DATABASE_URL: db.url, AQM_SHUTDOWN_DRAIN_MS: "500" });
  const owner = randomUUID();
  const token = await signToken(secret, owner);
  const coin = makeCoin();
  const blocker = await holdKey(db.sql, owner, coin);
  const stuck = fetch(`${server.url}/v1/coins/upload`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ coins: [coin] }),
  }).then((r) => r.status, () => "closed");
  await waitFor(async () => (await lockWaiters(db)) === 1, "the upload to wait for the held key");
  const started = performance.now();
  server.proc.kill("SIGTERM");
  expect(await server.exited).toBe(0);
  expect(performance.now() - started).toBeLessThan(8000);
  expect(server.lines.some((l) => l.msg === "drain timeout: closing open connections")).toBe(true);
  await blocker.release();
  expect(await stuck).toBe("closed");
}, 30000);
