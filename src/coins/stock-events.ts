import type { Db } from "../db/db.ts";

export interface Subscription {
  /** Resolves at the next change of the user's stock since subscribing (or the last next()), at `until`, or on abort. */
  next(until: number, signal?: AbortSignal): Promise<void>;
  close(): void;
}

interface Entry {
  fired: boolean;
  wake?: () => void;
}

/** Opens the notification listener: `message(userId)` per change, `ready()` each time LISTEN is (re)established. */
export type Connect = (message: (userId: string) => void, ready: () => void) => { close(): Promise<void> };

/** How long a first waiter waits for LISTEN to be established before it looks anyway. */
const READY_WAIT_MS = 2000;

/**
 * Who waits for a user's stock to change, in this process: claims waiting for coins (wait_ms)
 * and owners long-polling their count. Changes arrive as PostgreSQL notifications (uploads send
 * one for their owner; claims for an owner who watches), so an upload or claim on any instance
 * wakes the waiters on every instance. Subscribe before looking, then wait: a change between the
 * look and the wait is not missed.
 */
export class StockEvents {
  private readonly waiting = new Map<string, Set<Entry>>();
  private closed = false;
  private listener?: { close(): Promise<void> };
  private listening?: Promise<void>;

  /** `connect` is called on the first subscription: a process nobody waits in holds no listener connection. */
  constructor(private readonly connect?: Connect, private readonly watched?: (n: number) => void) {}

  /** Resolves once LISTEN is established (or after a short bound: a missed change only costs a wait until the deadline). */
  private listen(): Promise<void> {
    if (!this.connect || this.closed) return Promise.resolve();
    this.listening ??= new Promise<void>((resolve) => {
      // whether a waiter may have looked with no LISTEN in place: it gave up waiting for the first,
      // or one was established (and dropped, if it is established again). Then changes may have
      // been missed. A first LISTEN in time wakes nobody: no waiter has looked yet.
      let missable = false;
      const bound = setTimeout(() => {
        missable = true;
        resolve();
      }, READY_WAIT_MS);
      this.listener = this.connect!((userId) => this.changed(userId), () => {
        clearTimeout(bound);
        resolve();
        if (missable) this.changedAll();
        missable = true;
      });
    });
    return this.listening;
  }

  /** Waiters in this process. */
  size = 0;

  changed(userId: string): void {
    for (const entry of this.waiting.get(userId) ?? []) fire(entry);
  }

  /** Wakes every waiter: notifications may have been missed (the listener reconnected). */
  changedAll(): void {
    for (const set of this.waiting.values()) for (const entry of set) fire(entry);
  }

  /** Shutdown: every waiter wakes now, later ones do not wait, and the listener closes. */
  async close(): Promise<void> {
    this.closed = true;
    this.changedAll();
    await this.listener?.close();
  }

  get isClosed(): boolean {
    return this.closed;
  }

  async subscribe(userId: string): Promise<Subscription> {
    const entry: Entry = { fired: this.closed };
    let set = this.waiting.get(userId);
    if (!set) this.waiting.set(userId, (set = new Set()));
    set.add(entry);
    this.watched?.(++this.size);
    const close = () => {
      if (!set!.delete(entry)) return;
      this.watched?.(--this.size);
      if (set!.size === 0 && this.waiting.get(userId) === set) this.waiting.delete(userId);
    };
    await this.listen();
    return {
      close,
      next: (until, signal) => new Promise<void>((resolve) => {
        if (entry.fired || signal?.aborted || this.closed) {
          entry.fired = this.closed;
          return resolve();
        }
        const done = () => {
          clearTimeout(timer);
          signal?.removeEventListener("abort", done);
          entry.wake = undefined;
          entry.fired = this.closed;
          resolve();
        };
        const timer = setTimeout(done, Math.max(0, until - performance.now()));
        signal?.addEventListener("abort", done, { once: true });
        entry.wake = done;
      }),
    };
  }
}

function fire(entry: Entry): void {
  entry.fired = true;
  entry.wake?.();
}

/**
 * Tells every instance that `owners`' stock changed, once the change committed. On Citus the
 * statements that change stock cannot notify themselves: a pg_notify inside a statement routed
 * to a worker fires on that worker, where no instance listens (tests/citus/README.md); this one
 * touches no distributed table and runs on the coordinator.
 */
export async function notifyStock(db: Db, owners: readonly string[]): Promise<void> {
  if (owners.length === 0) return;
  await db.run((sql) => sql.unsafe("SELECT pg_notify('aqm_stock', o) FROM unnest($1::text[]) AS o", [[...owners]] as never[], { prepare: db.prepare }),
    { what: "notify" });
}
