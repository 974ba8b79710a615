import { expect, test } from "bun:test";
import { randomUUID } from "node:crypto";
import { ensureParams } from "../src/claims/ensure.ts";
import { ShardMap, uuidHash } from "../src/claims/routing.ts";
import { deviceOne, type ClaimItem } from "../src/claims/batch.ts";
import { useTestDatabase } from "./helpers/db.ts";

const db = useTestDatabase();

test("uuidHash is PostgreSQL's uuid_hash (the value Citus places a row by) for 5,000 random UUIDs and the edge values", async () => {
  const uuids = [...Array.from({ length: 5000 }, () => randomUUID()), "00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"];
  const rows = await db.sql<{ u: string; h: number }[]>`SELECT u::text, uuid_hash(u) AS h FROM unnest(${uuids}::uuid[]) AS u`;
  expect(rows.length).toBe(uuids.length);
  for (const { u, h } of rows) expect(uuidHash(u)).toBe(h);
});

test("ShardMap finds the shard whose hash range holds an owner's hash, at both ends of every range", () => {
  // 4 shards over the int32 range, as Citus cuts it
  const step = 2 ** 32 / 4;
  const shards = Array.from({ length: 4 }, (_, i) => ({ id: String(100 + i), min: -(2 ** 31) + i * step, max: -(2 ** 31) + (i + 1) * step - 1 }));
  const map = new ShardMap(shards);
  for (let n = 0; n < 2000; n++) {
    const u = randomUUID();
    const h = uuidHash(u);
    expect(map.of(u)).toBe(shards.find((s) => h >= s.min && h <= s.max)!.id);
  }
  expect(() => new ShardMap(shards.slice(1)).of(Array.from({ length: 2000 }, () => randomUUID()).find((u) => uuidHash(u) < shards[1]!.min)!))
    .toThrow(/no shard/);
});

const item = (target: string, pair: string | null, ref: string | null): ClaimItem => ({
  target, requester: randomUUID(), want: [0, 0, 1], fallback: false, lastResort: false, final: true, pair, pairPrev: null, ref, refPrev: null, body: ref && randomUUID(), ...deviceOne,
});

test("the rows a routed claim updates are created in key order, padded to a power of two by repeating the last (one statement text per size)", async () => {
  const owner = randomUUID();
  const pairs = Array.from({ length: 5 }, () => randomUUID());
  const refs = [randomUUID(), randomUUID(), randomUUID()];
  const items = pairs.map((p, i) => item(owner, p, refs[i] ?? null));
  const e = ensureParams(items, true)!;
  const sorted: string[] = [...pairs].sort();
  const sortedRefs: string[] = [...refs].sort();
  // 5 quota rows padded to 8, 3 replay rows padded to 4; (target, key) pairs
  expect(e.params).toEqual([...sorted.flatMap((p) => [owner, p]), owner, sorted[4]!, owner, sorted[4]!, owner, sorted[4]!,
    ...sortedRefs.flatMap((r) => [owner, r]), owner, sortedRefs[2]!]);
  expect(ensureParams(items.map((i) => ({ ...i, ref: null, pair: null })), true)).toBeNull();
  // run on plain PostgreSQL too: the rows exist once, whatever the padding and however often
  await db.sql.unsafe(e.text, e.params as never[]);
  await db.sql.unsafe(e.text, e.params as never[]);
  expect((await db.sql`SELECT count(*)::int AS n FROM claim_quota WHERE target = ${owner}::uuid`)[0]!.n).toBe(5);
  expect((await db.sql`SELECT count(*)::int AS n FROM claim_replay WHERE target = ${owner}::uuid AND short IS NULL`)[0]!.n).toBe(3);
});
