import { UnavailableError } from "../errors.ts";

export interface GateStats {
  inUse: number;
  waiting: number;
}

/** How the gate reports, so the database layer needs no metrics module. */
export interface GateEvents {
  changed?(stats: GateStats): void;
  refused?(): void;
}

interface Waiter {
  resolve: () => void;
  reject: (error: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/**
 * Bounds the wait for a database connection. postgres.js queues queries without limit when every
 * connection is busy; statements pass this gate first, so at most `size` are at the database, at
 * most `queueMax` wait, and none waits past its deadline (or after its client has gone) — those
 * get 503 with Retry-After instead of piling up.
 */
export class ConnectionGate {
  private inUse = 0;
  private readonly waiting: Waiter[] = [];

  constructor(
    private readonly size: number,
    private readonly queueMax: number,
    private readonly events: GateEvents = {},
  ) {}

  get stats(): GateStats {
    return { inUse: this.inUse, waiting: this.waiting.length };
  }

  /** A slot for `work` before `deadline` (performance.now() ms); released when `work` settles. */
  async run<T>(work: () => Promise<T>, deadline: number, signal?: AbortSignal): Promise<T> {
    await this.acquire(deadline, signal);
    try {
      return await work();
    } finally {
      this.release();
    }
  }

  private acquire(deadline: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(gone());
    if (this.inUse < this.size) {
      this.inUse++;
      this.report();
      return Promise.resolve();
    }
    const wait = deadline - performance.now();
    if (this.waiting.length >= this.queueMax || wait <= 0) return Promise.reject(this.refuse());
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve, reject, signal,
        timer: setTimeout(() => this.drop(waiter, this.refuse()), wait),
      };
      if (signal) {
        waiter.onAbort = () => this.drop(waiter, gone());
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      this.waiting.push(waiter);
      this.report();
    });
  }

  private drop(waiter: Waiter, error: unknown): void {
    const at = this.waiting.indexOf(waiter);
    if (at < 0) return;
    this.waiting.splice(at, 1);
    this.forget(waiter);
    this.report();
    waiter.reject(error);
  }

  private forget(waiter: Waiter): void {
    clearTimeout(waiter.timer);
    if (waiter.onAbort) waiter.signal?.removeEventListener("abort", waiter.onAbort);
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) {
      this.forget(next);
      next.resolve(); // the slot passes straight to the next waiter
    } else {
      this.inUse--;
    }
    this.report();
  }

  private refuse(): UnavailableError {
    this.events.refused?.();
    return new UnavailableError("The server is at capacity; retry shortly", 1);
  }

  private report(): void {
    this.events.changed?.(this.stats);
  }
}

/** The client closed the connection before its request reached the database: nothing was done. */
export const gone = () => new UnavailableError("The client closed the connection; nothing was done", 1);
