import { afterAll, beforeAll, expect, spyOn, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Db } from "../src/db/db.ts";
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from "../src/db/embedded.ts";
import { ConnectionGate } from "../src/db/gate.ts";
import { migrate } from "../src/db/migrate.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { UnavailableError } from "../src/errors.ts";
import { testClaims, testCoins } from "./helpers/claims.ts";
import { waitFor } from "./helpers/wait.ts";

// A PostgreSQL whose commits wait for a synchronous standby that never answers (one named in
// synchronous_standby_names that does not exist): what a primary does while its standby's WAL
// receiver is stalled. A PostgreSQL of its own: the suite's shared one must keep committing.
let pg: EmbeddedDatabase;
let dataDir: string;
let sql: Sql;

/** Sets synchronous_standby_names; with a name, returns once a commit (a probe's) does wait. */
async function standby(names: string): Promise<void> {
  await sql.unsafe(`ALTER SYSTEM SET synchronous_standby_names = '${names}'`);
  await sql`SELECT pg_reload_conf()`;
  if (!names) return;
  await waitFor(async () => {
    // a write: only a transaction that wrote WAL waits for the standby at commit
    const probe = sql`INSERT INTO claimed_key (user_id, key_id, claimed_on) VALUES (${randomUUID()}::uuid, 'probe', current_date)`;
    const waited = await Promise.race([probe.then(() => false, () => false), Bun.sleep(200).then(() => true)]);
    if (waited) {
      await probe.cancel(); // (its WARNING goes to the log before any test reads it)
      await probe.catch(() => {});
    }
    return waited;
  }, "a commit waiting for the standby");
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "aqm-sync-"));
  pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
  sql = createPool(pg.url, { AQM_DB_POOL_MAX: 4 });
  await migrate(sql);
}, 60_000);

afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await pg?.stop().catch(() => {});
  rmSync(dataDir, { recursive: true, force: true });
});

test("a commit whose wait for the synchronous standby is cancelled at its deadline is answered 503, never 200, and handled as a late finish; PostgreSQL's WARNING is logged with its SQLSTATE", async () => {
  await standby("ghost");
  const logged: string[] = [];
  const spy = spyOn(console, "error").mockImplementation((line: unknown) => void logged.push(String(line)));
  const lates: string[] = [];
  const db = new Db(sql, new ConnectionGate(4, 10), { waitMs: 400, prepare: true, late: (what) => lates.push(what) });
  const keyId = randomUUID();
  const late: unknown[] = [];
  try {
    const started = performance.now();
    const insert = db.run((s) => s`INSERT INTO claimed_key (user_id, key_id, claimed_on) VALUES (${randomUUID()}::uuid, ${keyId}, current_date) RETURNING key_id`, {
      what: "test insert", late: (rows) => late.push(rows),
    });
    await expect(insert).rejects.toBeInstanceOf(UnavailableError);
    expect(performance.now() - started).toBeLessThan(400 + 250 + 1000); // the deadline, the grace, the machine's slack
    await waitFor(() => late.length === 1, "the late finish");
    expect(lates).toEqual(["test insert"]);
    // the commit happened here, locally: exactly what a failover could lose
    expect((await sql`SELECT 1 FROM claimed_key WHERE key_id = ${keyId}`).length).toBe(1);
    await waitFor(() => logged.some((l) => l.includes("canceling wait for synchronous replication")), "the WARNING in the log");
    const warning = JSON.parse(logged.find((l) => l.includes("canceling wait for synchronous replication"))!);
    expect(warning).toMatchObject({ level: "warn", msg: "PostgreSQL warning", code: "01000" });
    expect(warning.detail).toContain("might not have been replicated");
  } finally {
    spy.mockRestore();
    await standby("");
  }
});

test("a commit whose wait is cancelled by someone else (pg_cancel_backend) before the server's deadline is answered 503 too: the WARNING gives it away", async () => {
  await standby("ghost");
  const spy = spyOn(console, "error").mockImplementation(() => {});
  const late: unknown[] = [];
  try {
    const db = new Db(sql, new ConnectionGate(4, 10), { waitMs: 10_000, prepare: true });
    const keyId = randomUUID();
    const started = performance.now();
    const insert = db.run((s) => s`INSERT INTO claimed_key (user_id, key_id, claimed_on) VALUES (${randomUUID()}::uuid, ${keyId}, current_date)`, {
      late: (rows) => late.push(rows),
    }).then(() => "200", (error: unknown) => error);
    // (statement_timeout cannot do this: PostgreSQL disables it before the commit)
    await waitFor(async () => (await sql`SELECT pg_cancel_backend(pid) AS ok FROM pg_stat_activity WHERE wait_event = 'SyncRep' AND query NOT LIKE '%probe%'`).length > 0, "the commit cancelled by an operator");
    expect(await insert).toBeInstanceOf(UnavailableError);
    expect(performance.now() - started).toBeLessThan(5000); // long before the deadline
    expect(late.length).toBe(1);
    expect((await sql`SELECT 1 FROM claimed_key WHERE key_id = ${keyId}`).length).toBe(1); // committed locally
  } finally {
    spy.mockRestore();
    await standby("");
  }
});

test("a claim whose commit waits for the stalled standby past its deadline is answered 503; once commits go through again its coin is back in stock", async () => {
  const owner = randomUUID();
  const keyId = randomUUID();
  await sql`INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
            VALUES (${owner}::uuid, ${keyId}, 'BRONZE', '\\x01', '\\x02')`;
  await standby("ghost");
  const spy = spyOn(console, "error").mockImplementation(() => {});
  const { claims } = testClaims(sql, { waitMs: 400 });
  try {
    const claim = claims.claim({ requester: randomUUID(), target: owner, want: [0, 0, 1], fallback: false, allowLastResort: false, waitMs: 0 });
    await expect(claim).rejects.toBeInstanceOf(UnavailableError);
    // committed locally, not handed out: the return waits for the standby like every commit
    expect((await sql`SELECT 1 FROM coin_inventory WHERE key_id = ${keyId} AND fetched_at IS NOT NULL`).length).toBe(1);
  } finally {
    await standby("");
  }
  try {
    await waitFor(async () => (await sql`SELECT 1 FROM coin_inventory WHERE key_id = ${keyId} AND fetched_at IS NULL`).length === 1, "the coin back in stock", 15_000);
  } finally {
    spy.mockRestore();
  }
}, 30_000);

test("a replay is answered only once the claim it repeats is durable on the standby: while commits wait, a keyed retry gets 503, then its coin", async () => {
  const owner = randomUUID();
  const requester = randomUUID();
  const keyId = randomUUID();
  await sql`INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
            VALUES (${owner}::uuid, ${keyId}, 'BRONZE', '\\x01', '\\x02')`;
  const spy = spyOn(console, "error").mockImplementation(() => {});
  const { claims } = testClaims(sql, { waitMs: 400 });
  const claim = () => claims.claim({
    requester, target: owner, want: [0, 0, 1], fallback: false, allowLastResort: false, waitMs: 0,
    idempotencyKey: "retry-me", canonicalBody: "{}",
  });
  try {
    expect((await claim()).coins.map((c) => c.key_id)).toEqual([keyId]); // committed and durable
    await standby("ghost");
    await expect(claim()).rejects.toBeInstanceOf(UnavailableError); // the replay's commit waits like any other
    await standby("");
    const replay = await claim();
    expect(replay.replayed).toBe(true);
    expect(replay.coins.map((c) => c.key_id)).toEqual([keyId]);
  } finally {
    spy.mockRestore();
    await standby("");
  }
}, 30_000);

test("a repeated upload is answered 200 only once the coins it repeats are durable: while commits wait, it gets 503", async () => {
  const owner = randomUUID();
  const { coinService } = await import("../src/coins/service.ts");
  const { makeCoins } = await import("./helpers/coins.ts");
  const coins = makeCoins(3, "BRONZE");
  const db = new Db(sql, new ConnectionGate(4, 10), { waitMs: 400, prepare: true });
  const service = testCoins(db);
  expect((await service.uploadCoins(owner, 1, coins)).inserted).toBe(3);
  await standby("ghost");
  const spy = spyOn(console, "error").mockImplementation(() => {});
  try {
    // the same coins again: stored already (duplicates); the answer must still wait for the standby
    await expect(service.uploadCoins(owner, 1, coins)).rejects.toBeInstanceOf(UnavailableError);
  } finally {
    spy.mockRestore();
    await standby("");
  }
  expect(await service.uploadCoins(owner, 1, coins)).toMatchObject({ inserted: 0, duplicates: 3 });
});

test("a device change (several statements in one transaction) whose commit waits for the stalled standby is answered 503 at its deadline, not held until the standby answers", async () => {
  const { deviceService } = await import("../src/devices/service.ts");
  const owner = randomUUID();
  const db = new Db(sql, new ConnectionGate(4, 10), { waitMs: 400, prepare: true });
  const devices = deviceService(db, { AQM_MAX_DEVICES: 10 });
  await devices.ensureDevice(owner, 2);
  await standby("ghost");
  const spy = spyOn(console, "error").mockImplementation(() => {});
  let elapsed: number;
  try {
    const started = performance.now();
    await expect(devices.deleteDevice(owner, 2)).rejects.toBeInstanceOf(UnavailableError);
    elapsed = performance.now() - started;
  } finally {
    spy.mockRestore();
    await standby("");
  }
  expect(elapsed).toBeLessThan(400 + 1000); // the deadline, and a second for a busy machine
  // committed locally (the cancel only ended the wait): a retry finds nothing left to remove
  await expect(devices.deleteDevice(owner, 2)).rejects.toThrow(/no device 2/);
});
