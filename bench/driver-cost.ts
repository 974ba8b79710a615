/**
 * bun bench/driver-cost.ts [name=<postgres.js package dir>]… [--rounds N] [--seconds S] [--save]:
 * what postgres.js itself costs the server per claim, and what another version of it would. The
 * project's own (patched) driver is `ours`; each extra argument names another install, e.g.
 * `v4=/tmp/pgv4/node_modules/postgres` after `npm install postgres@4.2.0` there. One throw-away
 * PostgreSQL; per round, one process per driver (order alternated) sends statements of the claim
 * statement's shape — 17 array parameters as literals of B = 16 elements (ids, flags, counts), 16 rows
 * back of the columns an answer is made of (key id, tier, the public key and signature as base64
 * text: GOLD, SILVER and BRONZE sizes in turn) — prepared, from 4 loops on a pool of 4, for S
 * seconds, and divides its own CPU (process.cpuUsage(): parameters, socket, rows; building the
 * parameters' strings included, as the server's arrayLiteral does) by the statements
 * and the rows (a row is a claim at count=1). The first 1.5 s warm the JIT and are not counted. No
 * HTTP, no app: the driver's share of the server's CPU per claim, nothing else.
 */
import postgres from "postgres";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import { writeResult } from "./report.ts";

const B = 16;
const loops = 4;
const statement = `SELECT p.n::int AS idx, f.key_id, f.coin_category, f.public_key_b64, f.signature_b64, false AS lr
  FROM unnest($1::int[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[], $7::int[], $8::int[], $9::bool[],
    $10::bool[], $11::bool[], $12::uuid[], $13::uuid[], $14::text[], $15::bool[], $16::text[], $17::int[])
    WITH ORDINALITY AS p(a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, n)
  JOIN driver_cost_coins f ON f.id = p.a1`;

if (process.argv[2] === "--child") {
  const [, , , packageDir, url, secondsArg] = process.argv;
  console.log(JSON.stringify(await measure(packageDir!, url!, Number(secondsArg))));
  process.exit(0);
}

async function measure(packageDir: string, url: string, seconds: number) {
  const { default: driver } = await import(join(packageDir, "src/index.js"));
  const sql = driver(url, { max: loops, onnotice: () => {} }) as ReturnType<typeof postgres>;
  const array = (f: () => string | number) => `{${Array.from({ length: B }, f).join(",")}}`;
  const id = () => crypto.randomUUID();
  const params = () => [array(() => Math.floor(Math.random() * 48)), array(id), array(id), array(id), array(id), array(() => 1),
    array(() => 0), array(() => 0), array(() => "f"), array(() => "f"), array(() => "t"), array(id), array(id),
    array(() => "NULL"), array(() => "f"), array(() => "NULL"), array(() => 0)];
  let statements = 0, rows = 0, stop = false;
  const loop = async () => {
    while (!stop) {
      const result = await sql.unsafe(statement, params(), { prepare: true });
      statements++;
      rows += result.length;
    }
  };
  const run = async (ms: number) => {
    stop = false;
    const running = Array.from({ length: loops }, loop);
    await Bun.sleep(ms);
    stop = true;
    await Promise.all(running);
  };
  await run(1500);
  statements = rows = 0;
  const cpu = process.cpuUsage();
  const started = performance.now();
  await run(seconds * 1000);
  const used = process.cpuUsage(cpu);
  const elapsed = (performance.now() - started) / 1000;
  await sql.end({ timeout: 5 });
  const us = used.user + used.system;
  return { statements, rows, usPerStatement: +(us / statements).toFixed(1), usPerRow: +(us / rows).toFixed(2), rowsPerSecond: Math.round(rows / elapsed) };
}

const args = process.argv.slice(2);
const option = (name: string, fallback: number) => (args.includes(name) ? Number(args[args.indexOf(name) + 1]) : fallback);
const rounds = option("--rounds", 4);
const seconds = option("--seconds", 5);
const drivers: [string, string][] = [["ours", resolve(import.meta.dir, "../node_modules/postgres")],
  ...args.filter((a) => a.includes("=")).map((a): [string, string] => [a.slice(0, a.indexOf("=")), resolve(a.slice(a.indexOf("=") + 1))])];
const versionOf = async (dir: string) => (await Bun.file(join(dir, "package.json")).json()).version as string;

const dataDir = mkdtempSync(join(tmpdir(), "aqm-driver-cost-"));
const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
try {
  const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
  await sql`CREATE TABLE driver_cost_coins (id int PRIMARY KEY, key_id uuid, coin_category text, public_key_b64 text, signature_b64 text)`;
  const sizes = [["GOLD", 1184, 3309], ["SILVER", 1184, 64], ["BRONZE", 32, 64]] as const;
  for (let i = 0; i < 48; i++) {
    const [tier, key, signature] = sizes[i % 3]!;
    const b64 = (n: number) => Buffer.from(crypto.getRandomValues(new Uint8Array(n))).toString("base64");
    await sql`INSERT INTO driver_cost_coins VALUES (${i}, ${crypto.randomUUID()}, ${tier}, ${b64(key)}, ${b64(signature)})`;
  }
  await sql.end();
  const measured: Record<string, unknown>[] = [];
  for (let round = 0; round < rounds; round++) {
    for (const [name, dir] of round % 2 ? [...drivers].reverse() : drivers) {
      const child = Bun.spawn([process.execPath, import.meta.path, "--child", dir, pg.url, String(seconds)], { stdout: "pipe", stderr: "inherit" });
      const row = { round, driver: name, ...JSON.parse(await new Response(child.stdout).text()) };
      console.log(JSON.stringify(row));
      measured.push(row);
    }
  }
  const summary = await Promise.all(drivers.map(async ([name, dir]) => {
    const per = measured.filter((m) => m.driver === name).map((m) => m.usPerRow as number).sort((a, b) => a - b);
    const median = (per[Math.floor((per.length - 1) / 2)]! + per[Math.ceil((per.length - 1) / 2)]!) / 2;
    return { driver: name, version: await versionOf(dir), usPerRowMedian: +median.toFixed(2), usPerRow: per };
  }));
  console.table(summary.map(({ usPerRow, ...s }) => s));
  const file = writeResult({ bench: "driver-cost", rows_per_statement: B, loops, seconds, rounds, bun: Bun.version, summary, measured },
    "-driver-cost", args.includes("--save"));
  console.log(`wrote ${file}`);
} finally {
  await pg.stop();
  rmSync(dataDir, { recursive: true, force: true });
}
