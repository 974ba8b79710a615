// `bun bench/blob-encoding.ts`: how blobs should travel between the server and PostgreSQL.
// Uploads 100-coin batches (34 GOLD, 33 SILVER, 33 BRONZE, real sizes) straight through
// postgres.js, no HTTP, two ways, and reports coins/s and this process's CPU per coin:
//   base64 text → decode() in SQL (what the service does), and base64 → Buffer.from() in JS →
//   bytea[] (postgres.js then sends each Buffer as hex text, 2× the bytes).
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmbeddedPostgres } from "../src/db/embedded.ts";
import { migrate } from "../src/db/migrate.ts";
import { createPool, type Sql } from "../src/db/pool.ts";
import { typicalSizes as tierSizes } from "../src/coins/tiers.ts";
import { tiers } from "./seed.ts";

const BATCHES = Number(process.argv[2] ?? 300);
const CONCURRENCY = 8;

function batch() {
  return Array.from({ length: 100 }, (_, i) => {
    const tier = tiers[i % 3]!;
    const { key, sig } = tierSizes[tier];
    return { key_id: randomUUID(), tier, pub: randomBytes(key).toString("base64"), sig: randomBytes(sig).toString("base64") };
  });
}
type Batch = ReturnType<typeof batch>;

const ways: Record<string, (sql: Sql, owner: string, b: Batch) => Promise<unknown>> = {
  "base64 → decode() in SQL": (sql, owner, b) => sql`
    INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
    SELECT ${owner}::uuid, k, c, decode(p, 'base64'), decode(s, 'base64')
    FROM unnest(${b.map((c) => c.key_id)}::text[], ${b.map((c) => c.tier)}::text[], ${b.map((c) => c.pub)}::text[], ${b.map((c) => c.sig)}::text[]) AS u(k, c, p, s)`,
  "Buffer → bytea (hex on the wire)": (sql, owner, b) => sql`
    INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
    SELECT ${owner}::uuid, k, c, p, s
    FROM unnest(${b.map((c) => c.key_id)}::text[], ${b.map((c) => c.tier)}::text[],
                ${sql.array(b.map((c) => Buffer.from(c.pub, "base64")), 17 as never)}::bytea[],
                ${sql.array(b.map((c) => Buffer.from(c.sig, "base64")), 17 as never)}::bytea[]) AS u(k, c, p, s)`,
};

const dir = mkdtempSync(join(tmpdir(), "aqm-blob-"));
const pg = await startEmbeddedPostgres({ dataDir: dir, port: 20000 + Math.floor(Math.random() * 20000), persistent: false });
const sql = createPool(pg.url, { AQM_DB_POOL_MAX: CONCURRENCY });
try {
  await migrate(sql);
  const batches = Array.from({ length: BATCHES }, batch);
  console.log(`| way | coins/s | bench-process CPU µs per coin | bytes sent per coin |`);
  console.log(`|---|---:|---:|---:|`);
  for (const [name, insert] of Object.entries(ways)) {
    await sql`TRUNCATE coin_inventory`;
    const owners = Array.from({ length: CONCURRENCY }, () => randomUUID());
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    let next = 0;
    await Promise.all(owners.map(async (owner) => {
      for (let i = next++; i < batches.length; i = next++) await insert(sql, owner, batches[i]!);
    }));
    const seconds = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const coins = BATCHES * 100;
    const avgBytes = batches[0]!.reduce((n, c) => n + (name.startsWith("base64") ? c.pub.length + c.sig.length : 2 * (c.pub.length + c.sig.length) * 3 / 4), 0) / 100;
    console.log(`| ${name} | ${Math.round(coins / seconds).toLocaleString("en")} | ${((cpu.user + cpu.system) / coins).toFixed(1)} | ${Math.round(avgBytes).toLocaleString("en")} |`);
  }
} finally {
  await sql.end({ timeout: 5 });
  await pg.stop();
  rmSync(dir, { recursive: true, force: true });
}
