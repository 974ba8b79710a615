import { afterAll, beforeAll } from "bun:test";
import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { migrate } from "../../src/db/migrate.ts";
import { createPool, SESSION_POOL_MAX, type PoolConfig, type Sql } from "../../src/db/pool.ts";

/**
 * TEST_POOLER_URL (.ci/pooler.sh sets it): a PgBouncer in transaction mode in front of the test
 * server. The pools under test then go through it, set up as AQM_DB_POOLER=transaction runs in
 * production, while what needs a session (migrations, LISTEN, fixtures holding a lock) stays direct.
 */
const poolerUrl = process.env.TEST_POOLER_URL;
const pooling: Partial<PoolConfig> = poolerUrl ? { AQM_DB_POOLER: "transaction" } : {};

const sessions = new WeakMap<Sql, Sql>();
const ownSessions: Sql[] = [];
afterAll(async () => {
  await Promise.all(ownSessions.splice(0).map((s) => s.end({ timeout: 5 })));
});
/**
 * The session pool that goes with a pool under test (what createApp calls `session`): the direct
 * one behind the pooler, else a pool of its own on the same database, as the server opens one.
 */
export function sessionFor(sql: Sql): Sql {
  let session = sessions.get(sql);
  if (!session) {
    session = postgres({ ...(sql.options as unknown as postgres.Options<{}>), max: SESSION_POOL_MAX, onnotice: () => {} });
    sessions.set(sql, session);
    ownSessions.push(session);
  }
  return session;
}

export function serverUrl(): string {
  const url = process.env.TEST_DATABASE_URL;
  if (!url) throw new Error("TEST_DATABASE_URL is not set (tests/setup.ts sets it)");
  return url;
}

function withDatabase(server: string, name: string): string {
  const url = new URL(server);
  url.pathname = `/${name}`;
  return url.toString();
}

export const databaseUrl = (name: string): string => withDatabase(serverUrl(), name);

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
  /** A pool as the server's (through the pooler when there is one). */
  sql: Sql;
  /** The URL the server uses (the pooler's when there is one), and the database's own. */
  url: string;
  directUrl: string;
  name: string;
  /** Session connections to the database: direct, never through the pooler. */
  session: Sql;
  /** A new pool set up as the server's; the caller ends it. */
  pool(config?: Partial<PoolConfig>, applicationName?: string): Sql;
  /** The settings a server process needs to reach this database as the pools here do. */
  serverEnv: Record<string, string>;
}

/**
 * Gives the calling test file its own freshly migrated database, dropped after the file.
 * The returned object is filled in by beforeAll.
 */
export function useTestDatabase(pool: Partial<PoolConfig> = {}): TestDatabase {
  const db = {} as TestDatabase;
  beforeAll(async () => {
    db.name = await createDatabase();
    db.directUrl = databaseUrl(db.name);
    db.url = poolerUrl ? withDatabase(poolerUrl, db.name) : db.directUrl;
    const direct = poolerUrl ? createPool(db.directUrl, { AQM_DB_POOL_MAX: 4 }, "aqm-tests session") : undefined;
    db.pool = (config = {}, applicationName = "aqm-coin-server") => {
      const pool = createPool(db.url, { ...pooling, ...config }, applicationName);
      if (direct) sessions.set(pool, direct);
      return pool;
    };
    db.sql = db.pool({ AQM_DB_POOL_MAX: 10, ...pool }, "aqm-tests");
    db.session = direct ?? db.sql;
    db.serverEnv = poolerUrl
      ? { DATABASE_URL: db.url, AQM_DB_POOLER: "transaction", AQM_DATABASE_DIRECT_URL: db.directUrl }
      : { DATABASE_URL: db.url };
    await migrate(db.session);
  });
  afterAll(async () => {
    await db.sql?.end({ timeout: 5 });
    if (db.session !== db.sql) await db.session?.end({ timeout: 5 });
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
