import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { migrate } from "../../src/db/migrate.ts";
import { migrations } from "../../src/db/migrations.ts";
import { distributed } from "../../src/db/distribution.ts";
import type { Sql } from "../../src/db/pool.ts";
import { token } from "../helpers/app.ts";
import { makeCoins } from "../helpers/coins.ts";
import { startServer, type ServerProcess } from "../helpers/server.ts";
import { startCitusCluster, type CitusCluster } from "./cluster.ts";

// The documented move from one PostgreSQL to Citus (docs/runbook.md, "Moving onto Citus"), done
// for real: a database at the schema before migration 014, holding coins (claimed and not),
// replay records, quota rows, last-resort coins and claimed key ids, is dumped with pg_dump,
// restored into a database of the coordinator that has the citus extension and the workers, and
// migrated by the server's own `bun run migrate` — which applies 014 and distributes the tables.

const BIN = "/usr/lib/postgresql/15/bin";
let cluster: CitusCluster;
let dir: string;
let server: ServerProcess | undefined;
const urlOf = (db: string) => cluster.nodeUrl("coordinator").replace(/\/aqm$/, `/${db}`);
const connect = (db: string) => postgres(urlOf(db), { max: 1, onnotice: () => {} }) as unknown as Sql;

beforeAll(async () => {
  cluster = await startCitusCluster();
  dir = mkdtempSync(join(tmpdir(), "aqm-citus-move-"));
}, 60_000);

afterAll(async () => {
  server?.proc.kill("SIGKILL");
  await cluster?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const run = (cmd: string[], env: Record<string, string> = {}) => {
  const p = Bun.spawnSync(cmd, { env: { ...process.env, ...env }, cwd: join(import.meta.dir, "..", "..") });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
};

test("one PostgreSQL's database moves onto Citus — pg_dump, pg_restore into the coordinator, `bun run migrate` — every owner-keyed table distributed and co-located, every coin kept in its FIFO order, identities continuing, and the server claims and uploads on it", async () => {
  const admin = connect("aqm");
  await admin.unsafe("CREATE DATABASE single");
  await admin.unsafe("CREATE DATABASE moved");
  // the single PostgreSQL: the schema before 014 (no citus extension in this database)
  const single = connect("single");
  await migrate(single, migrations.filter((m) => m.version < 14));
  const owners = [randomUUID(), randomUUID(), randomUUID()];
  for (const owner of owners) {
    await single`INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
      SELECT ${owner}::uuid, 'k-' || g, 'BRONZE', '\\x01', '\\x02' FROM generate_series(1, 50) AS g`;
  }
  // a keyed claim of 2 coins (its replay record), an unkeyed one, quota rows, a last-resort coin, a claimed key id
  const ref = randomUUID();
  await single`UPDATE coin_inventory SET fetched_by = ${owners[1]!}::uuid, fetched_at = now(), claim_ref = ${ref}::uuid
    WHERE user_id = ${owners[0]!}::uuid AND key_id IN ('k-1', 'k-2')`;
  await single`INSERT INTO claim_replay (ref, body, short) VALUES (${ref}::uuid, ${randomUUID()}::uuid, '{0,0,0}')`;
  await single`INSERT INTO claim_replay (ref, body, short) VALUES (${randomUUID()}::uuid, ${randomUUID()}::uuid, '{1,0,0}')`; // served nothing
  await single`UPDATE coin_inventory SET fetched_by = ${owners[2]!}::uuid, fetched_at = now() WHERE user_id = ${owners[1]!}::uuid AND key_id = 'k-1'`;
  await single`INSERT INTO claim_quota (pair, hours, counts) VALUES (${randomUUID()}::uuid, '{1}', '{2}')`;
  await single`INSERT INTO last_resort_coin (user_id, coin_category, key_id, public_key_blob, signature_blob) VALUES (${owners[2]!}::uuid, 'BRONZE', 'lr', '\\x01', '\\x02')`;
  await single`INSERT INTO claimed_key (user_id, key_id, claimed_on) VALUES (${owners[2]!}::uuid, 'gone-1', current_date)`;
  const before = await single<{ user_id: string; key_id: string; record_id: string; fetched: boolean }[]>`
    SELECT user_id::text, key_id, record_id::text, fetched_at IS NOT NULL AS fetched FROM coin_inventory ORDER BY user_id, record_id`;
  const maxBefore = Math.max(...before.map((r) => Number(r.record_id)));
  await single.end();

  // the coordinator's database: the citus extension and the workers (docs/runbook.md)
  const moved = connect("moved");
  await moved.unsafe("CREATE EXTENSION citus");
  await moved`SELECT citus_set_coordinator_host('127.0.0.1', ${cluster.coordinator.port})`;
  for (const w of cluster.workers) {
    const worker = postgres(cluster.nodeUrl(w.name).replace(/\/aqm$/, "/postgres"), { max: 1, onnotice: () => {} });
    await worker.unsafe("CREATE DATABASE moved");
    await worker.end();
    const inMoved = postgres(cluster.nodeUrl(w.name).replace(/\/aqm$/, "/moved"), { max: 1, onnotice: () => {} });
    await inMoved.unsafe("CREATE EXTENSION citus");
    await inMoved.end();
    await moved`SELECT citus_add_node('127.0.0.1', ${w.port})`;
  }
  const dump = join(dir, "single.dump");
  const dumped = run([`${BIN}/pg_dump`, "-Fc", "-f", dump, "-d", urlOf("single")]);
  expect(dumped.err).toBe("");
  expect(dumped.code).toBe(0);
  const restored = run([`${BIN}/pg_restore`, "--no-owner", "--exit-on-error", "-d", urlOf("moved"), dump]);
  expect(restored.err).toBe("");
  expect(restored.code).toBe(0);
  const migrated = run(["bun", "run", "src/db/migrate-cli.ts"], { DATABASE_URL: urlOf("moved") });
  expect(migrated.code).toBe(0);
  expect(migrated.out).toContain("applied 14 owner_keyed_tables");

  // every owner-keyed table distributed, co-located; the rows on the workers, the same rows
  const parts = await moved<{ t: string; colocationid: number }[]>`SELECT logicalrelid::text AS t, colocationid FROM pg_dist_partition ORDER BY 1`;
  expect(parts.map((p) => p.t).sort()).toEqual(distributed.map(([t]) => t as string).sort());
  // co-located with the coins, but claim_key (distributed by the key's hash)
  expect(new Set(parts.filter((p) => p.t !== "claim_key").map((p) => p.colocationid)).size).toBe(1);
  const after = await moved<{ user_id: string; key_id: string; record_id: string; fetched: boolean }[]>`
    SELECT user_id::text, key_id, record_id::text, fetched_at IS NOT NULL AS fetched FROM coin_inventory ORDER BY user_id, record_id`;
  expect(after).toEqual(before);
  expect((await moved`SELECT count(*)::int AS n FROM citus_shards WHERE nodeport = ${cluster.coordinator.port}`)[0]!.n).toBe(0);
  // the replay record of the claim that took coins keeps its owner; the one that served nothing, and the quota rows, are gone (014)
  expect([...await moved`SELECT target::text, ref::text FROM claim_replay`]).toEqual([{ target: owners[0]!, ref }]);
  expect((await moved`SELECT count(*)::int AS n FROM claim_quota`)[0]!.n).toBe(0);
  expect((await moved`SELECT count(*)::int AS n FROM last_resort_coin`)[0]!.n).toBe(1);
  expect((await moved`SELECT count(*)::int AS n FROM claimed_key`)[0]!.n).toBe(1);

  // the server on it: a claim takes the owner's oldest coins; an upload's coins come after every restored one
  server = await startServer({ DATABASE_URL: urlOf("moved") });
  const requester = randomUUID();
  const res = await fetch(`${server.url}/v1/coins/fetch?target_user_id=${owners[0]}&coin_category=BRONZE&count=2`, {
    headers: { authorization: `Bearer ${await token(requester)}` },
  });
  expect(res.status).toBe(200);
  expect(((await res.json()) as { coins: { key_id: string }[] }).coins.map((c) => c.key_id)).toEqual(["k-3", "k-4"]);
  const up = await fetch(`${server.url}/v1/coins/upload`, {
    method: "POST", headers: { authorization: `Bearer ${await token(owners[0]!)}`, "content-type": "application/json" },
    body: JSON.stringify({ coins: makeCoins(3, "BRONZE") }),
  });
  expect(up.status).toBe(200);
  const fresh = await moved<{ record_id: string }[]>`SELECT record_id::text FROM coin_inventory WHERE user_id = ${owners[0]!}::uuid AND key_id NOT LIKE 'k-%'`;
  expect(fresh.length).toBe(3);
  for (const r of fresh) expect(Number(r.record_id)).toBeGreaterThan(maxBefore);
  await moved.end();
  await admin.end();
}, 120_000);

test("a Citus deployment at 015 takes migration 016 in place — its coins and last-resort coins become device 1's, the device table is distributed beside them — and rolls it back and forward again", async () => {
  const admin = connect("aqm");
  await admin.unsafe("CREATE DATABASE upgraded");
  await admin.end();
  const db = connect("upgraded");
  try {
    await db.unsafe("CREATE EXTENSION citus");
    await migrate(db, migrations.filter((m) => m.version <= 15)); // distributed at 015
    const upTo016 = migrations.filter((m) => m.version <= 16);
    const owner = randomUUID();
    await db`INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
             VALUES (${owner}::uuid, 'k1', 'BRONZE', '\\x01', '\\x02'), (${owner}::uuid, 'k2', 'BRONZE', '\\x03', '\\x04')`;
    await db`INSERT INTO last_resort_coin (user_id, key_id, coin_category, public_key_blob, signature_blob)
             VALUES (${owner}::uuid, 'l1', 'SILVER', '\\x05', '\\x06')`;
    expect((await migrate(db, upTo016)).map((m) => m.version)).toEqual([16]);
    const placed = await db<{ table: string; colocated: boolean }[]>`
      SELECT logicalrelid::text AS table, colocationid = (SELECT colocationid FROM pg_dist_partition WHERE logicalrelid = 'coin_inventory'::regclass) AS colocated
      FROM pg_dist_partition WHERE logicalrelid = 'device'::regclass`;
    expect([...placed]).toEqual([{ table: "device", colocated: true }]);
    expect([...await db`SELECT user_id, device_id FROM device`]).toEqual([{ user_id: owner, device_id: 1 }]);
    expect((await db`SELECT key_id, device_id FROM coin_inventory ORDER BY record_id`).map((r) => `${r.key_id}@${r.device_id}`)).toEqual(["k1@1", "k2@1"]);
    expect((await db`SELECT key_id, device_id FROM last_resort_coin`).map((r) => `${r.key_id}@${r.device_id}`)).toEqual(["l1@1"]);
    const { rollbackLatest } = await import("../../src/db/migrate.ts");
    expect((await rollbackLatest(db))?.version).toBe(16);
    expect((await db`SELECT key_id FROM coin_inventory ORDER BY record_id`).map((r) => r.key_id)).toEqual(["k1", "k2"]);
    expect((await migrate(db, upTo016)).map((m) => m.version)).toEqual([16]);
  } finally {
    await db.end();
  }
}, 120_000);
