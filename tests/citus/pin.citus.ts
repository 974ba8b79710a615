import { afterAll, beforeAll, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { PIN_PLACEMENT } from "../../src/claims/routing.ts";
import { migrate } from "../../src/db/migrate.ts";
import type { Sql } from "../../src/db/pool.ts";
import { startCitusCluster, type CitusCluster } from "./cluster.ts";

// Why a transaction that locks a device row and then writes starts with PIN_PLACEMENT on Citus
// (src/claims/routing.ts): a read — SELECT … FOR SHARE too — takes no lock on its shard's
// placement, so a shard move switches placements under the open transaction (its row lock then
// stays on the old placement and orders nothing); a write takes the placement's metadata lock,
// which the move waits for before it blocks writes. Each move is held just before that point by
// Citus's isolation-test lock (as in commit.citus.ts), the transaction opened, the move let go.

let cluster: CitusCluster;
let sql: ReturnType<typeof postgres>;
const connect = () => postgres(cluster.url, { max: 1, onnotice: () => {} });

beforeAll(async () => {
  cluster = await startCitusCluster();
  sql = connect();
  await migrate(sql as unknown as Sql);
}, 60_000);

afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await cluster?.stop();
});

/** Moves the shard group of a new owner with a device row to the other worker while `tx` holds a transaction opened by `open`; returns whether the move finished while the transaction was still open. */
async function moveDuring(open: (tx: postgres.ReservedSql, owner: string) => Promise<void>) {
  const owner = randomUUID();
  await sql`INSERT INTO device (user_id, device_id) VALUES (${owner}::uuid, 1)`;
  const [before] = await sql<[{ generation: number }]>`SELECT generation FROM device WHERE user_id = ${owner}::uuid`;
  const [shard] = await sql<[{ shardid: string; nodeport: number }]>`SELECT shardid::text, nodeport FROM citus_shards
    WHERE table_name = 'device'::regclass AND shardid = get_shard_id_for_distribution_column('device', ${owner}::uuid)`;
  const to = cluster.workers.find((w) => w.port !== shard.nodeport)!.port;
  const [locker, mover, holder] = [connect(), connect(), connect()];
  try {
    await locker`SELECT pg_advisory_lock(44000, 55152)`;
    await mover`SET citus.running_under_citus_test_suite = on`;
    const [{ pid }] = await mover<[{ pid: number }]>`SELECT pg_backend_pid() AS pid`;
    let finished = false;
    const move = mover`SELECT citus_move_shard_placement(${Number(shard.shardid)}, '127.0.0.1', ${shard.nodeport}, '127.0.0.1', ${to}, shard_transfer_mode => 'force_logical')`
      .then(() => (finished = true));
    move.catch(() => {});
    for (let i = 0; (await sql`SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND objid = 55152 AND NOT granted`)[0]!.n === 0; i++) {
      if (i > 1200) throw new Error("the move never reached the point before it blocks writes");
      await Bun.sleep(50);
    }
    const tx = await holder.reserve();
    await tx`BEGIN`;
    await open(tx, owner);
    await locker`SELECT pg_advisory_unlock(44000, 55152)`;
    // the move's last steps take a second or two here when nothing holds it
    for (let i = 0; i < 100 && !finished; i++) await Bun.sleep(100);
    const finishedWhileOpen = finished;
    // (not merely slow: waiting for a lock — the one the transaction's write holds)
    const [{ n: waits }] = await sql<[{ n: number }]>`SELECT count(*)::int AS n FROM pg_locks WHERE pid = ${pid} AND NOT granted`;
    await tx`COMMIT`;
    tx.release();
    await move;
    const [after] = await sql<[{ generation: number }]>`SELECT generation FROM device WHERE user_id = ${owner}::uuid`;
    const [placed] = await sql<[{ nodeport: number }]>`SELECT nodeport FROM citus_shards WHERE shardid = ${Number(shard.shardid)}`;
    return { finishedWhileOpen, moverWaiting: waits > 0, moved: placed.nodeport === to, generationKept: after.generation === before.generation };
  } finally {
    await Promise.all([locker.end(), mover.end(), holder.end()]);
  }
}

test("a transaction that opens with PIN_PLACEMENT and then locks the device row holds a shard move of its group off until it commits; the row is unchanged", async () => {
  const { finishedWhileOpen, moverWaiting, moved, generationKept } = await moveDuring(async (tx, owner) => {
    expect((await tx.unsafe(PIN_PLACEMENT, [owner])).count).toBe(0);
    await tx`SELECT generation FROM device WHERE user_id = ${owner}::uuid AND device_id = 1 FOR SHARE`;
  });
  expect(finishedWhileOpen).toBe(false);
  expect(moverWaiting).toBe(true);
  expect(moved).toBe(true);
  expect(generationKept).toBe(true);
}, 120_000);

test("without it, a transaction holding the device row FOR SHARE does not hold the move off: the move finishes while it is open (why the pin is there)", async () => {
  const { finishedWhileOpen, moved } = await moveDuring(async (tx, owner) => {
    await tx`SELECT generation FROM device WHERE user_id = ${owner}::uuid AND device_id = 1 FOR SHARE`;
  });
  expect(finishedWhileOpen).toBe(true);
  expect(moved).toBe(true);
}, 120_000);
