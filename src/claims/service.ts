import { IdempotencyMismatchError, RateLimitedError, UnavailableError } from "../errors.ts";
import { deviceOne, type DeviceAnswer, type SettledOutcome } from "./batch.ts";
import type { ClaimKeys } from "./keys.ts";
import type { ClaimQueue } from "./queue.ts";
import type { ServedCoin } from "../coins/model.ts";
import type { StockEvents } from "../coins/stock-events.ts";
import type { TierCounts } from "../coins/tiers.ts";

export interface ClaimRequest {
  requester: string;
  target: string;
  want: TierCounts;
  /** Fill a tier's shortfall from the tiers below it (GOLD → SILVER → BRONZE), never upward. */
  fallback: boolean;
  allowLastResort: boolean;
  /** Wait up to this long for the owner to upload when nothing could be served. */
  waitMs: number;
  idempotencyKey?: string;
  /** The request's normalised body, hashed to refuse an Idempotency-Key reused with another body. */
  canonicalBody?: string;
  /** The client's request: a claim whose client has gone is never sent. */
  signal?: AbortSignal;
  /**
   * Claim from several devices, `want` applying to each: "all" of the target's, or these ids.
   * Absent: device 1 alone, answered without devices. `requesterDevice` is left out when the
   * requester claims from itself.
   */
  devices?: "all" | number[];
  requesterDevice?: number;
}

export interface ClaimResult {
  coins: ServedCoin[];
  short: TierCounts;
  /** With `devices`: per device claimed from (that has a row), its keys, coins and shortfall. */
  devices?: DeviceAnswer[];
  /** What the pair quota still allows (quota on, and not a replay). */
  remaining?: number;
  replayed: boolean;
}

export interface ClaimDeps {
  queue: ClaimQueue;
  keys: ClaimKeys;
  events: StockEvents;
  /** The pair quota, or null when rate limits are off. */
  quota: number | null;
  quotaRejected?: () => void;
}

/**
 * Every claim goes through here: GET /v1/coins/fetch (one tier, no fallback) and POST
 * /v1/coins/claim. Each attempt is one entry in a coalesced claim statement with the request's
 * own deadline; a claim that found nothing and may wait subscribes to the target's stock first,
 * then waits for a change (an upload on any instance) or its deadline, and tries again — the last
 * attempt also takes last-resort coins and records an empty answer for its Idempotency-Key.
 */
export function claimService({ queue, keys, events, quota, quotaRejected }: ClaimDeps) {
  return {
    async claim(request: ClaimRequest): Promise<ClaimResult> {
      const { requester, target, want, fallback, allowLastResort, idempotencyKey, signal } = request;
      const [pair, pairPrev] = quota === null ? [null, null] : keys.pair(requester, target);
      const [ref, refPrev] = idempotencyKey ? keys.ref(requester, idempotencyKey) : [null, null];
      const body = idempotencyKey ? keys.body(request.canonicalBody ?? "") : null;
      const slots = request.devices === undefined ? deviceOne : {
        devices: request.devices === "all" ? null : request.devices, multi: true,
        skip: target === requester ? request.requesterDevice ?? 0 : 0,
      };
      const waitUntil = performance.now() + request.waitMs;
      for (;;) {
        const final = request.waitMs === 0 || performance.now() >= waitUntil || events.isClosed;
        const stock = final ? undefined : await events.subscribe(target);
        try {
          const outcome = await queue.claim({
            target, requester, want, fallback, lastResort: allowLastResort && final, final, pair, pairPrev, ref, refPrev, body, ...slots,
          }, signal);
          const result = settle(outcome, quota, quotaRejected);
          if (final || result.coins.length > 0 || result.replayed) return result;
          await stock!.next(waitUntil, signal);
          if (signal?.aborted) throw new UnavailableError("The client closed the connection");
        } finally {
          stock?.close();
        }
      }
    },
  };
}

function settle(outcome: SettledOutcome, quota: number | null, quotaRejected?: () => void): ClaimResult {
  switch (outcome.status) {
    case "ok":
      return { coins: outcome.coins, short: outcome.short, devices: outcome.devices, remaining: quota === null ? undefined : outcome.remaining, replayed: false };
    case "replay":
      return { coins: outcome.coins, short: outcome.short, devices: outcome.devices, replayed: true };
    case "mismatch":
      throw new IdempotencyMismatchError();
    case "quota":
      quotaRejected?.();
      throw new RateLimitedError(`At most ${quota} coins of one user may be claimed per 24 hours`, outcome.retryAfterS);
  }
}

export type ClaimService = ReturnType<typeof claimService>;
