import type { Db } from "../db/db.ts";
import { conflictKind, isConflict, isUnrouted } from "../db/errors.ts";
import { gone } from "../db/gate.ts";
import { InternalError, UnavailableError } from "../errors.ts";
import { notifyStock } from "../coins/stock-events.ts";
import { claimQuery, outcomesOf, watchedOf, type ClaimItem, type ClaimRow, type SettledOutcome } from "./batch.ts";
import { ensureRows, keyReused } from "./ensure.ts";
import { returnable, returnCoins, returnSize } from "./return.ts";
import { routingOf, type Routing, type ShardMap } from "./routing.ts";

interface Job {
  item: ClaimItem;
  /** On Citus: the shard of the item's target (computed once). */
  shard?: string;
  queuedAt: number;
  signal?: AbortSignal;
  attempts: number;
  resolve: (outcome: SettledOutcome) => void;
  reject: (error: unknown) => void;
}

export interface ClaimQueueOptions {
  /** The pair quota, or null when rate limits are off (benchmarks only). */
  quota: number | null;
  /** Statements at the database at once at most; the rest of the pool stays free for uploads and counts. */
  maxInFlight: number;
  /**
   * One PostgreSQL: a further statement leaves only once every statement in flight has run this
   * long (AQM_CLAIM_OVERLAP_MS). Until then the claims arriving wait for the next batch, which
   * costs PostgreSQL less per claim than a second small one; a statement that waits on a lock or
   * a standby does not hold them up longer. 0 (default): at once. Not on Citus, where each
   * statement serves one shard.
   */
  overlapAfterMs?: number;
  /** The longest a claim may wait for its turn while the database keeps answering (AQM_CLAIM_QUEUE_MAX_MS). */
  maxWaitMs: number;
  maxBatch?: number;
  maxQueued?: number;
  /** A claim with less time than this left before its deadline is refused instead of sent. */
  minBudgetMs?: number;
  /** Reports the queue length (metrics). */
  queued?: (n: number) => void;
  /** Reports each statement: claims in it and seconds it took (metrics). */
  sent?: (claims: number, seconds: number) => void;
  /** Reports, per claim, the seconds it waited in the queue before its first statement left (metrics). */
  left?: (waitedSeconds: number) => void;
  /** A statement rolled back by a concurrent one, its claims run again: why (metrics). */
  rerun?: (why: ReturnType<typeof conflictKind>) => void;
  /** Citus refused a batch that spanned two shards: the shard map is read again (metrics, log). */
  rerouted?: () => void;
  /** Reports coins put back in stock (and quota refunded) because their claim was never answered with them. */
  returned?: (report: { coins: number; refunded: number; why: ReturnReason; failed?: { coins: number; error: unknown } }) => void;
}

/** Why a claim's coins went back: its statement finished after its 503, its client left, or its result could not be read. */
export type ReturnReason = "late" | "gone" | "failed";

/** A claim that lost a race this many times in a row gets a 503 instead of another attempt. */
const MAX_ATTEMPTS = 5;

/**
 * Merges concurrent claims into one statement (statement.ts). At low load a claim goes out at
 * once (alone); under load, claims queue behind the statements already running and leave
 * together with the next one — no timer, no added delay. With the pair quota on, a batch holds at
 * most one claim per pair and per idempotency key: the others wait for the next statement, which
 * sees what this one spent.
 *
 * Deadlines: a queued claim waits while the database keeps answering — at most AQM_DB_POOL_WAIT_MS
 * past the later of its arrival and the last statement that succeeded, and never longer than
 * `maxWaitMs` in all. So during an outage every claim is answered (503) within the wait, while a
 * burst on a healthy database is served instead of refused. Before a batch leaves, claims past
 * their deadline or whose client has gone are answered and dropped; a claim whose deadline
 * passes while its statement runs is answered 503 then, and the statement, cancelled (rolled back)
 * only at the latest deadline of its claims, serves the others. A claim answered 503 whose
 * statement commits anyway — it outlived the claim, or its cancel could not reach PostgreSQL
 * (frozen, or too late) — or whose client left while it ran gives its coins back (return.ts).
 */
export class ClaimQueue {
  private queue: Job[] = [];
  private readonly returning = new Set<Promise<void>>();
  /** When each statement in flight left. */
  private readonly running = new Set<{ at: number }>();
  private overlapTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly routing: Routing;
  private readonly maxBatch: number;
  private readonly maxQueued: number;
  private readonly minBudgetMs: number;

  constructor(private readonly db: Db, private readonly options: ClaimQueueOptions) {
    this.maxBatch = options.maxBatch ?? 512;
    this.maxQueued = options.maxQueued ?? 20_000;
    this.minBudgetMs = options.minBudgetMs ?? 50;
    this.routing = routingOf(db);
  }

  async claim(item: ClaimItem, signal?: AbortSignal): Promise<SettledOutcome> {
    if (this.queue.length >= this.maxQueued) throw new UnavailableError("The server is at capacity; retry shortly");
    // Citus: a keyed claim registers its key first (ensure.ts); one reused with another body goes no further
    if (item.ref !== null && (await this.routing.routed())) {
      if (await keyReused(this.db, item, { signal, deadline: performance.now() + Math.min(this.db.waitMs, this.options.maxWaitMs) })) {
        return { status: "mismatch" };
      }
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ item, queuedAt: performance.now(), signal, attempts: 0, resolve, reject });
      this.options.queued?.(this.queue.length);
      if (this.queue.length === 1) queueMicrotask(() => this.pump()); // gather same-tick arrivals
    });
  }

  private pump(): void {
    const shards = this.routing.current;
    if (shards === undefined) {
      // the engine is not known yet (first claim, or a routing error): read it, then go on
      if (this.queue.length > 0) {
        this.routing.load().then(() => this.pump(), (error) => {
          for (const job of this.queue.splice(0)) job.reject(error);
          this.options.queued?.(0);
        });
      }
      return;
    }
    clearTimeout(this.overlapTimer); // decided again below
    this.overlapTimer = undefined;
    const overlapMs = shards === null ? this.options.overlapAfterMs ?? 0 : 0;
    while (this.running.size < this.options.maxInFlight && this.queue.length > 0) {
      if (overlapMs > 0 && this.running.size > 0) {
        const wait = Math.max(...[...this.running].map((r) => r.at)) + overlapMs - performance.now();
        if (wait > 0) {
          this.overlapTimer = setTimeout(() => this.pump(), wait);
          return;
        }
      }
      const batch = this.take(shards);
      this.options.queued?.(this.queue.length);
      if (batch.length === 0) continue;
      const statement = { at: performance.now() };
      const left = this.options.left;
      if (left) for (const job of batch) if (job.attempts === 0) left((statement.at - job.queuedAt) / 1000);
      this.running.add(statement);
      // a bug past the statement must answer its claims (500), not end the process (unhandled rejection)
      void this.send(batch).catch((error) => batch.forEach((job) => job.reject(error))).finally(() => {
        this.running.delete(statement);
        this.pump();
      });
    }
  }

  private deadlineOf(job: Job): number {
    return Math.min(job.queuedAt + this.options.maxWaitMs, Math.max(job.queuedAt, this.db.lastSuccess) + this.db.waitMs);
  }

  /**
   * The next batch from the head of the queue; drops claims that can no longer be served in time.
   * On Citus (`shards`), a batch holds the owners of one shard: the first claim's.
   */
  private take(shards: ShardMap | null): Job[] {
    const batch: Job[] = [];
    const rest: Job[] = [];
    const pairs = new Set<string>();
    const refs = new Set<string>();
    const soonest = performance.now() + this.minBudgetMs;
    let shard: string | undefined;
    for (const job of this.queue) {
      const own = shards === null ? undefined : (job.shard ??= shards.of(job.item.target));
      if (job.signal?.aborted) {
        job.reject(gone());
      } else if (this.deadlineOf(job) < soonest) {
        // (its own words: a claim that never reached the database, told apart from one whose statement ran out of time)
        job.reject(new UnavailableError("The claim waited for its turn until its deadline; retry shortly"));
      } else if (batch.length >= this.maxBatch || (shard !== undefined && own !== shard)) {
        rest.push(job);
      } else if ((job.item.pair && pairs.has(job.item.pair)) || (job.item.ref && refs.has(job.item.ref))) {
        rest.push(job);
      } else {
        if (job.item.pair) pairs.add(job.item.pair);
        if (job.item.ref) refs.add(job.item.ref);
        shard ??= own;
        batch.push(job);
      }
    }
    this.queue = rest;
    return batch;
  }

  private async send(batch: Job[]): Promise<void> {
    const items = batch.map((j) => j.item);
    const deadlines = batch.map((j) => this.deadlineOf(j));
    // The statement runs until the latest deadline of its claims. One whose own deadline comes
    // first is answered 503 then, alone, and if the statement commits its coins go back (as for a
    // late finish): the claims nearest their deadline — the oldest of a burst, the first taken —
    // no longer cancel the whole batch.
    const deadline = Math.min(performance.now() + this.db.waitMs, Math.max(...deadlines));
    const expired = new Set<number>();
    // one timer at a time, at the next claim's deadline (a batch's deadlines are mostly alike)
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expire = () => {
      const now = performance.now();
      let next = Infinity;
      batch.forEach((job, i) => {
        if (expired.has(i) || deadlines[i]! >= deadline) return;
        if (deadlines[i]! <= now + 1) {
          expired.add(i);
          job.reject(new UnavailableError("The database did not answer in time; retry shortly"));
        } else next = Math.min(next, deadlines[i]!);
      });
      timer = next === Infinity ? undefined : setTimeout(expire, next - now);
    };
    const earliest = Math.min(...deadlines);
    if (earliest < deadline) timer = setTimeout(expire, earliest - performance.now());
    const started = performance.now();
    const routed = this.routing.current !== null;
    let rows: ClaimRow[];
    try {
      if (routed) await ensureRows(this.db, items, this.options.quota !== null, { deadline });
      rows = await this.db.run((sql) => claimQuery(sql, items, this.options.quota, this.db.prepare, routed), {
        deadline, what: "claim", late: (late) => this.giveBack(items, late, new Set(items.keys()), "late"),
      });
    } catch (error) {
      clearTimeout(timer);
      const open = batch.filter((_, i) => !expired.has(i));
      // a deadlock or serialization failure rolled the whole statement back: each claim runs again;
      // so did a statement Citus could not route (the shard map is read again first)
      if (routed && isUnrouted(error)) {
        this.routing.forget();
        for (const job of [...batch, ...this.queue]) job.shard = undefined;
        this.options.rerouted?.();
      }
      const conflict = isConflict(error);
      if (conflict) this.options.rerun?.(conflictKind(error));
      if (conflict || (routed && isUnrouted(error))) this.again(open);
      else for (const job of open) job.reject(error);
      return;
    }
    clearTimeout(timer);
    if (routed) void notifyStock(this.db, watchedOf(rows)).catch(() => {}); // a missed one costs a waiter its deadline only
    // Committed. From here on a claim not answered with its coins gives them back: its client
    // left (a keyed claim keeps its answer for the retry), its status row is missing, or reading
    // the result failed.
    const answered = new Set<number>();
    try {
      this.options.sent?.(items.length, (performance.now() - started) / 1000);
      const outcomes = outcomesOf(rows, items.length);
      const left = new Set<number>();
      const missing = new Set<number>();
      const retry: Job[] = [];
      batch.forEach((job, i) => {
        const outcome = outcomes[i];
        if (expired.has(i)) return; // answered 503 at its deadline: given back below
        if (outcome === undefined) missing.add(i);
        else if (outcome.status === "retry") retry.push(job);
        else if (outcome.status === "ok" && job.signal?.aborted && job.item.ref === null) left.add(i);
        else {
          answered.add(i);
          job.resolve(outcome);
        }
      });
      for (const i of left) batch[i]!.reject(gone());
      for (const i of missing) batch[i]!.reject(new InternalError("ClaimStatusMissing", "the claim statement returned no status row for a claim"));
      this.giveBack(items, rows, left, "gone");
      this.giveBack(items, rows, missing, "failed");
      this.giveBack(items, rows, expired, "late");
      this.again(retry);
    } catch (error) {
      const unanswered = new Set([...items.keys()].filter((i) => !answered.has(i)));
      for (const i of unanswered) if (!expired.has(i)) batch[i]!.reject(error);
      this.giveBack(items, rows, unanswered, "failed");
    }
  }

  private giveBack(items: ClaimItem[], rows: readonly ClaimRow[], unanswered: ReadonlySet<number>, why: ReturnReason): void {
    if (unanswered.size === 0) return;
    const back = returnable(items, rows, unanswered);
    const coins = returnSize(back);
    if (coins === 0) return;
    const done = returnCoins(this.db, back).then(
      ({ returned, refunded }) => this.options.returned?.({ coins: returned, refunded, why }),
      (error) => this.options.returned?.({ coins: 0, refunded: 0, why, failed: { coins, error } }),
    ).finally(() => this.returning.delete(done));
    this.returning.add(done);
  }

  /**
   * Resolves once no claim statement runs at the database and no return is in progress (then
   * true), or after `ms` (false): what shutdown waits for before it closes the pool.
   */
  async settle(ms: number): Promise<boolean> {
    const until = performance.now() + ms;
    while (this.db.gate.stats.inUse > 0 || this.returning.size > 0) {
      if (performance.now() >= until) return false;
      await new Promise((resolve) => setTimeout(resolve, 10)); // a timer, so the statements' answers get read meanwhile
    }
    return true;
  }

  /** Claims that lost a race go back to the head of the queue, a few times at most. */
  private again(jobs: Job[]): void {
    const retry = jobs.filter((job) => {
      if (++job.attempts < MAX_ATTEMPTS) return true;
      job.reject(new UnavailableError("The claim kept meeting concurrent claims; retry shortly"));
      return false;
    });
    if (retry.length) this.queue.unshift(...retry);
  }
}
