import { beforeEach, expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { deviceOne, type ClaimItem, type ClaimRow } from "../src/claims/batch.ts";
import { claimRows } from "./helpers/claims.ts";
import { claimKeys } from "../src/claims/keys.ts";
import { ClaimQueue, type ClaimQueueOptions, type ReturnReason } from "../src/claims/queue.ts";
import { returnable, returnCoins } from "../src/claims/return.ts";
import type { PendingQuery, Row } from "postgres";
import { Db, type RunOptions } from "../src/db/db.ts";
import type { Sql } from "../src/db/pool.ts";
import { ConnectionGate } from "../src/db/gate.ts";
import { UnavailableError } from "../src/errors.ts";
import { testHashSecrets } from "./helpers/app.ts";
import { makeCoin, makeCoins } from "./helpers/coins.ts";
import { lockWaiters, resetClaims, useTestDatabase } from "./helpers/db.ts";
import { waitFor } from "./helpers/wait.ts";

const db = useTestDatabase();
beforeEach(() => resetClaims(db.sql));

const QUOTA = 100;
const keys = claimKeys(testHashSecrets.current);

/**
 * The real database, with a fault injected into what the claim queue sees of its statements: the
 * statement runs and commits on PostgreSQL as always, then its answer is given up (a late
 * finish), or a request's status row is lost on the way.
 */
class FaultyDb extends Db {
  fault: "late" | { dropStatusOf: number } | null = null;
  /** Runs before a late finish is reported. */
  beforeLate?: () => Promise<void>;

  constructor() {
    super(db.sql, new ConnectionGate(10, 1000), { waitMs: 10_000, prepare: true });
  }

  override run<T extends readonly (object | undefined)[] = Row[]>(make: (sql: Sql) => PendingQuery<T>, opts: RunOptions<T> = {}): Promise<T> {
    const fault = this.fault;
    if (opts.what !== "claim" || fault === null) return super.run(make, opts);
    return super.run(make, { ...opts, late: undefined }).then(async (rows) => {
      if (fault === "late") {
        await this.beforeLate?.();
        opts.late?.(rows); // committed after its claims were answered 503
        throw new UnavailableError("The database did not answer in time; retry shortly");
      }
      return (rows as unknown as ClaimRow[]).filter((r) => !(r.k === "m" && r.idx === fault.dropStatusOf)) as unknown as T;
    });
  }
}

interface Returned {
  coins: number;
  refunded: number;
  why: ReturnReason;
  failed?: unknown;
}

function queueOn(faulty: FaultyDb, options: Partial<ClaimQueueOptions> = {}) {
  const returns: Returned[] = [];
  const queue = new ClaimQueue(faulty, { quota: QUOTA, maxInFlight: 2, maxWaitMs: 30_000, returned: (r) => returns.push(r), ...options });
  return { queue, returns };
}

function item(target: string, requester: string, want: [number, number, number], extra: Partial<ClaimItem> = {}): ClaimItem {
  const [pair, pairPrev] = keys.pair(requester, target);
  return { target, requester, want, fallback: false, lastResort: false, final: true, pair, pairPrev, ref: null, refPrev: null, body: null, ...deviceOne, ...extra };
}

async function stock(owner: string, bronze: number, lastResort = false): Promise<void> {
  const coins = makeCoins(bronze, "BRONZE");
  if (coins.length) {
    await db.sql`INSERT INTO coin_inventory (user_id, key_id, coin_category, public_key_blob, signature_blob)
      SELECT ${owner}::uuid, k, 'BRONZE', '\\x01', '\\x02' FROM unnest(${coins.map((c) => c.key_id)}::text[]) AS k`;
  }
  if (lastResort) {
    await db.sql`INSERT INTO last_resort_coin (user_id, coin_category, key_id, public_key_blob, signature_blob)
      VALUES (${owner}::uuid, 'BRONZE', ${makeCoin().key_id}, '\\x03', '\\x04')`;
  }
}

const claimedBy = async (requester: string) =>
  (await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM coin_inventory WHERE fetched_by = ${requester}::uuid`)[0]!.n;
const available = async (owner: string) =>
  (await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM coin_inventory WHERE user_id = ${owner}::uuid AND fetched_at IS NULL`)[0]!.n;
const quotaSpent = async (requester: string, owner: string) => (await db.sql<{ n: number }[]>`
  SELECT coalesce(sum(c), 0)::int AS n FROM claim_quota q, unnest(q.counts) c WHERE q.pair = ${keys.pair(requester, owner)[0]}::uuid`)[0]!.n;

/**
 * Creates the quota row of (requester, owner) and holds it FOR UPDATE in a transaction of its
 * own: a claim statement of that pair waits for it (after taking its snapshot) until `release()`.
 */
async function lockQuotaRow(owner: string, requester: string) {
  const pair = keys.pair(requester, owner)[0];
  await db.sql`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner}::uuid, ${pair}::uuid, '{}', '{}')`;
  const conn = await db.sql.reserve();
  await conn`BEGIN`;
  await conn`SELECT 1 FROM claim_quota WHERE target = ${owner}::uuid AND pair = ${pair}::uuid FOR UPDATE`;
  let held = true;
  return {
    async release() {
      if (!held) return;
      held = false;
      await conn`COMMIT`;
      conn.release();
    },
  };
}

test("a claim whose statement commits after its 503 gives back its coins and all the quota they cost, its last-resort coin included", async () => {
  const [owner, requester] = [randomUUID(), randomUUID()];
  await stock(owner, 1, true);
  const faulty = new FaultyDb();
  const { queue, returns } = queueOn(faulty);
  faulty.fault = "late";
  // asks for 3 BRONZE: gets the 1 coin in stock and the last-resort coin, 2 quota coins spent
  await expect(queue.claim(item(owner, requester, [0, 0, 3], { lastResort: true }))).rejects.toBeInstanceOf(UnavailableError);
  await waitFor(() => returns.length === 1, "the return");
  expect(returns).toEqual([{ coins: 1, refunded: 2, why: "late" }]);
  expect(await claimedBy(requester)).toBe(0);
  expect(await available(owner)).toBe(1);
  expect(await quotaSpent(requester, owner)).toBe(0);
});

test("a return that runs again gives back nothing more: the last-resort refund is counted once", async () => {
  const [owner, requester] = [randomUUID(), randomUUID()];
  await stock(owner, 2, true);
  const items = [item(owner, requester, [0, 0, 4], { lastResort: true })];
  const rows = await claimRows(db.sql, items, QUOTA);
  expect(await quotaSpent(requester, owner)).toBe(3);
  const back = returnable(items, rows, new Set([0]));
  const faulty = new FaultyDb();
  expect(await returnCoins(faulty, back)).toEqual({ returned: 2, refunded: 3 });
  expect(await returnCoins(faulty, back)).toEqual({ returned: 0, refunded: 0 });
  expect(await quotaSpent(requester, owner)).toBe(0);
  expect(await available(owner)).toBe(2);
});

test("a return never frees a coin a later claim took: it matches the claim's own time", async () => {
  const [owner, first, second] = [randomUUID(), randomUUID(), randomUUID()];
  await stock(owner, 1);
  const items = [item(owner, first, [0, 0, 1])];
  const back = returnable(items, await claimRows(db.sql, items, QUOTA), new Set([0]));
  expect((await returnCoins(new FaultyDb(), back)).returned).toBe(1);
  // the same coin, claimed again (by the same requester and by another), is not freed by a rerun
  const again = [item(owner, first, [0, 0, 1])];
  await claimRows(db.sql, again, QUOTA);
  expect(await returnCoins(new FaultyDb(), back)).toEqual({ returned: 0, refunded: 0 });
  expect(await claimedBy(first)).toBe(1);
  expect(second).not.toBe(first);
});

test("a coin claimed and given back while a claim waited at the database is served by that claim and charged once: the claim runs again instead of counting a coin it could not take", async () => {
  const [owner, waiter, other] = [randomUUID(), randomUUID(), randomUUID()];
  await stock(owner, 2);
  const [first] = await db.sql<{ key_id: string }[]>`SELECT key_id FROM coin_inventory WHERE user_id = ${owner}::uuid ORDER BY record_id LIMIT 1`;
  const reruns: string[] = [];
  const { queue } = queueOn(new FaultyDb(), { rerun: (why) => reruns.push(why) });
  // the waiter's statement takes its snapshot, then waits for its pair's quota row
  const held = await lockQuotaRow(owner, waiter);
  let waiting: Promise<unknown> | undefined;
  try {
    waiting = queue.claim(item(owner, waiter, [0, 0, 1]));
    await waitFor(async () => (await lockWaiters(db)) === 1, "the claim waiting at the database");
    // meanwhile the oldest coin is claimed, and given back (its client left)
    const items = [item(owner, other, [0, 0, 1])];
    const rows = await claimRows(db.sql, items, QUOTA);
    expect(rows.filter((r) => r.k === "c").map((r) => r.key_id)).toEqual([first!.key_id]);
    expect((await returnCoins(new FaultyDb(), returnable(items, rows, new Set([0])))).returned).toBe(1);
  } finally {
    await held.release();
  }
  // the waiter's statement found that coin in stock again, locked its newest version, and could
  // not take it under its older snapshot: it ran again, and serves it
  const outcome = await waiting!;
  expect(reruns).toEqual(["coin_moved"]);
  expect(outcome).toMatchObject({ status: "ok", short: [0, 0, 0], remaining: QUOTA - 1 });
  expect((outcome as { coins: { key_id: string }[] }).coins.map((c) => c.key_id)).toEqual([first!.key_id]);
  expect(await claimedBy(waiter)).toBe(1);
  expect(await quotaSpent(waiter, owner)).toBe(1);
  const [taken] = await db.sql<{ fetched_by: string }[]>`SELECT fetched_by::text FROM coin_inventory WHERE key_id = ${first!.key_id}`;
  expect(taken!.fetched_by).toBe(waiter);
  expect(await available(owner)).toBe(1);
});

test("a claim whose deadline passes while its batch waits at the database is answered 503 alone: the statement serves the rest of its batch, and gives that claim's coin and quota back", async () => {
  const [owner, first, near, far] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
  await stock(owner, 3);
  const faulty = new FaultyDb();
  // one statement at a time; each claim waits at most 2 s in all
  const { queue, returns } = queueOn(faulty, { maxInFlight: 1, maxWaitMs: 2_000 });
  await db.sql`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner}::uuid, ${keys.pair(far, owner)[0]}::uuid, '{}', '{}')`;
  const [firstLock, nearLock] = [await lockQuotaRow(owner, first), await lockQuotaRow(owner, near)];
  try {
    // the first claim's statement waits; the two others queue behind it, a second apart
    const firstClaim = queue.claim(item(owner, first, [0, 0, 1]));
    await waitFor(async () => (await lockWaiters(db)) === 1, "the first statement waiting");
    const nearQueued = performance.now();
    const nearClaim = queue.claim(item(owner, near, [0, 0, 1]));
    const nearAnswer = nearClaim.then(() => "served", (error) => error);
    await Bun.sleep(1_000);
    const farClaim = queue.claim(item(owner, far, [0, 0, 1]));
    // they leave together; their statement waits for the near claim's quota row past its deadline
    await firstLock.release();
    expect((await firstClaim).status).toBe("ok");
    await waitFor(async () => (await lockWaiters(db)) === 1, "the batch of two waiting");
    expect(await nearAnswer).toBeInstanceOf(UnavailableError);
    expect(performance.now() - nearQueued).toBeLessThan(2_000 + 500);
    await nearLock.release();
    const served = await farClaim;
    expect(served).toMatchObject({ status: "ok", short: [0, 0, 0] });
    expect((served as { coins: unknown[] }).coins).toHaveLength(1);
  } finally {
    await Promise.all([firstLock.release(), nearLock.release()]);
  }
  await waitFor(() => returns.length === 1, "the near claim's coin given back");
  expect(returns).toEqual([{ coins: 1, refunded: 1, why: "late" }]);
  expect(await claimedBy(near)).toBe(0);
  expect(await quotaSpent(near, owner)).toBe(0);
  expect(await claimedBy(far)).toBe(1);
  expect(await quotaSpent(far, owner)).toBe(1);
  expect(await available(owner)).toBe(1);
});

test("a missing status row answers that claim with an error and gives its coins back; the others of its batch are served", async () => {
  const [owner, a, b, c] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
  await stock(owner, 6);
  const faulty = new FaultyDb();
  const { queue, returns } = queueOn(faulty);
  faulty.fault = { dropStatusOf: 1 };
  // three claims of one tick leave in one statement: indexes 0, 1, 2
  const answers = await Promise.allSettled([a, b, c].map((r) => queue.claim(item(owner, r, [0, 0, 2]))));
  expect(answers.map((x) => x.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
  expect((answers[1] as PromiseRejectedResult).reason).toMatchObject({ code: "ClaimStatusMissing" });
  await waitFor(() => returns.length === 1, "the return");
  expect(returns).toEqual([{ coins: 2, refunded: 2, why: "failed" }]);
  expect([await claimedBy(a), await claimedBy(b), await claimedBy(c)]).toEqual([2, 0, 2]);
  expect(await quotaSpent(b, owner)).toBe(0);
  expect(await available(owner)).toBe(2);
});

test("a failure after the statement answers every claim of the batch with it and gives all their coins back", async () => {
  const [owner, a, b] = [randomUUID(), randomUUID(), randomUUID()];
  await stock(owner, 4, true);
  const faulty = new FaultyDb();
  const { queue, returns } = queueOn(faulty, { sent: () => { throw new Error("a defect past the statement"); } });
  const answers = await Promise.allSettled([queue.claim(item(owner, a, [0, 0, 2])), queue.claim(item(owner, b, [0, 0, 3], { lastResort: true }))]);
  expect(answers.map((x) => x.status)).toEqual(["rejected", "rejected"]);
  await waitFor(() => returns.length === 1, "the return");
  // a's 2 coins, b's 2 coins and b's last-resort coin (quota only)
  expect(returns).toEqual([{ coins: 4, refunded: 5, why: "failed" }]);
  expect(await available(owner)).toBe(4);
  expect([await quotaSpent(a, owner), await quotaSpent(b, owner)]).toEqual([0, 0]);
});

test("a keyed claim keeps its coins on every path: they are the answer its retry receives", async () => {
  const [owner, requester] = [randomUUID(), randomUUID()];
  await stock(owner, 2);
  const [ref] = keys.ref(requester, randomUUID());
  // a keyed claim of a pair without a quota row first creates it
  await db.sql`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner}::uuid, ${keys.pair(requester, owner)[0]}::uuid, '{}', '{}')`;
  const faulty = new FaultyDb();
  const { queue, returns } = queueOn(faulty);
  faulty.fault = "late";
  await expect(queue.claim(item(owner, requester, [0, 0, 2], { ref, body: keys.body("{}") }))).rejects.toBeInstanceOf(UnavailableError);
  faulty.fault = null;
  const retry = await queue.claim(item(owner, requester, [0, 0, 2], { ref, body: keys.body("{}") }));
  expect(retry.status).toBe("replay");
  expect(retry.status === "replay" && retry.coins.length).toBe(2);
  expect(returns).toEqual([]);
  expect(await claimedBy(requester)).toBe(2);
});

test("settle waits for a return in progress, up to its bound", async () => {
  const [owner, requester] = [randomUUID(), randomUUID()];
  await stock(owner, 1);
  const faulty = new FaultyDb();
  const { queue, returns } = queueOn(faulty);
  const holder = await db.sql.reserve();
  try {
    faulty.fault = "late";
    faulty.beforeLate = async () => {
      // the claimed coin's row is locked: the return waits for it
      await holder`BEGIN`;
      await holder`SELECT 1 FROM coin_inventory WHERE user_id = ${owner}::uuid FOR UPDATE`;
    };
    await expect(queue.claim(item(owner, requester, [0, 0, 1]))).rejects.toBeInstanceOf(UnavailableError);
    await waitFor(async () => (await lockWaiters(db)) === 1, "the return waiting for the lock");
    expect(await queue.settle(300)).toBe(false);
    expect(returns).toEqual([]);
    await holder`ROLLBACK`;
    expect(await queue.settle(10_000)).toBe(true);
    expect(returns).toEqual([{ coins: 1, refunded: 1, why: "late" }]);
  } finally {
    holder.release();
  }
});

test("settle waits for a claim statement in flight to finish: it lets the statement's answer be read", async () => {
  const [owner, requester] = [randomUUID(), randomUUID()];
  await stock(owner, 1);
  const pair = keys.pair(requester, owner)[0];
  await db.sql`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner}::uuid, ${pair}::uuid, '{}', '{}')`;
  const queue = new ClaimQueue(new Db(db.sql, new ConnectionGate(10, 1000), { waitMs: 10_000, prepare: true }), { quota: QUOTA, maxInFlight: 2, maxWaitMs: 30_000 });
  const holder = await db.sql.reserve();
  try {
    // the pair's quota row is locked: the claim statement waits for it (holding a gate slot)
    await holder`BEGIN`;
    await holder`SELECT 1 FROM claim_quota WHERE target = ${owner}::uuid AND pair = ${pair}::uuid FOR UPDATE`;
    const claim = queue.claim(item(owner, requester, [0, 0, 1])).then((o) => o.status, (e) => String(e));
    await waitFor(async () => (await lockWaiters(db)) === 1, "the claim waiting for the lock");
    // the lock goes 200 ms from now: the claim then commits at once
    setTimeout(() => void holder`ROLLBACK`.execute(), 200); // (a postgres.js query runs once executed or awaited)
    // (a spin on resolved promises would starve the socket reads: settle would give up at its bound)
    expect(await queue.settle(5000)).toBe(true);
    expect(await claim).toBe("ok");
  } finally {
    holder.release();
  }
});

test("a keyed retry that meets its first attempt still committing (a late finish) gets that attempt's coins, not a 429", async () => {
  const [owner, requester] = [randomUUID(), randomUUID()];
  await stock(owner, 3);
  const pair = keys.pair(requester, owner)[0];
  // the pair has a quota row (as after any earlier claim); quota 2: the first attempt spends it all
  await db.sql`INSERT INTO claim_quota (target, pair, hours, counts) VALUES (${owner}::uuid, ${pair}::uuid, '{}', '{}')`;
  const [ref, refPrev] = keys.ref(requester, randomUUID());
  const keyed = () => item(owner, requester, [0, 0, 2], { ref, refPrev, body: keys.body("{}") });
  const queue = new ClaimQueue(new Db(db.sql, new ConnectionGate(10, 1000), { waitMs: 10_000, prepare: true }), { quota: 2, maxInFlight: 2, maxWaitMs: 30_000 });
  const first = await db.sql.reserve();
  try {
    // the first attempt's statement has run but not yet committed (its answer, a 503, already went out)
    await first`BEGIN`;
    const rows = await claimRows(first as never, [keyed()], 2);
    expect(rows.filter((r) => r.k === "c").length).toBe(2);
    // the client retries with its key
    const retry = queue.claim(keyed()).then((o) => o, (e) => ({ status: String(e) }));
    await waitFor(async () => (await lockWaiters(db)) === 1, "the retry waiting");
    await first`COMMIT`;
    const outcome = await retry;
    // the coins the first attempt claimed are recorded under the key ...
    expect((await db.sql`SELECT 1 FROM coin_inventory WHERE fetched_by = ${requester}::uuid AND claim_ref = ${ref}::uuid`).length).toBe(2);
    // ... and the retry must receive them (README: "also after the pair quota ran out")
    expect(outcome.status).toBe("replay");
  } finally {
    first.release();
  }
});
