import { UnavailableError } from "../errors.ts";
import type { Metrics } from "../metrics/registry.ts";

interface Waiter {
  resolve: () => void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Bounds the wait for a database connection. postgres.js queues queries without limit when
 * every connection is busy; requests pass this gate first, so at most `size` are at the
 * database, at most `queueMax` wait, and none waits longer than `waitMs` — past that they get
 * 503 with Retry-After instead of piling up.
 */
export class ConnectionGate {
  private inUse = 0;
  private readonly waiting: Waiter[] = [];

  constructor(
    private readonly size: number,
    private readonly waitMs: number,
    private readonly queueMax: number,
    private readonly metrics?: Metrics,
  ) {}

  async run<T>(work: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await work();
    } finally {
      this.release();
    }
  }

  get stats() {
    return { inUse: this.inUse, waiting: this.waiting.length };
  }

  private acquire(): Promise<void> {
    if (this.inUse < this.size) {
      this.inUse++;
      this.report();
      return Promise.resolve();
    }
    if (this.waiting.length >= this.queueMax) return Promise.reject(this.refuse());
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        timer: setTimeout(() => {
          this.waiting.splice(this.waiting.indexOf(waiter), 1);
          this.report();
          reject(this.refuse());
        }, this.waitMs),
      };
      this.waiting.push(waiter);
      this.report();
    });
  }

  private release(): void {
    const next = this.waiting.shift();
    if (next) {
      clearTimeout(next.timer);
      next.resolve(); // the slot passes straight to the next waiter
    } else {
      this.inUse--;
    }
    this.report();
  }

  private refuse(): UnavailableError {
    this.metrics?.poolRejections.inc();
    return new UnavailableError("The server is at capacity; retry shortly", 1);
  }

  private report(): void {
    this.metrics?.poolInUse.set(this.inUse);
    this.metrics?.poolWaiting.set(this.waiting.length);
  }
}

/** The same service with every method run through the gate. */
export function gated<S extends Record<string, (...args: never[]) => Promise<unknown>>>(gate: ConnectionGate, service: S): S {
  return Object.fromEntries(
    Object.entries(service).map(([name, fn]) => [name, (...args: never[]) => gate.run(() => fn(...args))]),
  ) as S;
}
