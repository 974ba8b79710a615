import { afterAll, beforeAll } from "bun:test";
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { migrate } from "../../src/db/migrate.ts";
import { createPool, type PoolConfig, type Sql } from "../../src/db/pool.ts";

export function serverUrl(): string {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) throw new Error("TEST_DATABASE_URL is not set (tests/setup.ts sets it)");
  return url;
}

export function databaseUrl(name: string): string {
  const url = new URL(serverUrl());
  url.pathname = `/${name}`;
  return url.toString();
}

/** Creates an empty database on the test server; returns its name. */
export async function createDatabase(): Promise<string> {
  const name = `aqm_test_${randomBytes(6).toString("hex")}`;
  const admin = postgres(serverUrl(), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return name;
}

export async function dropDatabase(name: string): Promise<void> {
  const admin = postgres(serverUrl(), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

export interface TestDatabase {
  sql: Sql;
  url: string;
  name: string;
}

/**
 * Gives the calling test file its own freshly migrated database, dropped after the file.
 * The returned object is filled in by beforeAll.
 */
export function useTestDatabase(pool: Partial<PoolConfig> = {}): TestDatabase {
  const db = {} as TestDatabase;
  beforeAll(async () => {
    db.name = await createDatabase();
    db.url = databaseUrl(db.name);
    db.sql = createPool(db.url, { AQM_DB_POOL_MAX: 10, ...pool }, "aqm-tests");
    await migrate(db.sql);
  });
  afterAll(async () => {
    await db.sql?.end({ timeout: 5 });
    if (db.name) await dropDatabase(db.name);
  });
  return db;
}

/** Empties the coin table between tests of one file. */
export async function resetCoins(sql: Sql): Promise<void> {
  await sql`TRUNCATE coin_inventory RESTART IDENTITY`;
}

/** Empties every table a claim writes (coins, quotas, replays, claimed key ids, last-resort coins). */
export async function resetClaims(sql: Sql): Promise<void> {
  await sql`TRUNCATE coin_inventory, claim_quota, claim_replay, claimed_key, last_resort_coin RESTART IDENTITY`;
}

/**
 * Inserts `coin` for `owner` in a transaction left open: an upload of the same key_id blocks on
 * the unique index until `release()` rolls it back. Makes a request slow on purpose.
 */
export async function holdKey(sql: Sql, owner: string, coin: { key_id: string; coin_category: string }) {
  const conn = await sql.reserve();
  await conn`BEGIN`;
  await conn`INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
             VALUES (${owner}::uuid, ${coin.key_id}, ${coin.coin_category}, '\\x00', '\\x00')`;
  return {
    async release() {
      await conn`ROLLBACK`;
      conn.release();
    },
  };
}

/** Statements of `db`'s database waiting for a lock right now (a request made slow on purpose is there). */
export async function lockWaiters(db: TestDatabase): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${db.name} AND wait_event_type = 'Lock'`;
  return row!.n;
}
