/**
 * bun bench/encode-cost.ts [--rounds N] [--coins N] [--save]: what turning a served coin's bytes
 * into text costs PostgreSQL, by tier (issue 21, fourteenth round). The claim statement returns
 * each blob as `replace(encode(blob, 'base64'), E'\n', '')` (src/claims/phases.ts `b64`): PostgreSQL
 * encodes, and postgres.js reads every result column as text. One backend of a throw-away embedded
 * PostgreSQL evaluates, over N coins of a tier's typical sizes (src/coins/tiers.ts), the encoding
 * as sent, base64 without the newline removal, bytea's own text output (hex: what the column would
 * cost as text without encode), and the bare bytes (length() only: the floor, what a binary result
 * column would leave PostgreSQL), variants interleaved; the backend's CPU (/proc) ÷ coins, medians
 * over rounds. No rows cross the socket: the output functions run, the client reads one sum.
 * Writes bench/results[/local]/<stamp>-encode-cost.json.
 */
import postgres from "postgres";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { b64 } from "../src/claims/phases.ts";
import { typicalSizes } from "../src/coins/tiers.ts";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import type { Sql } from "../src/db/pool.ts";
import { cpuSecondsOf } from "./monitor.ts";
import { writeResult } from "./report.ts";
import { lowerMedian } from "./load.ts";
import { randomBytesSql, tiers } from "./seed.ts";

const option = (name: string, fallback: number) => {
  const at = process.argv.indexOf(name);
  return at < 0 ? fallback : Number(process.argv[at + 1]);
};
const rounds = option("--rounds", 5);
const coins = option("--coins", 20_000);

const variants: Record<string, (column: string) => string> = {
  "as sent (base64, newlines removed)": (c) => `length(${b64(c)})`,
  "base64 alone": (c) => `length(encode(${c}, 'base64'))`,
  "hex (bytea as text)": (c) => `length(${c}::text)`,
  "bytes (no encoding)": (c) => `length(${c})`,
};

const dataDir = mkdtempSync(join(tmpdir(), "aqm-encode-cost-"));
const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
const cells: { tier: string; variant: string; round: number; usPerCoin: number }[] = [];
try {
  const random = (await randomBytesSql(sql as unknown as Sql, true)).expr;
  for (const tier of tiers) {
    const { key, sig } = typicalSizes[tier];
    await sql.unsafe(`CREATE TABLE coins_${tier} AS SELECT ${random(key)} AS k, ${random(sig)} AS s FROM generate_series(1, ${coins}) AS s(i)`);
  }
  const [backend] = await sql<{ pid: number }[]>`SELECT pg_backend_pid() AS pid`;
  const pid = backend!.pid;
  for (let round = 0; round < rounds; round++) {
    for (const tier of tiers) {
      for (const [variant, expr] of Object.entries(variants)) {
        const c0 = cpuSecondsOf(pid);
        await sql.unsafe(`SELECT sum(${expr("k")} + ${expr("s")}) FROM coins_${tier}`);
        cells.push({ tier, variant, round, usPerCoin: Math.round(((cpuSecondsOf(pid) - c0) * 1e6 / coins) * 100) / 100 });
      }
    }
  }
} finally {
  await sql.end();
  await pg.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
const medians = tiers.flatMap((tier) => Object.keys(variants).map((variant) => ({
  tier, variant, usPerCoin: lowerMedian(cells.filter((c) => c.tier === tier && c.variant === variant).map((c) => c.usPerCoin))!,
})));
for (const m of medians) console.log(`${m.tier.padEnd(7)} ${m.variant.padEnd(36)} ${m.usPerCoin.toFixed(2).padStart(7)} µs of PostgreSQL CPU per coin`);
const file = writeResult({
  what: "PostgreSQL CPU per served coin by the blobs' text encoding (bench/encode-cost.ts)",
  coins, rounds, sizes: typicalSizes, medians, cells,
}, "-encode-cost", process.argv.includes("--save"));
console.log(`written: ${file}`);
process.exit(0);
