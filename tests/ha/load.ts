import { randomUUID } from "node:crypto";
import { postKeyed as post } from "../helpers/http.ts";
import type { ServerProcess } from "../helpers/server.ts";

/** One HTTP attempt of a keyed claim. */
export interface Attempt {
  key: string;
  server: number;
  start: number;
  end: number;
  /** 0: a network error (no HTTP answer). */
  status: number;
  /** The claim names `devices: "all"` (else it claims device 1's coins, as a claim without `devices` does). */
  allDevices: boolean;
}

export interface KeyedLoad {
  attempts: Attempt[];
  /** Per Idempotency-Key, the key_ids of the coins its 200 carried, whichever the answer's shape (a key_id is unique per user across its devices). */
  received: Map<string, string[]>;
  /** Per key_id received, the device the answer said it was claimed of (device 1 for an answer without `devices`). */
  deviceOf: Map<string, number>;
  /** Keys given up after the load stopped (their coins, if any, would be lost). */
  gaveUp: string[];
  /** Unexpected answers (not 200, 503 or a network error), and 200s whose body is not what the claim asked for. */
  odd: string[];
  /** Stops starting new claims; resolves once every client has settled its last one. */
  stop(): Promise<void>;
}

export interface KeyedLoadOptions {
  /** Clients with an odd index claim `devices: "all"` (1 BRONZE coin per device, fallback none); the others as before. */
  allDevices?: boolean;
  /**
   * Devices every all-devices answer must list, with the Ed25519 identity key (base64) each must be
   * served with. Other devices the answer lists are taken as they come (their coins are recorded too).
   */
  keys?: Record<number, string>;
  giveUpMs?: number;
}

interface Served {
  key_id: string;
  coin_category: string;
}
type Answer = { coins?: Served[]; short?: unknown; devices?: { device_id: number; ed25519_b64?: string; coins: Served[]; short: unknown }[] };

/** The coins of a 200, as [device, key_id], or what is wrong with it: one BRONZE coin at most per device, every expected device listed with its key. */
function coinsOf(answer: Answer, allDevices: boolean, keys: Record<number, string>): [number, string][] | string {
  const oneBronzeAtMost = (coins: Served[] | undefined) => Array.isArray(coins) && coins.length <= 1 && coins.every((c) => c.coin_category === "BRONZE");
  if (!allDevices) {
    if (answer.devices !== undefined || !oneBronzeAtMost(answer.coins) || answer.short === undefined) return "not { coins: [≤ 1 BRONZE], short }";
    return answer.coins!.map((c) => [1, c.key_id]);
  }
  if (!Array.isArray(answer.devices) || answer.coins !== undefined) return "not { devices: [...] }";
  for (const [device, key] of Object.entries(keys)) {
    const entries = answer.devices.filter((d) => d.device_id === Number(device));
    if (entries.length !== 1) return `device ${device} listed ${entries.length} times`;
    if (entries[0]!.ed25519_b64 !== key) return `device ${device} served with the key ${entries[0]!.ed25519_b64}`;
  }
  if (new Set(answer.devices.map((d) => d.device_id)).size !== answer.devices.length) return "a device listed twice";
  if (!answer.devices.every((d) => oneBronzeAtMost(d.coins) && d.short !== undefined)) return "a device's entry is not { coins: [≤ 1 BRONZE], short }";
  return answer.devices.flatMap((d) => d.coins.map((c): [number, string] => [d.device_id, c.key_id]));
}

/**
 * `tokens.length` keyed claimers of `owner`'s BRONZE coins, spread over `servers`: without
 * `allDevices`, each claim asks for one coin of device 1 (no `devices`: `{ coins, short }`); with
 * it, every other client asks `devices: "all"` for one per device (`{ devices: [...] }`). A claim
 * that is not answered 200 is retried with the same Idempotency-Key on the next server, after a
 * short back-off, until it is — after stop(), for `giveUpMs` at most. Every attempt is recorded.
 */
export function keyedLoad(servers: () => ServerProcess[], owner: string, tokens: string[], { allDevices = false, keys = {}, giveUpMs = 30_000 }: KeyedLoadOptions = {}): KeyedLoad {
  const attempts: Attempt[] = [];
  const received = new Map<string, string[]>();
  const deviceOf = new Map<string, number>();
  const gaveUp: string[] = [];
  const odd: string[] = [];
  let running = true;
  let stoppedAt = Infinity;
  const bodies = [
    JSON.stringify({ target_user_id: owner, want: { bronze: 1 }, fallback: "none" }),
    JSON.stringify({ target_user_id: owner, want: { bronze: 1 }, fallback: "none", devices: "all" }),
  ];
  const loops = tokens.map(async (token, c) => {
    const all = allDevices && c % 2 === 1;
    let at = c % servers().length;
    while (running) {
      const key = randomUUID();
      for (let attempt = 0; ; attempt++) {
        const start = performance.now();
        const res = await post(`${servers()[at]!.url}/v1/coins/claim`, token, key, bodies[all ? 1 : 0]!);
        attempts.push({ key, server: at, start, end: performance.now(), status: res.status, allDevices: all });
        if (res.status === 200) {
          const coins = coinsOf(JSON.parse(res.body) as Answer, all, keys);
          if (typeof coins === "string") odd.push(`200 ${coins}: ${res.body.slice(0, 300)}`);
          else {
            received.set(key, coins.map(([, keyId]) => keyId));
            for (const [device, keyId] of coins) deviceOf.set(keyId, device);
          }
          break;
        }
        if (res.status !== 503 && res.status !== 0) odd.push(`${res.status} ${res.body.slice(0, 200)}`);
        if (performance.now() - stoppedAt > giveUpMs) {
          gaveUp.push(key);
          break;
        }
        at = (at + 1) % servers().length;
        await Bun.sleep(Math.min(25 * 2 ** Math.min(attempt, 3), 200));
      }
    }
  });
  return {
    attempts, received, deviceOf, gaveUp, odd,
    async stop() {
      running = false;
      stoppedAt = performance.now();
      await Promise.all(loops);
    },
  };
}

const percentile = (xs: number[], p: number) => {
  if (xs.length === 0) return null;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
};
const round = (x: number | null) => (x === null ? null : Math.round(x));

/**
 * What a failover looked like to the clients, from the attempts around `eventAt` (the primary's
 * death, or the switchover's start); `before` and `after` are the windows the rates are read in.
 */
export function report(load: KeyedLoad, { eventAt, promotedAt, before, after }: { eventAt: number; promotedAt: number | null; before: [number, number]; after: [number, number] }) {
  const ok = load.attempts.filter((a) => a.status === 200);
  const rate = ([from, to]: [number, number]) => Math.round(ok.filter((a) => a.end >= from && a.end < to).length / ((to - from) / 1000));
  const firstAfterEvent = Math.min(...ok.filter((a) => a.start >= eventAt).map((a) => a.end));
  // the longest stretch without a 200 between the two measured windows (it holds the event)
  const ends = [before[1], ...ok.map((a) => a.end).filter((e) => e > before[1] && e < after[0]).sort((a, b) => a - b), after[0]];
  const unavailable = Math.max(...ends.slice(1).map((e, i) => e - ends[i]!));
  const firstAfterPromotion = promotedAt === null ? null : Math.min(...ok.filter((a) => a.start >= promotedAt).map((a) => a.end));
  const during = load.attempts.filter((a) => a.end >= eventAt && a.start <= firstAfterEvent);
  const allDevicesKeys = new Set(load.attempts.filter((a) => a.allDevices).map((a) => a.key));
  return {
    claimsPerSecondBefore: rate(before),
    claimsPerSecondAfter: rate(after),
    unavailableMs: round(unavailable),
    firstOkAfterEventMs: round(firstAfterEvent - eventAt),
    promotionAfterEventMs: promotedAt === null ? null : round(promotedAt - eventAt),
    firstOkAfterPromotionMs: firstAfterPromotion === null ? null : round(firstAfterPromotion - promotedAt!),
    answers503: load.attempts.filter((a) => a.status === 503).length,
    networkErrors: load.attempts.filter((a) => a.status === 0).length,
    p99DuringSwitchMs: round(percentile(during.map((a) => a.end - a.start), 99)),
    slowestMs: round(Math.max(...load.attempts.map((a) => a.end - a.start))),
    claims: load.received.size,
    allDevicesClaims: [...load.received.keys()].filter((k) => allDevicesKeys.has(k)).length,
    coins: [...load.received.values()].reduce((n, coins) => n + coins.length, 0),
  };
}
