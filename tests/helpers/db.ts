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
  if (isCitus()) return createCitusDatabase(name);
  const admin = postgres(serverUrl(), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  return name;
}

export async function dropDatabase(name: string): Promise<void> {
  if (isCitus()) return dropCitusDatabase(name);
  const admin = postgres(serverUrl(), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/**
 * Citus mode (tests/citus/suite.ts sets it up): TEST_CITUS_WORKERS holds the workers' servers,
 * comma-separated postgres URLs (the path names an admin database, as TEST_DATABASE_URL's does),
 * and TEST_DATABASE_URL is the coordinator. Every test database then exists on every node with
 * the citus extension, and the coordinator's copy knows the workers (pg_dist_node is per
 * database); the server's migrations distribute its tables there by themselves.
 */
export function isCitus(): boolean {
  return citusWorkerUrls().length > 0;
}

/** useTestDatabase's hooks in Citus mode (measured: about 1.5 s to set a database up on 3 nodes, 2–3 s to migrate it). */
const CITUS_HOOK_TIMEOUT_MS = 60_000;

/** The workers' server URLs (TEST_CITUS_WORKERS), none outside Citus mode. */
export function citusWorkerUrls(): string[] {
  return (process.env.TEST_CITUS_WORKERS ?? "").split(",").map((url) => url.trim()).filter((url) => url !== "");
}

/** Runs statements in order over one short-lived connection to `url`. */
async function onNode(url: string, statements: string[]): Promise<void> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    for (const text of statements) await sql.unsafe(text);
  } finally {
    await sql.end();
  }
}

/** The first rejection of `results`, else nothing (every promise settled, none left running). */
function firstFailure(results: PromiseSettledResult<unknown>[]): void {
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

/**
 * The database on the coordinator and on every worker at once, with `CREATE EXTENSION citus` in
 * each copy; then, on the coordinator's copy only, the coordinator's address (as soon as its
 * extension is there) and each worker, one after the other (citus_add_node locks pg_dist_node),
 * as soon as that worker's copy is ready. citus_add_node connects to the worker's database of the
 * same name, authenticated by the cluster's PGPASSFILE (any database), and syncs the metadata to
 * it. The nodes' addresses are the URLs' hosts and ports, so the nodes must reach each other
 * there too. A failure drops what was created, on every node, before it is thrown.
 */
async function createCitusDatabase(name: string): Promise<string> {
  const coordinator = serverUrl();
  const workers = citusWorkerUrls();
  const at = (url: string) => {
    const { hostname, port } = new URL(url);
    return `'${hostname}', ${Number(port || 5432)}`;
  };
  const ready = (url: string) => onNode(url, [`CREATE DATABASE ${name}`])
    .then(() => onNode(withDatabase(url, name), ["CREATE EXTENSION citus"]));
  const workersReady = workers.map(ready);
  try {
    const coordinatorDone = (async () => {
      await ready(coordinator);
      const sql = postgres(withDatabase(coordinator, name), { max: 1, onnotice: () => {} });
      try {
        await sql.unsafe(`SELECT citus_set_coordinator_host(${at(coordinator)})`);
        for (const [i, url] of workers.entries()) {
          await workersReady[i];
          await sql.unsafe(`SELECT citus_add_node(${at(url)})`);
        }
      } finally {
        await sql.end();
      }
    })();
    // every step settled before a failure is thrown: nothing is left half-made while dropping
    firstFailure(await Promise.allSettled([coordinatorDone, ...workersReady]));
  } catch (error) {
    await dropCitusDatabase(name).catch(() => {});
    throw error;
  }
  return name;
}

/**
 * Drops the database on the coordinator first (its backends, and with them Citus's connections
 * to the workers' copies, end), then on every worker at once.
 */
async function dropCitusDatabase(name: string): Promise<void> {
  const drop = (url: string) => onNode(url, [`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]);
  const coordinator = await Promise.allSettled([drop(serverUrl())]);
  firstFailure([...coordinator, ...await Promise.allSettled(citusWorkerUrls().map(drop))]);
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
  const setUp = async () => {
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
  };
  const tearDown = async () => {
    await db.sql?.end({ timeout: 5 });
    if (db.session !== db.sql) await db.session?.end({ timeout: 5 });
    if (db.name) await dropDatabase(db.name);
  };
  if (isCitus()) {
    // three nodes to set up, and migrations that distribute every table: beyond bun's 5 s
    beforeAll(setUp, CITUS_HOOK_TIMEOUT_MS);
    afterAll(tearDown, CITUS_HOOK_TIMEOUT_MS);
  } else {
    beforeAll(setUp);
    afterAll(tearDown);
  }
  return db;
}

/** Empties the coin table between tests of one file. */
export async function resetCoins(sql: Sql): Promise<void> {
  await sql`TRUNCATE coin_inventory, device RESTART IDENTITY`;
}

/** Empties every table a claim writes (coins, quotas, replays, claimed key ids, last-resort coins). */
export async function resetClaims(sql: Sql): Promise<void> {
  await sql`TRUNCATE coin_inventory, claim_quota, claim_replay, claimed_key, last_resort_coin, device RESTART IDENTITY`;
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
  // on Citus the statement waits on a worker: citus_stat_activity sees every node's backends
  const [row] = isCitus()
    ? await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM citus_stat_activity WHERE datname = ${db.name} AND wait_event_type = 'Lock'`
    : await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${db.name} AND wait_event_type = 'Lock'`;
  return row!.n;
}
