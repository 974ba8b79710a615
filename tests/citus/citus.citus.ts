import { afterAll, beforeAll, expect, test } from "bun:test";
import postgres from "postgres";
import { startCitusCluster, type CitusCluster } from "./cluster.ts";

// What the server's design on Citus (issue 19) rests on, proven with real SQL through postgres.js
// on a real cluster (a coordinator and two workers; `bun test ./tests/citus/citus.citus.ts`,
// after `.ci/citus-build.sh` as root). Each test's title states one finding; tests/citus/README.md
// lists them. Routing is checked two ways: EXPLAIN ("Task Count: 1") and, for the statements
// themselves as executed (prepared, with parameters, as the server runs them), the commands the
// coordinator sends to the workers (citus.log_remote_commands, read from the NOTICEs).

type Sql = postgres.Sql<Record<string, never>>;

let cluster: CitusCluster;
let sql: Sql;
const log = (line: string) => process.env.CITUS_VERBOSE && console.log(`citus: ${line}`);

/** Owners grouped by shard (get_shard_id_for_distribution_column), and where each shard lives. */
let byShard: Map<string, string[]>;
let shardPort: Map<string, number>;
let owners: string[];
const PER_OWNER = 30;

const COINS = `
CREATE TABLE coins (
    user_id          uuid        NOT NULL,
    record_id        bigint GENERATED ALWAYS AS IDENTITY,
    key_id           varchar(36) NOT NULL,
    coin_category    text        NOT NULL CHECK (coin_category IN ('GOLD', 'SILVER', 'BRONZE')),
    public_key_blob  bytea       NOT NULL,
    signature_blob   bytea       NOT NULL,
    uploaded_at      timestamptz NOT NULL DEFAULT now(),
    fetched_by       uuid,
    fetched_at       timestamptz,
    claim_ref        uuid,
    PRIMARY KEY (user_id, record_id),
    CONSTRAINT coins_owner_key UNIQUE (user_id, key_id),
    CONSTRAINT coins_claim_complete CHECK ((fetched_by IS NULL) = (fetched_at IS NULL))
);
CREATE INDEX coins_available ON coins (user_id, coin_category, record_id) WHERE fetched_at IS NULL`;

// the pair quota, keyed by the coins' owner (the claim's target) so it lives with the coins
const QUOTA = `
CREATE TABLE quota (
    owner  uuid      NOT NULL,
    pair   uuid      NOT NULL,
    hours  integer[] NOT NULL,
    counts integer[] NOT NULL,
    PRIMARY KEY (owner, pair)
)`;

/** One connection that logs what the coordinator sends to the workers. */
async function tracer() {
  const notices: string[] = [];
  const conn = postgres(cluster.url, { max: 1, onnotice: (n) => void notices.push(String(n.message)) });
  await conn`set citus.log_remote_commands = on`;
  /** Runs `run` and reports the remote commands it caused: `work` = the statements (not BEGIN/COMMIT/PREPARE …). */
  const trace = async <T>(run: (c: Sql) => Promise<T>) => {
    notices.length = 0;
    let result: T | undefined;
    let error: (Error & { code?: string; detail?: string; hint?: string }) | undefined;
    try {
      result = await run(conn as unknown as Sql);
    } catch (e) {
      error = e as typeof error;
    }
    const issued = notices.filter((m) => m.startsWith("issuing ")).map((m) => m.slice("issuing ".length).replace(/\s+/g, " "));
    const work = issued.filter((m) => !/^(BEGIN|COMMIT|PREPARE TRANSACTION|ROLLBACK|COPY )/.test(m));
    const shards = [...new Set(issued.flatMap((m) => [...m.matchAll(/\b(coins|quota|owner_anchor)_(\d{6,})\b/g)].map((x) => x[0])))];
    return {
      result, error, issued, work, shards,
      twoPhase: issued.some((m) => m.startsWith("PREPARE TRANSACTION")),
      /** one statement sent to one shard group, committed without 2PC */
      routed: !error && work.length === 1 && !issued.some((m) => m.startsWith("PREPARE TRANSACTION")),
    };
  };
  return { conn, trace, notices };
}

const taskCount = (plan: Record<string, string>[]) =>
  Number(plan.map((r) => r["QUERY PLAN"]).join("\n").match(/Task Count: (\d+)/)?.[1] ?? NaN);

/** Owners whose shards share one shard (n of them), and two owners on shards on DIFFERENT workers. */
function sameShard(n: number): string[] {
  const group = [...byShard.values()].find((g) => g.length >= n);
  if (!group) throw new Error(`no shard holds ${n} of the test owners`);
  return group.slice(0, n);
}
function twoWorkers(): [string, string] {
  const entries = [...byShard.entries()];
  const [s1, o1] = entries[0]!;
  const other = entries.find(([s]) => shardPort.get(s) !== shardPort.get(s1))!;
  return [o1[0]!, other[1][0]!];
}

async function upload(owner: string, n: number, tier = "GOLD") {
  await sql`insert into coins (user_id, key_id, coin_category, public_key_blob, signature_blob)
    select ${owner}, gen_random_uuid()::text, ${tier}, '\\x01', '\\x02' from generate_series(1, ${n})`;
}

beforeAll(async () => {
  cluster = await startCitusCluster({ log });
  console.log(`citus: cluster (coordinator + 2 workers) up in ${cluster.startMs} ms`);
  sql = postgres(cluster.url, { max: 8, onnotice: () => {} }) as unknown as Sql;
  await sql.unsafe(COINS);
  await sql`select create_distributed_table('coins', 'user_id')`;
  await sql.unsafe(QUOTA);
  await sql`select create_distributed_table('quota', 'owner', colocate_with => 'coins')`;
  owners = Array.from({ length: 64 }, () => crypto.randomUUID());
  await sql`insert into coins (user_id, key_id, coin_category, public_key_blob, signature_blob)
    select o, 'k-' || g, 'GOLD', '\\x01', '\\x02' from unnest(${owners}::uuid[]) o, generate_series(1, ${PER_OWNER}) g`;
  const rows = await sql<{ owner: string; shard: string; port: number }[]>`
    select o::text as owner, s.shardid::text as shard, s.nodeport as port
    from unnest(${owners}::uuid[]) o
    join citus_shards s on s.shardid = get_shard_id_for_distribution_column('coins', o) and s.table_name = 'coins'::regclass`;
  byShard = new Map();
  shardPort = new Map();
  for (const r of rows) {
    byShard.set(r.shard, [...(byShard.get(r.shard) ?? []), r.owner]);
    shardPort.set(r.shard, r.port);
  }
}, 120_000);

afterAll(async () => {
  await sql?.end({ timeout: 2 }).catch(() => {});
  await cluster?.stop();
});

// ---------------------------------------------------------------------------------------------
// Tables

test("the coin table distributes by user_id with PRIMARY KEY (user_id, record_id); the quota table is co-located with it (colocate_with)", async () => {
  const parts = await sql<{ rel: string; col: string; colocationid: number }[]>`
    select logicalrelid::text as rel, column_to_column_name(logicalrelid, partkey) as col, colocationid
    from pg_dist_partition where logicalrelid in ('coins'::regclass, 'quota'::regclass) order by 1`;
  expect(parts.map((p) => [p.rel, p.col])).toEqual([["coins", "user_id"], ["quota", "owner"]]);
  expect(parts[0]!.colocationid).toBe(parts[1]!.colocationid);
  // 32 shards each (citus.shard_count's default), spread over the two workers only
  const shards = await sql<{ rel: string; n: number; ports: number[] }[]>`
    select table_name::text as rel, count(*)::int as n, array_agg(distinct nodeport) as ports from citus_shards group by 1 order by 1`;
  expect(shards.map((s) => s.n)).toEqual([32, 32]);
  expect(new Set(shards.flatMap((s) => s.ports))).toEqual(new Set(cluster.workers.map((w) => w.port)));
});

test("the server's own PRIMARY KEY (record_id) is refused on a table distributed by user_id: a unique constraint must include the distribution column", async () => {
  await sql.unsafe(`CREATE TABLE pk_probe (record_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id uuid NOT NULL)`);
  const error = await sql`select create_distributed_table('pk_probe', 'user_id')`.catch((e) => e);
  expect(error).toBeInstanceOf(Error);
  expect(error.code).toBe("0A000");
  expect(error.message).toMatch(/cannot create constraint on "pk_probe"/);
  expect(error.detail).toMatch(/Distributed relations cannot have UNIQUE, EXCLUDE, or PRIMARY KEY constraints that do not include the partition column/);
  await sql`drop table pk_probe`;
});

test("uploaded rows live in the workers' shards; the coordinator's table is an empty shell", async () => {
  const perWorker = await sql<{ port: number; n: number }[]>`
    select nodeport as port, (result)::int as n from run_command_on_workers($$
      select coalesce(sum(n), 0) from (
        select (xpath('/row/n/text()', query_to_xml(format('select count(*) as n from %I', c.relname), false, true, '')))[1]::text::int as n
        from pg_class c where c.relname ~ '^coins_[0-9]+$' and c.relkind = 'r') s $$) order by 1`;
  expect(perWorker).toHaveLength(2);
  for (const w of perWorker) expect(w.n).toBeGreaterThan(0);
  const total = perWorker.reduce((s, w) => s + w.n, 0);
  expect(total).toBe(Number((await sql`select count(*) as n from coins`)[0]!.n));
  // the coordinator holds no shard and no row
  expect((await sql`select count(*)::int as n from citus_shards where nodeport = ${cluster.coordinator.port}`)[0]!.n).toBe(0);
  expect((await sql`select pg_relation_size('coins')::int as n`)[0]!.n).toBe(0);
});

// ---------------------------------------------------------------------------------------------
// The router claim of one owner

/** The one-owner claim. `outerFilter`: the UPDATE's own coins reference says c.user_id = $owner too (without it, see below). */
const claimOne = (c: Sql, owner: string, n: number, by: string, outerFilter = true) => c<{ record_id: string }[]>`
  WITH picked AS (
    SELECT user_id, record_id FROM coins
    WHERE user_id = ${owner} AND coin_category = 'GOLD' AND fetched_at IS NULL
    ORDER BY record_id LIMIT ${n}
    FOR UPDATE SKIP LOCKED
  )
  UPDATE coins c SET fetched_by = ${by}, fetched_at = now()
  FROM picked WHERE c.user_id = picked.user_id AND c.record_id = picked.record_id ${outerFilter ? c`AND c.user_id = ${owner}` : c``}
  RETURNING c.record_id`;

test("the one-owner claim with only the CTE filtered (UPDATE coins c … FROM picked WHERE c.user_id = picked.user_id …) is NOT a router statement: Citus runs the pick, then sends the UPDATE to all 32 shards with 2PC", async () => {
  const owner = crypto.randomUUID();
  await upload(owner, 10);
  const { conn, trace } = await tracer();
  const t = await trace((c) => claimOne(c, owner, 3, owners[0]!, false));
  expect(t.error).toBeUndefined();
  expect(t.result as unknown[]).toHaveLength(3);
  expect(t.routed).toBe(false);
  expect(t.shards.length).toBe(32);
  expect(t.twoPhase).toBe(true);
  await conn.end();
});

test("a one-owner claim (user_id = $1 … FOR UPDATE SKIP LOCKED in the CTE, UPDATE … FROM picked AND c.user_id = $1) is a router statement: one command to one shard, FIFO by record_id", async () => {
  const owner = crypto.randomUUID();
  await upload(owner, 10);
  const { conn, trace } = await tracer();
  const t = await trace((c) => claimOne(c, owner, 3, owners[0]!));
  expect(t.error).toBeUndefined();
  expect(t.routed).toBe(true);
  expect(t.shards).toHaveLength(1);
  const ids = await sql<{ record_id: string }[]>`select record_id from coins where user_id = ${owner} order by record_id`;
  expect((t.result as { record_id: string }[]).map((r) => r.record_id).sort()).toEqual(ids.slice(0, 3).map((r) => r.record_id).sort());
  await conn.end();
});

test("8 concurrent clients claiming one owner's coins through the coordinator never get the same row twice, and together get them all", async () => {
  const owner = crypto.randomUUID();
  await upload(owner, 400);
  const clients = Array.from({ length: 8 }, () => postgres(cluster.url, { max: 1, onnotice: () => {} }) as unknown as Sql);
  const got: string[] = [];
  await Promise.all(clients.map(async (c, i) => {
    for (;;) {
      const rows = await claimOne(c, owner, 3, owners[i]!);
      if (rows.length === 0) break;
      got.push(...rows.map((r) => r.record_id));
    }
  }));
  await Promise.all(clients.map((c) => c.end()));
  expect(new Set(got).size).toBe(got.length);
  expect(got).toHaveLength(400);
  expect((await sql`select count(*)::int as n from coins where user_id = ${owner} and fetched_at is null`)[0]!.n).toBe(0);
}, 60_000);

// ---------------------------------------------------------------------------------------------
// Batching: user_id = ANY($1::uuid[])

test("SELECT … WHERE user_id = ANY($1::uuid[]) is a router plan (Task Count: 1) when every owner hashes to one shard, and a 2-task plan when they span two shards", async () => {
  const same = sameShard(3);
  const two = twoWorkers();
  expect(taskCount(await sql`explain select count(*) from coins where user_id = any(${same}::uuid[])`)).toBe(1);
  expect(taskCount(await sql`explain select count(*) from coins where user_id = any(${two}::uuid[])`)).toBe(2);
  const { conn, trace } = await tracer();
  expect((await trace((c) => c`select count(*) from coins where user_id = any(${same}::uuid[])`)).routed).toBe(true);
  const spanning = await trace((c) => c`select count(*)::int as n from coins where user_id = any(${two}::uuid[])`);
  expect(spanning.error).toBeUndefined();
  expect(spanning.work).toHaveLength(2);
  await conn.end();
});

test("… FOR UPDATE SKIP LOCKED with user_id = ANY($1) routes over one shard's owners; over two shards it fails: 0A000 'could not run distributed query with FOR UPDATE/SHARE commands'", async () => {
  const same = sameShard(3);
  const { conn, trace } = await tracer();
  const lock = (c: Sql, ids: string[]) => c`select user_id, record_id from coins where user_id = any(${ids}::uuid[]) and fetched_at is null
    order by record_id limit 5 for update skip locked`;
  const one = await trace((c) => c.begin((t) => lock(t as unknown as Sql, same)));
  expect(one.error).toBeUndefined();
  expect(one.work).toHaveLength(1);
  expect(one.twoPhase).toBe(false);
  const spanning = await trace((c) => lock(c, twoWorkers()));
  expect(spanning.error?.code).toBe("0A000");
  expect(spanning.error?.message).toBe("could not run distributed query with FOR UPDATE/SHARE commands");
  expect(spanning.error?.hint).toBe("Consider using an equality filter on the distributed table's partition column.");
  expect(spanning.issued).toHaveLength(0);
  await conn.end();
});

/** The batched claim: per owner the oldest n, through a LATERAL over unnest($1), then the UPDATE. */
const batchedClaim = (c: Sql, ids: string[], n: number, by: string, repeatAny = true) => c<{ user_id: string; record_id: string }[]>`
  WITH picked AS (
    SELECT p.user_id, p.record_id FROM unnest(${ids}::uuid[]) AS u(owner) CROSS JOIN LATERAL (
      SELECT c.user_id, c.record_id FROM coins c
      WHERE c.user_id = u.owner ${repeatAny ? c`AND c.user_id = ANY(${ids}::uuid[])` : c``}
        AND c.coin_category = 'GOLD' AND c.fetched_at IS NULL
      ORDER BY c.record_id LIMIT ${n}
      FOR UPDATE SKIP LOCKED) p
  )
  UPDATE coins c SET fetched_by = ${by}, fetched_at = now()
  FROM picked WHERE c.user_id = picked.user_id AND c.record_id = picked.record_id AND c.user_id = ANY(${ids}::uuid[])
  RETURNING c.user_id, c.record_id`;

test("the batched claim — LATERAL over unnest($1) with LIMIT … FOR UPDATE SKIP LOCKED in a CTE, UPDATE … FROM it — routes when EVERY coins reference also says user_id = ANY($1) (one shard's owners)", async () => {
  const same = sameShard(3);
  const { conn, trace } = await tracer();
  const t = await trace((c) => batchedClaim(c, same, 2, owners[0]!));
  expect(t.error).toBeUndefined();
  expect(t.routed).toBe(true);
  expect(t.result as unknown[]).toHaveLength(6);
  // each owner's 2 oldest available
  const rows = t.result as { user_id: string; record_id: string }[];
  for (const owner of same) expect(rows.filter((r) => r.user_id === owner)).toHaveLength(2);
  await conn.end();
});

test("EXPLAIN of the batched claim over one shard's owners: Task Count: 1, the LockRows and the UPDATE both on that one shard", async () => {
  const same = sameShard(3);
  const plan = await sql.unsafe(`EXPLAIN WITH picked AS (
      SELECT p.user_id, p.record_id FROM unnest($1::uuid[]) AS u(owner) CROSS JOIN LATERAL (
        SELECT c.user_id, c.record_id FROM coins c WHERE c.user_id = u.owner AND c.user_id = ANY($1::uuid[]) AND c.fetched_at IS NULL
        ORDER BY c.record_id LIMIT 2 FOR UPDATE SKIP LOCKED) p)
    UPDATE coins c SET fetched_by = $2, fetched_at = now()
    FROM picked WHERE c.user_id = picked.user_id AND c.record_id = picked.record_id AND c.user_id = ANY($1::uuid[])
    RETURNING c.record_id`, [same, owners[0]!]);
  const text = plan.map((r) => r["QUERY PLAN"]).join("\n");
  expect(taskCount(plan)).toBe(1);
  expect(text).toMatch(/LockRows/);
  expect(text).toMatch(/Update on coins_\d+ c/);
});

test("without user_id = ANY($1) inside the LATERAL, Citus refuses it: 0A000 'cannot push down this subquery' (Limit clause … references a column from a table function)", async () => {
  const error = await batchedClaim(sql, sameShard(3), 2, owners[0]!, false).catch((e) => e);
  expect(error.code).toBe("0A000");
  expect(error.message).toBe("cannot push down this subquery");
  expect(error.detail).toBe("Limit clause is currently unsupported when a lateral subquery references a column from a table function (u)");
});

test("without user_id = ANY($1) on the UPDATE's own coins reference, the claim still succeeds but is NOT routed: the pick runs first, then the UPDATE goes to all 32 shards with 2PC", async () => {
  const same = sameShard(3);
  const { conn, trace } = await tracer();
  const t = await trace((c) => c`
    WITH picked AS (SELECT user_id, record_id FROM coins WHERE user_id = ANY(${same}::uuid[]) AND fetched_at IS NULL
      ORDER BY record_id LIMIT 2 FOR UPDATE SKIP LOCKED)
    UPDATE coins c SET fetched_by = ${owners[0]!}, fetched_at = now()
    FROM picked WHERE c.user_id = picked.user_id AND c.record_id = picked.record_id RETURNING c.record_id`);
  expect(t.error).toBeUndefined();
  expect(t.result as unknown[]).toHaveLength(2);
  expect(t.routed).toBe(false);
  expect(t.shards.filter((s) => s.startsWith("coins_")).length).toBe(32);
  expect(t.twoPhase).toBe(true);
  await conn.end();
});

test("the batched claim over two shards fails (LATERAL + LIMIT: 'cannot push down this subquery'); nothing is claimed", async () => {
  const two = twoWorkers();
  const before = (await sql`select count(*)::int as n from coins where user_id = any(${two}::uuid[]) and fetched_at is null`)[0]!.n;
  const error = await batchedClaim(sql, two, 2, owners[0]!).catch((e) => e);
  expect(error.code).toBe("0A000");
  expect(error.message).toBe("cannot push down this subquery");
  expect((await sql`select count(*)::int as n from coins where user_id = any(${two}::uuid[]) and fetched_at is null`)[0]!.n).toBe(before);
});

test("a data-modifying CTE on the co-located quota (lock FOR UPDATE, then UPDATE, each filtered by owner = ANY($1)) stays in the one routed statement with the claim", async () => {
  const same = sameShard(3);
  const pairs = same.map(() => crypto.randomUUID());
  await sql`insert into quota (owner, pair, hours, counts) select o, p, '{1}', '{0}' from unnest(${same}::uuid[], ${pairs}::uuid[]) x(o, p)`;
  const { conn, trace } = await tracer();
  const t = await trace((c) => c<{ user_id: string }[]>`
    WITH locked AS MATERIALIZED (
      SELECT q.owner, q.pair FROM quota q WHERE q.owner = ANY(${same}::uuid[]) AND q.pair = ANY(${pairs}::uuid[])
      ORDER BY q.pair FOR UPDATE
    ),
    picked AS (
      SELECT p.user_id, p.record_id FROM unnest(${same}::uuid[]) AS u(owner) CROSS JOIN LATERAL (
        SELECT c.user_id, c.record_id FROM coins c WHERE c.user_id = u.owner AND c.user_id = ANY(${same}::uuid[]) AND c.fetched_at IS NULL
        ORDER BY c.record_id LIMIT 2 FOR UPDATE SKIP LOCKED) p
    ),
    qu AS (
      UPDATE quota q SET counts = ARRAY[q.counts[1] + (SELECT count(*) FROM picked p WHERE p.user_id = q.owner)::int]
      FROM locked l WHERE q.owner = l.owner AND q.pair = l.pair AND q.owner = ANY(${same}::uuid[])
      RETURNING q.owner
    ),
    upd AS (
      UPDATE coins c SET fetched_by = ${owners[0]!}, fetched_at = now() FROM picked
      WHERE c.user_id = picked.user_id AND c.record_id = picked.record_id AND c.user_id = ANY(${same}::uuid[])
        AND c.user_id IN (SELECT owner FROM qu)
      RETURNING c.user_id, c.record_id
    )
    SELECT user_id FROM upd`);
  expect(t.error).toBeUndefined();
  expect(t.routed).toBe(true);
  expect(new Set(t.shards.map((s) => s.split("_")[0]))).toEqual(new Set(["coins", "quota"]));
  expect(t.result as unknown[]).toHaveLength(6);
  const counts = await sql`select counts[1] as c from quota where pair = any(${pairs}::uuid[])`;
  expect(counts.map((r) => r.c)).toEqual([2, 2, 2]);
  await conn.end();
});

test("INSERT … SELECT FROM unnest($1, $2) ON CONFLICT into the quota is NOT routed (rows pass through the coordinator: intermediate result, then 2PC) even when filtered by owner = ANY($1)", async () => {
  const same = sameShard(3);
  const pairs = same.map(() => crypto.randomUUID());
  const { conn, trace } = await tracer();
  const t = await trace((c) => c`
    INSERT INTO quota AS q (owner, pair, hours, counts)
    SELECT x.o, x.p, '{1}', '{1}' FROM unnest(${same}::uuid[], ${pairs}::uuid[]) x(o, p) WHERE x.o = ANY(${same}::uuid[])
    ON CONFLICT (owner, pair) DO UPDATE SET counts = ARRAY[q.counts[1] + 1] RETURNING q.owner`);
  expect(t.error).toBeUndefined();
  expect(t.routed).toBe(false);
  expect(t.issued.some((m) => m.startsWith("COPY insert_select_"))).toBe(true);
  expect(t.twoPhase).toBe(true);
  await conn.end();
});

test("the same upsert routes when its rows come from a co-located table filtered by ANY($1) (an owner row joined to unnest): one command, no 2PC — but NOT inside the claim's CTEs (then 3 steps, still one worker and one-phase commit)", async () => {
  await sql.unsafe(`CREATE TABLE owner_anchor (owner uuid PRIMARY KEY)`);
  await sql`select create_distributed_table('owner_anchor', 'owner', colocate_with => 'coins')`;
  await sql`insert into owner_anchor select unnest(${owners}::uuid[])`;
  const same = sameShard(3);
  const pairs = same.map(() => crypto.randomUUID());
  const { conn, trace } = await tracer();
  const alone = await trace((c) => c`
    INSERT INTO quota AS q (owner, pair, hours, counts)
    SELECT a.owner, x.p, '{1}', '{1}' FROM owner_anchor a JOIN unnest(${same}::uuid[], ${pairs}::uuid[]) x(o, p) ON a.owner = x.o
    WHERE a.owner = ANY(${same}::uuid[])
    ON CONFLICT (owner, pair) DO UPDATE SET counts = ARRAY[q.counts[1] + 1] RETURNING q.owner`);
  expect(alone.error).toBeUndefined();
  expect(alone.routed).toBe(true);
  expect(alone.result as unknown[]).toHaveLength(3);
  const inClaim = await trace((c) => c`
    WITH picked AS (
      SELECT c.user_id, c.record_id FROM coins c WHERE c.user_id = ANY(${same}::uuid[]) AND c.fetched_at IS NULL
      ORDER BY c.record_id LIMIT 2 FOR UPDATE SKIP LOCKED),
    qi AS (
      INSERT INTO quota AS q (owner, pair, hours, counts)
      SELECT a.owner, x.p, '{1}', '{1}' FROM owner_anchor a JOIN unnest(${same}::uuid[], ${pairs}::uuid[]) x(o, p) ON a.owner = x.o
      WHERE a.owner = ANY(${same}::uuid[])
      ON CONFLICT (owner, pair) DO UPDATE SET counts = ARRAY[q.counts[1] + 1] RETURNING q.owner),
    upd AS (
      UPDATE coins c SET fetched_by = ${owners[0]!}, fetched_at = now() FROM picked
      WHERE c.user_id = picked.user_id AND c.record_id = picked.record_id AND c.user_id = ANY(${same}::uuid[])
      RETURNING c.user_id, c.record_id)
    SELECT (SELECT count(*) FROM qi)::int AS q, (SELECT count(*) FROM upd)::int AS u`);
  expect(inClaim.error).toBeUndefined();
  expect(inClaim.result as unknown).toEqual([{ q: 3, u: 2 }]);
  expect(inClaim.routed).toBe(false);
  expect(inClaim.work.length).toBe(3); // the pick, the insert, the update (each its own snapshot on the worker)
  expect(inClaim.twoPhase).toBe(false);
  expect(new Set(inClaim.issued.flatMap((m) => m.match(/port=\d+/g) ?? [])).size).toBeLessThanOrEqual(1);
  await conn.end();
});

test("the claim's CTEs on top of an INSERT … SELECT (WITH picked, upd … INSERT INTO quota SELECT …) fail: XX000 'cannot execute a distributed query from a query on a shard'", async () => {
  const same = sameShard(3);
  const pairs = same.map(() => crypto.randomUUID());
  const error = await sql`
    WITH picked AS (
      SELECT c.user_id, c.record_id FROM coins c WHERE c.user_id = ANY(${same}::uuid[]) AND c.fetched_at IS NULL
      ORDER BY c.record_id LIMIT 2 FOR UPDATE SKIP LOCKED),
    upd AS (
      UPDATE coins c SET fetched_by = ${owners[0]!}, fetched_at = now() FROM picked
      WHERE c.user_id = picked.user_id AND c.record_id = picked.record_id AND c.user_id = ANY(${same}::uuid[])
      RETURNING c.user_id)
    INSERT INTO quota AS q (owner, pair, hours, counts)
    SELECT a.owner, x.p, '{1}', ARRAY[(SELECT count(*) FROM upd u WHERE u.user_id = a.owner)::int]
    FROM owner_anchor a JOIN unnest(${same}::uuid[], ${pairs}::uuid[]) x(o, p) ON a.owner = x.o
    WHERE a.owner = ANY(${same}::uuid[])
    ON CONFLICT (owner, pair) DO UPDATE SET counts = ARRAY[q.counts[1] + excluded.counts[1]]`.catch((e) => e);
  expect(error.code).toBe("XX000");
  expect(error.message).toBe("cannot execute a distributed query from a query on a shard");
});

test("two routed statements on one shard group in one transaction (upsert the quota rows, then the claim) commit with a one-phase COMMIT on one worker", async () => {
  const same = sameShard(3);
  const pairs = same.map(() => crypto.randomUUID());
  const { conn, trace } = await tracer();
  const t = await trace((c) => c.begin(async (tx) => {
    await tx`INSERT INTO quota AS q (owner, pair, hours, counts)
      SELECT a.owner, x.p, '{1}', '{0}' FROM owner_anchor a JOIN unnest(${same}::uuid[], ${pairs}::uuid[]) x(o, p) ON a.owner = x.o
      WHERE a.owner = ANY(${same}::uuid[]) ON CONFLICT (owner, pair) DO NOTHING`;
    return batchedClaim(tx as unknown as Sql, same, 1, owners[0]!);
  }));
  expect(t.error).toBeUndefined();
  expect(t.work).toHaveLength(2);
  expect(t.twoPhase).toBe(false);
  expect(t.issued.at(-1)).toBe("COMMIT");
  await conn.end();
});

test("prepared statements: ANY($1) routing holds over 12 executions (Citus makes the generic plan cost-prohibitive), but plan_cache_mode = force_generic_plan breaks it: 0A000 'could not create distributed plan'", async () => {
  const same = sameShard(3);
  const { conn, trace } = await tracer();
  for (let i = 0; i < 12; i++) {
    const t = await trace((c) => batchedClaim(c, same, 1, owners[0]!));
    expect(t.routed).toBe(true);
  }
  await conn`set plan_cache_mode = force_generic_plan`;
  const generic = await trace((c) => c`select count(*) from coins where user_id = any(${same}::uuid[])`);
  expect(generic.error?.code).toBe("0A000");
  expect(generic.error?.message).toBe("could not create distributed plan");
  // the single-owner fast path (user_id = $1) survives a generic plan
  const fast = await trace((c) => c`select count(*) from coins where user_id = ${same[0]!}`);
  expect(fast.error).toBeUndefined();
  expect(fast.routed).toBe(true);
  await conn.end();
});

// ---------------------------------------------------------------------------------------------
// pg_notify

test("pg_notify inside a router statement runs on the worker: a LISTEN on that worker hears it, a LISTEN on the coordinator does not (a plain SELECT pg_notify reaches the coordinator's)", async () => {
  const owner = crypto.randomUUID();
  await upload(owner, 3);
  const port = (await sql`select nodeport from citus_shards where shardid = get_shard_id_for_distribution_column('coins', ${owner}::uuid)`)[0]!.nodeport;
  const worker = cluster.workers.find((w) => w.port === port)!;
  const heard = { coordinator: [] as string[], worker: [] as string[] };
  const onCoordinator = postgres(cluster.url, { max: 1, onnotice: () => {} });
  const onWorker = postgres(cluster.nodeUrl(worker.name), { max: 1, onnotice: () => {} });
  await onCoordinator.listen("aqm_stock", (p) => void heard.coordinator.push(p));
  await onWorker.listen("aqm_stock", (p) => void heard.worker.push(p));
  await sql`WITH upd AS (
      UPDATE coins SET fetched_by = ${owners[0]!}, fetched_at = now()
      WHERE user_id = ${owner} AND record_id = (SELECT min(record_id) FROM coins WHERE user_id = ${owner} AND fetched_at IS NULL)
      RETURNING user_id)
    SELECT pg_notify('aqm_stock', user_id::text) FROM upd`;
  await sql`select pg_notify('aqm_stock', 'from-the-coordinator')`;
  const deadline = Date.now() + 3000;
  while ((heard.worker.length < 1 || heard.coordinator.length < 1) && Date.now() < deadline) await Bun.sleep(50);
  await Bun.sleep(300);
  expect(heard.worker).toEqual([owner]);
  expect(heard.coordinator).toEqual(["from-the-coordinator"]);
  await onCoordinator.end();
  await onWorker.end();
});

test("a transaction writing on both workers cannot notify on a worker: the 2PC's PREPARE TRANSACTION fails (0A000, 'cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY') and everything rolls back", async () => {
  const [a, b] = twoWorkers();
  const before = await sql`select count(*)::int as n from coins where claim_ref is not null and user_id = any(${[a, b]}::uuid[])`;
  const ref = crypto.randomUUID();
  const error = await sql.begin(async (tx) => {
    await tx`WITH upd AS (UPDATE coins SET claim_ref = ${ref} WHERE user_id = ${a} RETURNING user_id)
      SELECT pg_notify('aqm_stock', user_id::text) FROM upd LIMIT 1`;
    await tx`UPDATE coins SET claim_ref = ${ref} WHERE user_id = ${b}`;
  }).catch((e) => e);
  expect(error).toBeInstanceOf(Error);
  console.log(`citus: notify + 2PC: [${error.code}] ${error.message}`);
  expect(error.message).toMatch(/PREPARE a transaction that has executed LISTEN, UNLISTEN, or NOTIFY/);
  expect((await sql`select count(*)::int as n from coins where claim_ref = ${ref}`)[0]!.n).toBe(0);
  expect((await sql`select count(*)::int as n from coins where claim_ref is not null and user_id = any(${[a, b]}::uuid[])`)[0]!.n).toBe(before[0]!.n);
});

// ---------------------------------------------------------------------------------------------
// Identity / bigserial

test("identity and bigserial values inserted through the coordinator come from the coordinator's sequence: increasing per owner in upload order, so FIFO by record_id holds", async () => {
  await sql.unsafe(`CREATE TABLE seq_probe (user_id uuid NOT NULL, id_ident bigint GENERATED ALWAYS AS IDENTITY, id_serial bigserial, n int NOT NULL,
    PRIMARY KEY (user_id, id_ident))`);
  await sql`select create_distributed_table('seq_probe', 'user_id', colocate_with => 'coins')`;
  const probeOwners = [...new Set(sameShard(2).concat(twoWorkers()))];
  // interleaved uploads of several owners, from several connections, in rounds
  for (let round = 0; round < 5; round++) {
    await Promise.all(probeOwners.map((o) => sql`insert into seq_probe (user_id, n) select ${o}, ${round} * 100 + g from generate_series(1, 10) g order by g`));
  }
  const rows = await sql<{ user_id: string; id_ident: string; id_serial: string; n: number }[]>`
    select user_id::text, id_ident::text, id_serial::text, n from seq_probe order by seq_probe.user_id, seq_probe.id_ident`;
  for (const o of probeOwners) {
    const mine = rows.filter((r) => r.user_id === o);
    expect(mine.map((r) => r.n)).toEqual([...mine.map((r) => r.n)].sort((x, y) => x - y)); // FIFO by id = upload order
    const serial = mine.map((r) => BigInt(r.id_serial));
    for (let i = 1; i < serial.length; i++) expect(serial[i]! > serial[i - 1]!).toBe(true);
  }
  const all = rows.map((r) => BigInt(r.id_ident));
  expect(new Set(all).size).toBe(all.length);
  expect(all.every((v) => v > 0n && v < 1000n)).toBe(true); // small numbers: the coordinator's own sequence
});

test("an insert on a worker node directly (its metadata is synced) draws identity and bigserial values from that worker's own range, starting at groupid << 48 (2^48 + 1 on worker1): not ordered with the coordinator's", async () => {
  const worker = postgres(cluster.nodeUrl("worker1"), { max: 1, onnotice: () => {} });
  const group = (await sql`select groupid from pg_dist_node where nodeport = ${cluster.workers[0]!.port}`)[0]!.groupid as number;
  const owner = crypto.randomUUID();
  const result = await worker<{ id_ident: string; id_serial: string }[]>`
    insert into seq_probe (user_id, n) values (${owner}, 1) returning id_ident::text, id_serial::text`;
  await worker.end();
  console.log(`citus: insert through worker1 (group ${group}): id_ident ${result[0]!.id_ident}, id_serial ${result[0]!.id_serial}`);
  expect(BigInt(result[0]!.id_ident)).toBe((BigInt(group) << 48n) + 1n);
  expect(BigInt(result[0]!.id_serial)).toBe((BigInt(group) << 48n) + 1n);
});

// ---------------------------------------------------------------------------------------------
// Shard move under load

test("citus_move_shard_placement of one shard (and its co-located quota shard) to the other worker while 4 clients run router claims: no row lost or duplicated, none claimed twice", async () => {
  const [shard, group] = [...byShard.entries()].sort((x, y) => y[1].length - x[1].length)[0]!;
  const movers = group.slice(0, 2);
  for (const o of movers) await upload(o, 2000);
  const from = shardPort.get(shard)!;
  const to = cluster.workers.find((w) => w.port !== from)!.port;
  const countAll = async () => (await sql`select count(*)::int as n from coins`)[0]!.n;
  const before = await countAll();
  const beforeQuota = (await sql`select count(*)::int as n from quota`)[0]!.n;
  // coins of these owners that earlier tests claimed for the same requesters: not this test's
  const claimedOf = async () => (await sql`select count(*)::int as n from coins
    where user_id = any(${movers}::uuid[]) and fetched_by = any(${owners.slice(0, 4)}::uuid[])`)[0]!.n;
  const claimedEarlier = await claimedOf();
  const got: string[] = [];
  const errors: string[] = [];
  let moving = true;
  const clients = Array.from({ length: 4 }, () => postgres(cluster.url, { max: 1, onnotice: () => {} }) as unknown as Sql);
  const load = Promise.all(clients.map(async (c, i) => {
    while (moving) {
      try {
        const rows = await claimOne(c, movers[i % 2]!, 2, owners[i]!);
        got.push(...rows.map((r) => `${movers[i % 2]}/${r.record_id}`));
        if (rows.length === 0) await Bun.sleep(10);
      } catch (e) {
        errors.push(String((e as Error).message));
        await Bun.sleep(20);
      }
    }
  }));
  await Bun.sleep(300);
  const claimedBefore = got.length;
  const started = Date.now();
  await sql`select citus_move_shard_placement(${Number(shard)}, '127.0.0.1', ${from}, '127.0.0.1', ${to}, shard_transfer_mode => 'force_logical')`;
  const moveMs = Date.now() - started;
  await Bun.sleep(500);
  const claimedDuringAndAfter = got.length - claimedBefore;
  moving = false;
  await load;
  await Promise.all(clients.map((c) => c.end()));
  console.log(`citus: shard move ${moveMs} ms; claims ${got.length} coins (${claimedDuringAndAfter} during/after the move), ${errors.length} errors${errors.length ? `: ${[...new Set(errors)].join(" | ")}` : ""}`);
  expect((await sql`select nodeport from citus_shards where shardid = ${Number(shard)}`)[0]!.nodeport).toBe(to);
  // the co-located quota shard went with it
  const quotaShard = await sql`select s.nodeport from citus_shards s where s.table_name = 'quota'::regclass
    and s.shardid = get_shard_id_for_distribution_column('quota', ${movers[0]!}::uuid)`;
  expect(quotaShard[0]!.nodeport).toBe(to);
  expect(await countAll()).toBe(before);
  expect((await sql`select count(*)::int as n from quota`)[0]!.n).toBe(beforeQuota);
  expect(new Set(got).size).toBe(got.length);
  expect(claimedDuringAndAfter).toBeGreaterThan(0);
  const claimedInDb = (await claimedOf()) - claimedEarlier;
  expect(claimedInDb).toBe(got.length); // every claim the clients saw committed, and nothing else was claimed
}, 180_000);

test("addWorker: a third worker joins (citus_add_node) and a shard group moves onto it (block_writes); coins and quota shards go together, no row lost", async () => {
  const third = await cluster.addWorker();
  const nodes = await sql`select nodeport from pg_dist_node where noderole = 'primary' and shouldhaveshards order by nodeport`;
  expect(nodes.map((n) => n.nodeport)).toContain(third.port);
  const before = (await sql`select count(*)::int as n from coins`)[0]!.n;
  const [shard] = [...byShard.entries()].find(([s]) => shardPort.get(s) !== undefined)!;
  const from = (await sql`select nodeport from citus_shards where shardid = ${Number(shard)}`)[0]!.nodeport;
  const started = Date.now();
  await sql`select citus_move_shard_placement(${Number(shard)}, '127.0.0.1', ${from}, '127.0.0.1', ${third.port}, shard_transfer_mode => 'block_writes')`;
  console.log(`citus: a shard group moved to the new worker (block_writes) in ${Date.now() - started} ms`);
  const onThird = await sql`select table_name::text as t from citus_shards where nodeport = ${third.port} order by 1`;
  expect(onThird.map((r) => r.t)).toEqual(["coins", "owner_anchor", "quota", "seq_probe"]);
  expect((await sql`select count(*)::int as n from coins`)[0]!.n).toBe(before);
  const owner = byShard.get(shard)![0]!;
  const { conn, trace } = await tracer();
  const t = await trace((c) => claimOne(c, owner, 1, owners[0]!));
  expect(t.routed).toBe(true);
  expect(t.issued[0]).toContain(`coins_${shard}`);
  await conn.end();
}, 120_000);
