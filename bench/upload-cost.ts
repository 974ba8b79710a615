/**
 * bun bench/upload-cost.ts [--rounds N] [--save]: what the upload statement costs PostgreSQL per
 * coin, beside its shape before the eleventh round, a bare insert of the same parameters, the
 * statement built up from it, and the statement without each of its parts (issue 21, eleventh
 * round). One backend of a throw-away embedded PostgreSQL (synchronous_commit on, as deployed) runs uploads of 100 fresh coins of mixed tiers (34 GOLD, 33 SILVER, 33 BRONZE,
 * typical sizes, random bytes) for 200 owners, each with its device row, parameters built as the
 * server builds them (inputOf), serially; variants interleaved, rounds after a warm-up round.
 * Per cell: the backend's CPU per coin (/proc), wall time per statement, WAL bytes per coin.
 * Writes bench/results[/local]/<stamp>-upload-cost.json.
 */
import postgres from "postgres";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Coin } from "../src/coins/model.ts";
import { typicalSizes, type Tier } from "../src/coins/tiers.ts";
import { inputOf, UPLOAD } from "../src/coins/upload.ts";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import { migrate } from "../src/db/migrate.ts";
import type { Sql } from "../src/db/pool.ts";
import { cpuSecondsOf } from "./monitor.ts";
import { writeResult } from "./report.ts";

const at = process.argv.indexOf("--rounds");
const rounds = at < 0 ? 3 : Number(process.argv[at + 1]);
const cut = (text: string, from: string, to: string, put = "") => {
  const a = text.indexOf(from);
  const b = text.indexOf(to, a);
  if (a < 0 || b < 0) throw new Error(`not in the statement: ${from} … ${to}`);
  return text.slice(0, a) + put + text.slice(b);
};
const BARE = `INSERT INTO coin_inventory (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
SELECT $1::uuid, $6::smallint, k, c, p, s FROM unnest($2::text::text[], $3::text::text[], $4::bytea[], $5::bytea[]) AS u(k, c, p, s)
WHERE $7::int IS NOT NULL`;
const ORDERED = `INSERT INTO coin_inventory AS t (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
SELECT $1::uuid, $6::smallint, k, c, p, s FROM unnest($2::text::text[], $3::text::text[], $4::bytea[], $5::bytea[]) WITH ORDINALITY AS u(k, c, p, s, ord)
WHERE $7::int IS NOT NULL ORDER BY ord`;
const onConflict = UPLOAD.slice(UPLOAD.indexOf("ON CONFLICT"), UPLOAD.indexOf("AS inserted") + "AS inserted".length);
/** The statement as it was until the eleventh round: every coin materialized with its blobs, the repeat check a self-join of them, two sorts carrying them. */
const MATERIALIZED = cut(UPLOAD, "), keys AS MATERIALIZED (", "), written AS (", `), input AS (
  SELECT k AS key_id, c AS coin_category, p AS public_key_blob, s AS signature_blob, ord
  FROM unnest($2::text::text[], $3::text::text[], $4::bytea[], $5::bytea[]) WITH ORDINALITY AS u(k, c, p, s, ord)
), repeated AS (
  SELECT a.key_id FROM input a JOIN input b ON a.key_id = b.key_id AND a.ord < b.ord
  WHERE (a.coin_category, a.public_key_blob, a.signature_blob) IS DISTINCT FROM (b.coin_category, b.public_key_blob, b.signature_blob)
), fresh AS (
  SELECT DISTINCT ON (key_id) * FROM input i
  WHERE NOT EXISTS (SELECT 1 FROM claimed_key k WHERE k.user_id = $1::uuid AND k.key_id = i.key_id)
  ORDER BY key_id, ord
`).replace(/  SELECT \$1::uuid, \$6::smallint, u\.k[\s\S]*?ORDER BY u\.ord/, `  SELECT $1::uuid, $6::smallint, key_id, coin_category, public_key_blob, signature_blob FROM fresh
  WHERE NOT EXISTS (SELECT 1 FROM repeated) AND EXISTS (SELECT 1 FROM dev WHERE generation = $7::int)
  ORDER BY ord`);
if (!MATERIALIZED.includes("FROM fresh\n  WHERE NOT EXISTS (SELECT 1 FROM repeated)")) throw new Error("the older shape did not apply");
const variants: Record<string, string> = {
  statement: UPLOAD,
  "the statement before (input materialized with the blobs)": MATERIALIZED,
  bare: BARE,
  "bare, in order": ORDERED,
  "bare, in order, on conflict": `${ORDERED}\n${onConflict}`,
  "bare, in order, on conflict, fresh (claimed-key check, DISTINCT ON)": `WITH input AS (
  SELECT k AS key_id, c AS coin_category, p AS public_key_blob, s AS signature_blob, ord
  FROM unnest($2::text::text[], $3::text::text[], $4::bytea[], $5::bytea[]) WITH ORDINALITY AS u(k, c, p, s, ord)
), fresh AS (
  SELECT DISTINCT ON (key_id) * FROM input i
  WHERE NOT EXISTS (SELECT 1 FROM claimed_key k WHERE k.user_id = $1::uuid AND k.key_id = i.key_id)
  ORDER BY key_id, ord
)
INSERT INTO coin_inventory AS t (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
SELECT $1::uuid, $6::smallint, key_id, coin_category, public_key_blob, signature_blob FROM fresh WHERE $7::int IS NOT NULL ORDER BY ord
${onConflict}`,
  "no on conflict": UPLOAD.replace(/ON CONFLICT \(user_id, key_id\) DO UPDATE[\s\S]*?RETURNING t\.key_id/, "RETURNING t.key_id").replace("xmax = 0 AS inserted", "true AS inserted"),
  "no notify": cut(UPLOAD, "), notified AS (", "\n)\nSELECT").replace(/,\s*\(SELECT count\(\*\) FROM notified\)::int AS notified[^\n]*/, ""),
  "no claimed-key check": UPLOAD.replace("WHERE NOT EXISTS (SELECT 1 FROM claimed_key k WHERE k.user_id = $1::uuid AND k.key_id = i.key_id)\n", ""),
  "no device lock": UPLOAD.replace(" FOR SHARE\n", "\n"),
};
const size = typicalSizes;
const coinsOf = (): Coin[] => Array.from({ length: 100 }, (_, i) => {
  const tier: Tier = i < 34 ? "GOLD" : i < 67 ? "SILVER" : "BRONZE";
  return { key_id: randomUUID(), coin_category: tier, public_key_b64: randomBytes(size[tier].key).toString("base64"), signature_b64: randomBytes(size[tier].sig).toString("base64") };
});
const statementsPerCell = 121;
const dataDir = mkdtempSync(join(tmpdir(), "aqm-upload-cost-"));
const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
const sql = postgres(pg.url, { max: 1, onnotice: () => {}, connection: { plan_cache_mode: "force_generic_plan" } });
type Row = { round: number; variant: string; statements: number; usCpuPerCoin: number; usWallPerStatement: number; walBytesPerCoin: number };
const rows: Row[] = [];
try {
  await migrate(admin as unknown as Sql);
  const owners = Array.from({ length: 200 }, () => randomUUID());
  await admin`INSERT INTO device (user_id, device_id) SELECT u::uuid, 1 FROM unnest(${owners}::text[]) AS u`;
  const generation = new Map((await admin<{ user_id: string; generation: number }[]>`SELECT user_id::text, generation FROM device`).map((d) => [d.user_id, d.generation]));
  const [{ pid }] = await sql<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
  const wal = async () => Number((await admin<[{ b: string }]>`SELECT (pg_current_wal_insert_lsn() - '0/0')::text AS b`)[0].b);
  let n = 0;
  const batches = Array.from({ length: statementsPerCell }, coinsOf);
  for (let round = 0; round <= rounds; round++) {
    const order = Object.keys(variants);
    if (round % 2) order.reverse();
    for (const variant of order) {
      await admin`VACUUM coin_inventory`;
      const measured: string[] = []; // the key ids of the measured statements (all but the first)
      const params = batches.map((coins, j) => {
        const owner = owners[n++ % owners.length]!;
        const fresh = coins.map((c) => ({ ...c, key_id: randomUUID() }));
        if (j > 0) measured.push(...fresh.map((c) => c.key_id));
        return [owner, ...inputOf(sql as unknown as Sql, fresh), 1, generation.get(owner)!];
      });
      await sql.unsafe(variants[variant]!, params[0] as never[], { prepare: true }); // plan, warm
      const [w0, c0, t0] = [await wal(), cpuSecondsOf(pid), performance.now()];
      for (let j = 1; j < params.length; j++) await sql.unsafe(variants[variant]!, params[j] as never[], { prepare: true });
      const [c1, t1, w1] = [cpuSecondsOf(pid), performance.now(), await wal()];
      const coins = (params.length - 1) * 100;
      const stored = (await admin<[{ n: number }]>`SELECT count(*)::int AS n FROM coin_inventory WHERE key_id = ANY(${measured})`)[0].n;
      if (stored !== coins) throw new Error(`${variant}: ${stored} of ${coins} coins stored`);
      const row = { round, variant, statements: params.length - 1, usCpuPerCoin: Math.round(((c1 - c0) * 1e6 / coins) * 10) / 10,
        usWallPerStatement: Math.round((t1 - t0) * 1000 / (params.length - 1)), walBytesPerCoin: Math.round((w1 - w0) / coins) };
      if (round > 0) rows.push(row);
      console.log(JSON.stringify(row));
    }
  }
} finally {
  await sql.end();
  await admin.end();
  await pg.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const medians = Object.keys(variants).map((variant) => {
  const mine = rows.filter((r) => r.variant === variant);
  return { variant, usCpuPerCoin: median(mine.map((r) => r.usCpuPerCoin)), usWallPerStatement: median(mine.map((r) => r.usWallPerStatement)), walBytesPerCoin: median(mine.map((r) => r.walBytesPerCoin)) };
});
for (const m of medians) console.log(`median: ${JSON.stringify(m)}`);
const file = writeResult({
  what: "PostgreSQL CPU per uploaded coin: the upload statement, its shape before the eleventh round, a bare insert of the same parameters, the statement built up from it and without each part (bench/upload-cost.ts)",
  postgresql: "embedded, one backend, plan_cache_mode=force_generic_plan, synchronous_commit on", rounds, rows, medians,
}, "-upload-cost", process.argv.includes("--save"));
console.log(`written: ${file}`);
process.exit(0);
