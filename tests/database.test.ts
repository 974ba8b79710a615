// Which database the server opens, and the pool it uses behind a transaction-mode pooler. The
// pooler itself (PgBouncer) is exercised by .ci/pooler.sh; these run against PostgreSQL directly.
import { describe, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { createApp } from "../src/app.ts";
import { ConfigError } from "../src/config.ts";
import { listMigrations } from "../src/db/migrate.ts";
import { chooseDatabase, openDatabase } from "../src/db/open.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { timeoutsBehindPooler } from "../src/db/pooler.ts";
import { call, metricValue, newUser, testConfig, testHashSecrets, testKeys } from "./helpers/app.ts";
import { testClaims, testDb, testCoins } from "./helpers/claims.ts";
import { makeCoins } from "./helpers/coins.ts";
import { createDatabase, databaseUrl, dropDatabase, useTestDatabase } from "./helpers/db.ts";
import { waitFor } from "./helpers/wait.ts";

const db = useTestDatabase();
const url = "postgres://aqm:secret@db.internal:5432/aqm";

describe("chooseDatabase", () => {
  const refused = (env: Record<string, string>, ...words: string[]) => {
    let error: unknown;
    try {
      chooseDatabase(testConfig(env));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    for (const word of words) expect((error as Error).message).toContain(word);
  };

  test("no DATABASE_URL: the embedded PostgreSQL in development, never silently in production", () => {
    expect(chooseDatabase(testConfig({}))).toBe("embedded");
    refused({ NODE_ENV: "production" }, "DATABASE_URL", "AQM_EMBEDDED=on");
    expect(chooseDatabase(testConfig({ NODE_ENV: "production", AQM_EMBEDDED: "on" }))).toBe("embedded");
    refused({ AQM_EMBEDDED: "off" }, "DATABASE_URL");
  });

  test("DATABASE_URL, with the direct URL for sessions; a transaction-mode pooler needs one", () => {
    expect(chooseDatabase(testConfig({ DATABASE_URL: url }))).toEqual({ url, direct: undefined });
    refused({ DATABASE_URL: url, AQM_DB_POOLER: "transaction" }, "AQM_DATABASE_DIRECT_URL");
    const direct = "postgres://aqm:secret@db-primary.internal:5432/aqm";
    expect(chooseDatabase(testConfig({ DATABASE_URL: url, AQM_DB_POOLER: "transaction", AQM_DATABASE_DIRECT_URL: direct }))).toEqual({ url, direct });
    refused({ AQM_DATABASE_DIRECT_URL: direct }, "need DATABASE_URL");
  });

  test("several hosts (libpq's multi-host form) mean the writable primary: target_session_attrs=primary or none, never read-write", () => {
    const hosts = "postgres://aqm:secret@10.0.0.1:5432,10.0.0.2:5432/aqm";
    expect(chooseDatabase(testConfig({ DATABASE_URL: hosts }))).toEqual({ url: hosts, direct: undefined });
    expect(chooseDatabase(testConfig({ DATABASE_URL: `${hosts}?target_session_attrs=primary` }))).toMatchObject({ direct: undefined });
    refused({ DATABASE_URL: `${hosts}?target_session_attrs=read-write` }, "target_session_attrs=primary");
    refused({ DATABASE_URL: url, AQM_DB_POOLER: "transaction", AQM_DATABASE_DIRECT_URL: `${hosts}?target_session_attrs=any` }, "AQM_DATABASE_DIRECT_URL names several hosts");
    // a pool on several hosts and no attribute asks for the primary (postgres.js checks pg_is_in_recovery())
    const pool = createPool(hosts);
    expect((pool.options as unknown as { target_session_attrs: string }).target_session_attrs).toBe("primary");
    void pool.end({ timeout: 0 });
  });

  test("the server refuses to start in production without DATABASE_URL: exit 2, one line, nothing created", async () => {
    const dataDir = join(tmpdir(), `aqm-never-${randomUUID()}`);
    const proc = Bun.spawn(["bun", "src/index.ts"], {
      cwd: join(import.meta.dir, ".."),
      env: { PATH: process.env.PATH!, NODE_ENV: "production", AQM_JWT_PUBLIC_KEY: "", AQM_DATA_DIR: dataDir },
      stdout: "pipe", stderr: "pipe",
    });
    expect(await proc.exited).toBe(2);
    expect(await new Response(proc.stderr).text()).toBe("aqm: configuration error: NODE_ENV=production needs DATABASE_URL "
      + "(the embedded PostgreSQL is for development; AQM_EMBEDDED=on runs it anyway)\n");
    expect(existsSync(dataDir)).toBe(false); // checked before any secret or cluster is created
  });
});

describe("a pool for a transaction-mode pooler", () => {
  /** One connection, so that everything below runs in the same session and can be inspected. */
  const single = (pooler: "none" | "transaction") => createPool(db.url, { AQM_DB_POOL_MAX: 1, AQM_DB_POOLER: pooler });
  const prepared = async (sql: Sql) => (await sql`SELECT count(*)::int AS n FROM pg_prepared_statements`)[0]!.n as number;

  async function uploadAndClaim(sql: Sql): Promise<void> {
    const owner = randomUUID();
    await testCoins(testDb(sql, { size: 1 })).uploadCoins(owner, 1, makeCoins(3));
    const { claim } = testClaims(sql, { size: 1, quota: 10 });
    expect((await claim({ requester: randomUUID(), target: owner, want: [0, 0, 2] })).coins).toHaveLength(2);
  }

  test("prepares no statement: uploads and claims (quota on) leave none in the session", async () => {
    const pooled = single("transaction");
    const direct = single("none");
    try {
      await uploadAndClaim(pooled);
      expect(await prepared(pooled)).toBe(0);
      await uploadAndClaim(direct);
      expect(await prepared(direct)).toBeGreaterThan(0); // what a direct pool does, and a pooler cannot keep
    } finally {
      await Promise.all([pooled.end(), direct.end()]);
    }
  });

  test("sends no startup parameters: its sessions have the role's timeouts, not the settings'", async () => {
    const timeouts = { AQM_DB_STATEMENT_TIMEOUT_MS: 1234 };
    const pooled = createPool(db.url, { AQM_DB_POOL_MAX: 1, AQM_DB_POOLER: "transaction", ...timeouts });
    const direct = createPool(db.url, { AQM_DB_POOL_MAX: 1, ...timeouts });
    const bare = postgres(db.url, { max: 1, onnotice: () => {} }); // what the role and database give a session
    try {
      const setting = async (sql: Sql) => (await sql`SELECT current_setting('statement_timeout') AS st, current_setting('application_name') AS app`)[0]!;
      expect(await setting(direct)).toEqual({ st: "1234ms", app: "aqm-coin-server" });
      // application_name is still sent: PgBouncer accepts that one
      expect(await setting(pooled)).toEqual({ st: (await setting(bare)).st, app: "aqm-coin-server" });
    } finally {
      await Promise.all([pooled.end(), direct.end(), bare.end()]);
    }
  });

  test("the start-up check names the timeouts the role lacks, with the statement that sets them; then none", async () => {
    const name = await createDatabase();
    try {
      const config = testConfig({ AQM_DB_STATEMENT_TIMEOUT_MS: "1500", AQM_DB_IDLE_TX_TIMEOUT_MS: "4321" });
      const probe = () => createPool(databaseUrl(name), { AQM_DB_POOL_MAX: 1, AQM_DB_POOLER: "transaction" });
      const before = probe();
      const lines = await timeoutsBehindPooler(before, config);
      await before.end();
      expect(lines).toHaveLength(2);
      expect(lines[0]).toMatch(/^statement_timeout is \d+ ms through the pooler, AQM_DB_STATEMENT_TIMEOUT_MS is 1500: ALTER ROLE "\w+" IN DATABASE /);
      expect(lines[1]).toEndWith(`IN DATABASE "${name}" SET idle_in_transaction_session_timeout = 4321`);
      for (const line of lines) await db.sql.unsafe(line.slice(line.indexOf("ALTER ROLE")));
      const after = probe(); // new sessions get the role's settings
      expect(await timeoutsBehindPooler(after, config)).toEqual([]);
      await after.end();
    } finally {
      await dropDatabase(name);
    }
  });
});

describe("openDatabase with AQM_DATABASE_DIRECT_URL", () => {
  test("migrates over the session pool; claims, a waiting claim (LISTEN) and maintenance work with both pools", async () => {
    const name = await createDatabase();
    const config = testConfig({ DATABASE_URL: databaseUrl(name), AQM_DB_POOLER: "transaction", AQM_DATABASE_DIRECT_URL: databaseUrl(name) });
    const database = await openDatabase(config);
    const app = createApp({ sql: database.sql, session: database.session, config, keys: testKeys, hashSecrets: testHashSecrets });
    try {
      expect(database.session).not.toBe(database.sql);
      expect(database.embedded).toBe(false);
      const [{ n }] = await database.sql`SELECT count(*)::int AS n FROM schema_version` as never as [{ n: number }];
      expect(n).toBe(listMigrations().length);
      const [{ app: name1 }] = await database.session`SELECT current_setting('application_name') AS app` as never as [{ app: string }];
      expect(name1).toBe("aqm-coin-server session");
      const [owner, requester, admin] = await Promise.all([newUser(), newUser(), newUser({ admin: true })]);
      const waiting = call(app, "POST", "/v1/coins/claim", { token: requester.token, body: { target_user_id: owner.id, want: { bronze: 2 }, wait_ms: 10_000 } });
      // it looked, found nothing and waits (subscribed: the gauge; looked: one claim statement sent)
      const metric = (name: string) => metricValue(app, admin.token, name);
      await waitFor(async () => (await metric("aqm_claim_waiting")) === 1 && (await metric("aqm_claim_batch_size_count")) === 1, "the claim to wait", 5000);
      const started = performance.now();
      expect((await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: makeCoins(2) } })).status).toBe(200);
      expect((await waiting).json.coins).toHaveLength(2);
      expect(performance.now() - started).toBeLessThan(3000); // woken by the notification, not the deadline
      expect((await call(app, "POST", "/v1/admin/hard-delete", { token: admin.token, body: { grace_hours: 0 } })).json).toEqual({ deleted: 2 });
    } finally {
      await app.decorator.aqm.close();
      await database.close();
      await dropDatabase(name);
    }
  });
});

describe("openDatabase on one PostgreSQL", () => {
  test("the request pool plans each prepared statement once (plan_cache_mode force_generic_plan); the session pool is left to PostgreSQL", async () => {
    const name = await createDatabase();
    const database = await openDatabase(testConfig({ DATABASE_URL: databaseUrl(name) }));
    try {
      const mode = async (sql: Sql) => ((await sql`SELECT current_setting('plan_cache_mode') AS m`) as never as [{ m: string }])[0].m;
      expect(await mode(database.sql)).toBe("force_generic_plan");
      expect(await mode(database.session)).toBe("auto");
      // claims and uploads run on it, past the five runs after which PostgreSQL would choose a plan itself
      const config = testConfig({ DATABASE_URL: databaseUrl(name) });
      const app = createApp({ sql: database.sql, session: database.session, config, keys: testKeys, hashSecrets: testHashSecrets });
      const [owner, requester] = await Promise.all([newUser(), newUser()]);
      expect((await call(app, "POST", "/v1/coins/upload", { token: owner.token, body: { coins: makeCoins(3, "BRONZE") } })).status).toBe(200);
      const served: number[] = [];
      for (let i = 0; i < 7; i++) {
        const answer = await call(app, "GET", `/v1/coins/fetch?target_user_id=${owner.id}&coin_category=BRONZE&count=1`, { token: requester.token });
        expect(answer.status).toBe(200);
        served.push(answer.json.coins.length);
      }
      expect(served).toEqual([1, 1, 1, 0, 0, 0, 0]);
      await app.decorator.aqm.close();
    } finally {
      await database.close();
      await dropDatabase(name);
    }
  });
});
