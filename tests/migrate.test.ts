import { afterAll, beforeAll, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { listMigrations, migrate, rollbackLatest } from "../src/db/migrate.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { createDatabase, databaseUrl, dropDatabase } from "./helpers/db.ts";

let name: string;
let sql: Sql;
beforeAll(async () => {
  name = await createDatabase();
  sql = createPool(databaseUrl(name), { AQM_DB_POOL_MAX: 2 });
});
afterAll(async () => {
  await sql.end({ timeout: 5 });
  await dropDatabase(name);
});

const versions = async () => (await sql<{ version: number }[]>`SELECT version FROM schema_version ORDER BY version`).map((r) => r.version);

test("the program carries exactly db/migrations/: numbered without gaps, each with its rollback, the files' text", async () => {
  const dir = join(import.meta.dir, "../db/migrations");
  const files = readdirSync(dir).filter((f) => f.endsWith(".sql")).sort();
  const all = listMigrations();
  expect(all.map((m) => `${String(m.version).padStart(3, "0")}_${m.description}.sql`)).toEqual(files);
  all.forEach((m, i) => expect(m.version).toBe(i + 1));
  for (const [i, m] of all.entries()) {
    expect(m.up).toBe(readFileSync(join(dir, files[i]!), "utf8"));
    expect(m.down).toBe(readFileSync(join(dir, "rollback", files[i]!), "utf8"));
  }
  expect(readdirSync(join(dir, "rollback")).sort()).toEqual(files);
});

test("two runners started at the same moment apply each migration exactly once", async () => {
  const runners = Array.from({ length: 4 }, () => createPool(databaseUrl(name), { AQM_DB_POOL_MAX: 1 }));
  try {
    const applied = await Promise.all(runners.map((r) => migrate(r)));
    const total = applied.flat().map((m) => m.version).sort((a, b) => a - b);
    expect(total).toEqual(listMigrations().map((m) => m.version));
  } finally {
    await Promise.all(runners.map((r) => r.end({ timeout: 5 })));
  }
  expect(await versions()).toEqual(listMigrations().map((m) => m.version));
});

test("the schema has the table, its unique key and the three partial indexes", async () => {
  const indexes = await sql<{ indexname: string; indexdef: string }[]>`
    SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'coin_inventory' ORDER BY indexname`;
  const byName = Object.fromEntries(indexes.map((i) => [i.indexname, i.indexdef]));
  expect(byName.coin_inventory_owner_key).toContain("UNIQUE");
  expect(byName.coin_inventory_available).toContain("WHERE (fetched_at IS NULL)");
  expect(byName.coin_inventory_expiry).toContain("WHERE (fetched_at IS NULL)");
  expect(byName.coin_inventory_claimed).toContain("WHERE (fetched_at IS NOT NULL)");
});

test("a second run is a no-op", async () => {
  expect(await migrate(sql)).toEqual([]);
});

test("rollback reverts the newest migration; migrate re-applies it", async () => {
  const before = await versions();
  const reverted = await rollbackLatest(sql);
  expect(reverted?.version).toBe(before.at(-1)!);
  expect(await versions()).toEqual(before.slice(0, -1));
  await migrate(sql);
  expect(await versions()).toEqual(before);
});

test("every migration rolls back, newest first, down to an empty schema, with data in the tables; migrate then re-applies them all", async () => {
  const owner = crypto.randomUUID();
  await sql`INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob) VALUES (${owner}::uuid, 'k', 'BRONZE', '\\x01', '\\x02')`;
  await sql`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner}::uuid, ${crypto.randomUUID()}::uuid, '{1}', '{1}')`;
  await sql`INSERT INTO claim_replay (target, ref, body) VALUES (${owner}::uuid, ${crypto.randomUUID()}::uuid, ${crypto.randomUUID()}::uuid)`;
  const all = await versions();
  for (let n = all.length; n > 0; n--) {
    expect((await rollbackLatest(sql))?.version).toBe(all[n - 1]!);
  }
  expect(await versions()).toEqual([]);
  const tables = await sql`SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_version'`;
  expect(tables.map((t) => t.tablename)).toEqual([]);
  await migrate(sql);
  expect(await versions()).toEqual(all);
});
