import { arrayLiteral } from "../db/arrays.ts";
import type { Sql } from "../db/pool.ts";
import { claimColumns, claimStatementText } from "./statement.ts";
import type { ServedCoin } from "../coins/model.ts";
import { tiers, type TierCounts } from "../coins/tiers.ts";

/** One claim as the statement sees it. */
export interface ClaimItem {
  target: string;
  requester: string;
  want: TierCounts;
  fallback: boolean;
  /** Serve a tier's last-resort coin when it is still short after fallback. */
  lastResort: boolean;
  /** The last attempt: a keyed claim records its answer even when it found nothing. */
  final: boolean;
  /** Keyed hash of (requester, target) under the current and the previous secret; quota on only. */
  pair: string | null;
  pairPrev: string | null;
  /** Keyed hash of (requester, Idempotency-Key) under the current and previous secret, and of the body. */
  ref: string | null;
  refPrev: string | null;
  body: string | null;
  /**
   * The devices claimed from, want applying to each: null for every device of the target
   * (multi), a list for those of them (multi), or, without `multi`, the one device claimed from
   * whether or not it has a row (device 1: the answer is the single-device one).
   */
  devices: number[] | null;
  multi: boolean;
  /** Multi: the device to leave out (the caller's own, when it claims from itself); 0 for none. */
  skip: number;
}

/** A claim of device 1 alone, answered as before devices existed. */
export const deviceOne = { devices: [1], multi: false, skip: 0 } as const satisfies Pick<ClaimItem, "devices" | "multi" | "skip">;

/** Multi: one device's part of a claim's answer. */
export interface DeviceAnswer {
  device_id: number;
  ed25519_b64?: string;
  ml_dsa_b64?: string;
  ml_dsa?: "ML-DSA-44" | "ML-DSA-65" | "ML-DSA-87";
  coins: ServedCoin[];
  short: TierCounts;
}

export type ClaimOutcome =
  | { status: "ok"; coins: ServedCoin[]; short: TierCounts; remaining: number; devices?: DeviceAnswer[] }
  | { status: "replay"; coins: ServedCoin[]; short: TierCounts; devices?: DeviceAnswer[] }
  /** The Idempotency-Key was used before with another body. */
  | { status: "mismatch" }
  /** The pair quota is spent; it frees a coin in `retryAfterS` seconds. */
  | { status: "quota"; retryAfterS: number }
  /** Lost a race this statement cannot settle (a pair or key taken concurrently): run it again. */
  | { status: "retry" };

/** What a claim is finally answered with: the queue runs a "retry" again itself. */
export type SettledOutcome = Exclude<ClaimOutcome, { status: "retry" }>;

export interface ClaimRow {
  /** c: a coin; m: a request's status; n: the statement's (owners notified, its time); w: an owner to notify (routed) */
  k: "c" | "m" | "n" | "w";
  idx: number;
  record_id: string | null;
  key_id: string;
  coin_category: ServedCoin["coin_category"];
  public_key_b64: string;
  signature_b64: string;
  lr: boolean;
  status: "ok" | "replay" | "mismatch" | "quota" | "retry";
  short: TierCounts;
  remaining: number;
  retry_after: number | null;
  /** 'n': the fetched_at of the coins the statement took (its now() when none), as text: microseconds intact. */
  at: string | null;
  /** 'c': the coin's device. */
  dev: number | null;
  /** 'm', multi: per device claimed from, its identity keys and shortfall, in device order. */
  devices: (Omit<DeviceAnswer, "coins">)[] | null;
}

/** Statement texts by [lean][routed][quota] (statement.ts). */
const texts = [false, true].map((lean) => [false, true].map((routed) => [false, true].map((quota) => claimStatementText(quota, routed, lean))));

/** A claim the lean statement serves: its tiers from one device, no fallback, last resort or idempotency key. */
export const isLean = (item: ClaimItem) => !item.fallback && !item.lastResort && item.ref === null && item.refPrev === null && !item.multi;
const rank = Object.fromEntries(tiers.map((t, i) => [t, i])) as Record<ServedCoin["coin_category"], number>;

/** Ordinary coins by tier (GOLD first), oldest first within a tier; then last-resort coins by tier. */
function order(a: ClaimRow, b: ClaimRow): number {
  if (a.lr !== b.lr) return a.lr ? 1 : -1;
  if (a.coin_category !== b.coin_category) return rank[a.coin_category] - rank[b.coin_category];
  return Number(BigInt(a.record_id!) - BigInt(b.record_id!));
}

const served = ({ key_id, coin_category, public_key_b64, signature_b64, lr }: ClaimRow): ServedCoin =>
  lr ? { key_id, coin_category, public_key_b64, signature_b64, last_resort: true } : { key_id, coin_category, public_key_b64, signature_b64 };

/**
 * The claim statement for `items` (see statement.ts), lean when every item is; `outcomesOf` reads its rows. `quota` is the
 * pair quota, or null when it is off; `prepare: false` behind a transaction-mode pooler; `routed`
 * on Citus (the items' owners are then one shard's, and ensure.ts ran first); `full`: the whole
 * statement even where the lean one would serve (tests compare the two).
 */
export function claimQuery(sql: Sql, items: ClaimItem[], quota: number | null, prepare = true, routed = false, full = false) {
  const columns: (string | number | null)[][] = claimColumns.map(() => []);
  const bool = (b: boolean) => (b ? "t" : "f");
  items.forEach((item, idx) => {
    const values = [idx, item.target, item.requester, item.pair, item.pairPrev, item.want[0], item.want[1], item.want[2],
      bool(item.fallback), bool(item.lastResort), bool(item.final), item.ref, item.refPrev, item.body,
      bool(item.multi), item.devices === null ? null : `{${item.devices.join(",")}}`, item.skip];
    values.forEach((v, i) => columns[i]!.push(v));
  });
  const unique = (keys: (string | null)[]) => arrayLiteral([...new Set(keys.filter((k): k is string => k !== null))].sort());
  const lean = !full && items.every(isLean);
  const owners = routed ? [unique(items.map((i) => i.target))] : [];
  const refs = lean ? [] : [unique(items.flatMap((i) => [i.ref, i.refPrev]))];
  // every array as its literal: the statement names each parameter's type
  const arrays = [...columns.map(arrayLiteral), ...owners, ...refs];
  const params = quota === null ? arrays : [...arrays, quota, unique(items.flatMap((i) => [i.pair, i.pairPrev]))];
  const text = texts[Number(lean)]![Number(routed)]![Number(quota !== null)]!;
  return sql.unsafe<ClaimRow[]>(text, params as never[], { prepare });
}

/** Routed: the watched owners whose coins the statement took (to notify once it committed). */
export const watchedOf = (rows: readonly ClaimRow[]): string[] => rows.filter((r) => r.k === "w").map((r) => r.key_id);

/** Multi: the answer per device (each device's coins in the order of `sorted`). */
function byDevice(m: ClaimRow, sorted: ClaimRow[]): { devices?: DeviceAnswer[] } {
  if (m.devices === null) return {};
  return {
    devices: m.devices.map(({ short, ...device }) => ({
      ...device, coins: sorted.filter((c) => c.dev === device.device_id).map(served), short,
    })),
  };
}

/**
 * Each request's outcome, in request order; undefined where the statement returned no status row
 * for it (a defect: the queue answers it with an error and gives its coins back).
 */
export function outcomesOf(rows: readonly ClaimRow[], n: number): (ClaimOutcome | undefined)[] {
  const coins: ClaimRow[][] = Array.from({ length: n }, () => []);
  const meta: (ClaimRow | undefined)[] = new Array(n).fill(undefined);
  for (const row of rows) {
    if ((row.k !== "c" && row.k !== "m") || row.idx < 0 || row.idx >= n) continue;
    if (row.k === "c") coins[row.idx]!.push(row);
    else if (row.k === "m") meta[row.idx] = row;
  }
  return meta.map((m, idx): ClaimOutcome | undefined => {
    if (m === undefined) return undefined;
    const mine = () => coins[idx]!.sort(order);
    switch (m.status) {
      case "ok":
        return { status: "ok", coins: mine().map(served), short: m.short, remaining: m.remaining, ...byDevice(m, mine()) };
      case "replay":
        return { status: "replay", coins: mine().map(served), short: m.short, ...byDevice(m, mine()) };
      case "quota":
        return { status: "quota", retryAfterS: m.retry_after ?? 1 };
      default:
        return { status: m.status };
    }
  });
}
