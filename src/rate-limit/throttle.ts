import type { Config } from "../config.ts";
import { RateLimitedError } from "../errors.ts";

export type RouteGroup = "upload" | "fetch" | "count" | "admin";

interface Bucket {
  tokens: number;
  updated: number;
}

/**
 * Per-user token buckets, one set per route group, in this process's memory: with several
 * instances behind a load balancer each enforces its own share (the pair quota is shared).
 */
export class TokenBuckets {
  private buckets = new Map<string, Bucket>();
  private readonly perMs: number;
  private takes = 0;

  constructor(readonly capacity: number, perMinute: number, private readonly now: () => number = () => performance.now()) {
    this.perMs = perMinute / 60_000;
  }

  /** Takes one token for `key`; returns the headers to send, or throws 429 when the bucket is empty. */
  take(key: string): Record<string, string> {
    const now = this.now();
    if (++this.takes % 10_000 === 0) this.sweep(now);
    const bucket = this.buckets.get(key) ?? { tokens: this.capacity, updated: now };
    bucket.tokens = Math.min(this.capacity, bucket.tokens + (now - bucket.updated) * this.perMs);
    bucket.updated = now;
    this.buckets.set(key, bucket);
    if (bucket.tokens < 1) {
      const retryAfter = Math.max(1, Math.ceil((1 - bucket.tokens) / this.perMs / 1000));
      throw new RateLimitedError("Too many requests for this route group; slow down", retryAfter, { limit: this.capacity, reset: retryAfter });
    }
    bucket.tokens -= 1;
    const untilFull = Math.ceil((this.capacity - bucket.tokens) / this.perMs / 1000);
    return {
      "RateLimit-Limit": String(this.capacity),
      "RateLimit-Remaining": String(Math.floor(bucket.tokens)),
      "RateLimit-Reset": String(untilFull),
    };
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Forgets buckets that have refilled completely: they hold no information. */
  sweep(now = this.now()): void {
    for (const [key, b] of this.buckets) {
      if (b.tokens + (now - b.updated) * this.perMs >= this.capacity) this.buckets.delete(key);
    }
  }
}

/** Takes a token of `group` for `userId`: the RateLimit headers to send, or a 429. */
export type Throttle = (group: RouteGroup, userId: string) => Record<string, string>;

export function throttle(config: Config, limited?: (group: RouteGroup) => void): Throttle {
  if (config.AQM_RATE_LIMITS === "off") return () => ({});
  const perMinute: Record<RouteGroup, number> = {
    upload: config.AQM_RATE_UPLOAD_PER_MIN,
    fetch: config.AQM_RATE_FETCH_PER_MIN,
    count: config.AQM_RATE_COUNT_PER_MIN,
    admin: config.AQM_RATE_ADMIN_PER_MIN,
  };
  const groups = Object.fromEntries(
    Object.entries(perMinute).map(([group, n]) => [group, new TokenBuckets(n, n)]),
  ) as Record<RouteGroup, TokenBuckets>;
  return (group, userId) => {
    try {
      return groups[group].take(userId);
    } catch (error) {
      limited?.(group);
      throw error;
    }
  };
}
