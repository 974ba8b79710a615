import type { Db } from "../db/db.ts";
import type { Sql } from "../db/pool.ts";
import { anchorTable, citusInstalled } from "../db/distribution.ts";

const rot = (x: number, k: number) => (x << k) | (x >>> (32 - k));

/**
 * PostgreSQL's hash of a uuid (uuid_hash: hash_bytes, Bob Jenkins' lookup3, over the 16 bytes),
 * as a signed 32-bit integer: the value Citus places a row by. Checked against PostgreSQL's own
 * uuid_hash() in tests/routing.test.ts.
 */
export function uuidHash(uuid: string): number {
  const hex = uuid.replace(/-/g, "");
  const k = new Array<number>(16);
  for (let i = 0; i < 16; i++) k[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  const word = (i: number) => (k[i]! | (k[i + 1]! << 8) | (k[i + 2]! << 16) | (k[i + 3]! << 24)) | 0;
  let a = (0x9e3779b9 + 16 + 3923095) | 0;
  let b = a;
  let c = a;
  a = (a + word(0)) | 0;
  b = (b + word(4)) | 0;
  c = (c + word(8)) | 0;
  // mix(a, b, c)
  a = (a - c) | 0; a ^= rot(c, 4); c = (c + b) | 0;
  b = (b - a) | 0; b ^= rot(a, 6); a = (a + c) | 0;
  c = (c - b) | 0; c ^= rot(b, 8); b = (b + a) | 0;
  a = (a - c) | 0; a ^= rot(c, 16); c = (c + b) | 0;
  b = (b - a) | 0; b ^= rot(a, 19); a = (a + c) | 0;
  c = (c - b) | 0; c ^= rot(b, 4); b = (b + a) | 0;
  // the last 4 bytes
  a = (a + word(12)) | 0;
  // final(a, b, c)
  c ^= b; c = (c - rot(b, 14)) | 0;
  a ^= c; a = (a - rot(c, 11)) | 0;
  b ^= a; b = (b - rot(a, 25)) | 0;
  c ^= b; c = (c - rot(b, 16)) | 0;
  a ^= c; a = (a - rot(c, 4)) | 0;
  b ^= a; b = (b - rot(a, 14)) | 0;
  c ^= b; c = (c - rot(b, 24)) | 0;
  return c | 0;
}

/** The shards of the coin table, by hash range: a shard id names a shard group (the co-located tables share the ranges). */
export class ShardMap {
  constructor(private readonly shards: readonly { id: string; min: number; max: number }[]) {}

  get size(): number {
    return this.shards.length;
  }

  /** The shard group of an owner. */
  of(owner: string): string {
    const h = uuidHash(owner);
    let lo = 0;
    let hi = this.shards.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const s = this.shards[mid]!;
      if (h < s.min) hi = mid - 1;
      else if (h > s.max) lo = mid + 1;
      else return s.id;
    }
    throw new Error(`no shard of ${anchorTable} covers hash ${h}`);
  }
}

const routings = new WeakMap<Db, Routing>();

/** The one Routing of a Db (what the claim queue and the upload share). */
export function routingOf(db: Db): Routing {
  let routing = routings.get(db);
  if (!routing) routings.set(db, (routing = new Routing(db)));
  return routing;
}

/**
 * Whether claims must be routed (Citus, the coin table distributed), and then by which shard
 * map. Read from the database on first use and again after `forget()` (a routing error: the
 * shards were split since). null: plain PostgreSQL, one batch for any owners.
 */
export class Routing {
  private loading?: Promise<ShardMap | null>;
  /** undefined until loaded */
  current: ShardMap | null | undefined;

  constructor(private readonly db: Db) {}

  load(): Promise<ShardMap | null> {
    this.loading ??= this.read().then((map) => (this.current = map), (error) => {
      this.loading = undefined;
      throw error;
    });
    return this.loading;
  }

  /** True on Citus (claims routed); read from the database the first time only. */
  async routed(): Promise<boolean> {
    return (this.current !== undefined ? this.current : await this.load()) !== null;
  }

  forget(): void {
    this.loading = undefined;
    this.current = undefined;
  }

  private async read(): Promise<ShardMap | null> {
    const [installed] = await this.db.run(citusInstalled, { what: "routing" });
    if (!installed!.citus) return null;
    const rows = await this.db.run((sql) => sql<{ id: string; min: number; max: number }[]>`
      SELECT s.shardid::text AS id, s.shardminvalue::int AS min, s.shardmaxvalue::int AS max
      FROM pg_dist_shard s JOIN pg_dist_partition p USING (logicalrelid)
      WHERE s.logicalrelid = ${anchorTable}::regclass AND p.partmethod = 'h'
      ORDER BY s.shardminvalue::int`, { what: "routing" });
    // Citus without the coin table distributed: plain local tables on the coordinator
    return rows.length === 0 ? null : new ShardMap(rows);
  }
}

/**
 * A write that changes nothing on the owner's shard group. On Citus a statement that only reads —
 * a `SELECT … FOR UPDATE/SHARE` too — takes no lock on its shard's placement, so a shard move can
 * switch placements between a transaction's row lock and its next write: the lock stays on the old
 * placement while the write goes to the new one, and orders nothing. A write takes the placement's
 * metadata lock (share mode, until the commit), which a move waits for before it blocks writes
 * (tests/citus/pin.citus.ts). Hence it goes first in a transaction that locks a device row, then
 * writes (pinnedTransaction). (Citus prunes by `user_id`; `generation <> generation` matches no
 * row, so it locks and writes no row.)
 */
export const PIN_PLACEMENT = "UPDATE device SET generation = generation WHERE user_id = $1::uuid AND generation <> generation";

/**
 * `work` in one transaction (db.transaction) that opens with PIN_PLACEMENT on Citus — whether this
 * is Citus is asked before the transaction: asked inside, a first read of the shard map could wait
 * for a connection the transaction holds. On one PostgreSQL nothing is added: a row lock is the row's.
 */
export async function pinnedTransaction<T>(db: Db, userId: string, work: (tx: Sql) => Promise<T>,
  opts?: Parameters<Db["transaction"]>[1]): Promise<T> {
  const routed = await routingOf(db).routed();
  return db.transaction(async (tx) => {
    if (routed) await tx.unsafe(PIN_PLACEMENT, [userId] as never[], { prepare: db.prepare });
    return work(tx);
  }, opts);
}
