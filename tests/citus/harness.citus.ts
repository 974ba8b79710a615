import { afterAll, expect, test } from "bun:test";
import postgres from "postgres";
import { citusWorkerUrls, createDatabase, dropDatabase, isCitus, serverUrl, useTestDatabase } from "../helpers/db.ts";

// The Citus mode of tests/helpers/db.ts, proven on the cluster tests/citus/suite.ts starts:
//
//   bun tests/citus/suite.ts tests/citus/harness.citus.ts
//
// (bun test alone does not pick this file up, and run outside the runner its first test fails.)

if (!isCitus()) console.error("harness.citus.ts: TEST_CITUS_WORKERS is not set; run it with `bun tests/citus/suite.ts tests/citus/harness.citus.ts`");

const db = useTestDatabase();
const nodes = () => [serverUrl(), ...citusWorkerUrls()];
const open: postgres.Sql[] = [];
afterAll(async () => {
  await Promise.all(open.splice(0).map((sql) => sql.end({ timeout: 5 })));
});
const connect = (url: string) => {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  open.push(sql);
  return sql;
};
/** Which nodes (coordinator first, then the workers) have a database named `name`. */
const holders = async (name: string) => Promise.all(nodes().map(async (url) => {
  const [row] = await connect(url)<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_database WHERE datname = ${name}`;
  return row!.n === 1;
}));

test("the runner's environment is Citus mode: a coordinator and two workers", () => {
  expect(isCitus()).toBe(true);
  expect(citusWorkerUrls().length).toBe(2);
});

test("useTestDatabase() gives a database of its own on every node, with the citus extension in each copy", async () => {
  expect(await holders(db.name)).toEqual([true, true, true]);
  for (const url of nodes()) {
    const inDb = new URL(url);
    inDb.pathname = `/${db.name}`;
    const [row] = await connect(inDb.toString())<{ n: number }[]>`SELECT count(*)::int AS n FROM pg_extension WHERE extname = 'citus'`;
    expect(row!.n).toBe(1);
  }
});

test("the coordinator's copy lists the two workers as primaries in its own pg_dist_node", async () => {
  const [row] = await db.sql<{ n: number }[]>`
    SELECT count(*)::int AS n FROM pg_dist_node WHERE noderole = 'primary' AND groupid > 0`;
  expect(row!.n).toBe(2);
});

test("a table created and distributed in it places its shards on both workers and none on the coordinator, and its rows come back", async () => {
  await db.sql`CREATE TABLE harness_probe (owner uuid NOT NULL, n int NOT NULL)`;
  await db.sql`SELECT create_distributed_table('harness_probe', 'owner')`;
  const ports = await db.sql<{ port: number; shards: number }[]>`
    SELECT nodeport AS port, count(*)::int AS shards FROM citus_shards
    WHERE table_name = 'harness_probe'::regclass GROUP BY nodeport ORDER BY nodeport`;
  const workerPorts = citusWorkerUrls().map((url) => Number(new URL(url).port)).sort((a, b) => a - b);
  expect(ports.map((p) => p.port)).toEqual(workerPorts);
  for (const p of ports) expect(p.shards).toBeGreaterThan(0);
  await db.sql`INSERT INTO harness_probe SELECT gen_random_uuid(), g FROM generate_series(1, 100) AS g`;
  const [row] = await db.sql<{ n: number; sum: number }[]>`SELECT count(*)::int AS n, sum(n)::int AS sum FROM harness_probe`;
  expect(row).toEqual({ n: 100, sum: 5050 });
});

test("dropDatabase() removes the database from every node", async () => {
  let t = performance.now();
  const name = await createDatabase();
  const createMs = performance.now() - t;
  try {
    expect(await holders(name)).toEqual([true, true, true]);
  } finally {
    t = performance.now();
    await dropDatabase(name);
  }
  const dropMs = performance.now() - t;
  expect(await holders(name)).toEqual([false, false, false]);
  console.log(`harness: createDatabase() ${Math.round(createMs)} ms, dropDatabase() ${Math.round(dropMs)} ms on a coordinator and ${citusWorkerUrls().length} workers`);
}, 60_000);
