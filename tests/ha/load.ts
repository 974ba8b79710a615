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
}

export interface KeyedLoad {
  attempts: Attempt[];
  /** Per Idempotency-Key, the coins its 200 carried. */
  received: Map<string, string[]>;
  /** Keys given up after the load stopped (their coins, if any, would be lost). */
  gaveUp: string[];
  /** Unexpected answers (not 200, 503 or a network error). */
  odd: string[];
  /** Stops starting new claims; resolves once every client has settled its last one. */
  stop(): Promise<void>;
}

/**
 * `clients` keyed claimers of one BRONZE coin each from `owner`, spread over `servers`: a claim
 * that is not answered 200 is retried with the same Idempotency-Key on the next server, after a
 * short back-off, until it is — after stop(), for `giveUpMs` at most. Every attempt is recorded.
 */
export function keyedLoad(servers: () => ServerProcess[], owner: string, tokens: string[], giveUpMs = 30_000): KeyedLoad {
  const attempts: Attempt[] = [];
  const received = new Map<string, string[]>();
  const gaveUp: string[] = [];
  const odd: string[] = [];
  let running = true;
  let stoppedAt = Infinity;
  const body = JSON.stringify({ target_user_id: owner, want: { bronze: 1 }, fallback: "none" });
  const loops = tokens.map(async (token, c) => {
    let at = c % servers().length;
    while (running) {
      const key = randomUUID();
      for (let attempt = 0; ; attempt++) {
        const start = performance.now();
        const res = await post(`${servers()[at]!.url}/v1/coins/claim`, token, key, body);
        attempts.push({ key, server: at, start, end: performance.now(), status: res.status });
        if (res.status === 200) {
          received.set(key, (JSON.parse(res.body) as { coins: { key_id: string }[] }).coins.map((k) => k.key_id));
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
    attempts, received, gaveUp, odd,
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
  };
}
