import { afterAll, beforeAll, expect, test } from "bun:test";
import { listMigrations, migrate } from "../src/db/migrate.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { call, makeApp, type TestApp } from "./helpers/app.ts";
import { createDatabase, databaseUrl, dropDatabase, useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();
let app: TestApp;
beforeAll(() => {
  app = makeApp(db.sql);
});

// A database with no migration applied yet: what a new instance sees before the first one migrated.
let empty: { name: string; sql: Sql };
beforeAll(async () => {
  const name = await createDatabase();
  empty = { name, sql: createPool(databaseUrl(name), { AQM_DB_POOL_MAX: 2 }) };
});
afterAll(async () => {
  await empty.sql.end({ timeout: 5 });
  await dropDatabase(empty.name);
});

test("live answers 200 without a token (tests/api.unavailable.test.ts: also with the database down)", async () => {
  const res = await call(app, "GET", "/v1/health/live");
  expect(res.status).toBe(200);
  expect(res.json).toEqual({ status: "ok" });
  expect(res.headers.get("cache-control")).toBe("no-store");
});

test("ready answers 200 when the database answers and every migration is applied", async () => {
  const res = await call(app, "GET", "/v1/health/ready");
  expect(res.status).toBe(200);
  expect(res.json).toEqual({ status: "ready", db_connected: true, schema_current: true });
  expect(res.headers.get("cache-control")).toBe("no-store");
});

test("ready answers 503 while the schema is not current, and 200 once it is", async () => {
  const unmigrated = makeApp(empty.sql);
  const before = await call(unmigrated, "GET", "/v1/health/ready");
  expect(before.status).toBe(503);
  expect(before.json).toEqual({ status: "not_ready", db_connected: true, schema_current: false });
  expect(before.headers.get("retry-after")).toBe("1");
  expect((await call(unmigrated, "GET", "/v1/health")).status).toBe(200); // the original route only asks whether PostgreSQL answers
  expect((await call(unmigrated, "GET", "/v1/health/live")).status).toBe(200);

  await migrate(empty.sql);
  expect((await call(unmigrated, "GET", "/v1/health/ready")).json).toEqual({ status: "ready", db_connected: true, schema_current: true });

  // one migration rolled back by hand: this build's schema is no longer complete
  const latest = listMigrations().at(-1)!;
  await empty.sql`DELETE FROM schema_version WHERE version = ${latest.version}`;
  expect((await call(unmigrated, "GET", "/v1/health/ready")).json).toEqual({ status: "not_ready", db_connected: true, schema_current: false });
  // a newer build's migration on top (a rolling deploy): still current for this build
  await empty.sql`INSERT INTO schema_version (version, description) VALUES (${latest.version}, ${latest.description}), (999, 'from_a_later_build')`;
  expect((await call(unmigrated, "GET", "/v1/health/ready")).status).toBe(200);
});
