import type postgres from "postgres";
import type { PendingQuery, Row } from "postgres";
import { UnavailableError } from "../errors.ts";
import { cancelAtDatabase } from "./cancel.ts";
import { translate } from "./errors.ts";
import type { ConnectionGate } from "./gate.ts";
import { warningCount, type Sql } from "./pool.ts";

export interface DbOptions {
  /** AQM_DB_POOL_WAIT_MS: a statement's deadline, from when it asks for a connection. */
  waitMs: number;
  /** false behind a transaction-mode pooler that cannot keep prepared statements. */
  prepare: boolean;
  /** How long past its deadline a cancelled statement may take to confirm before the answer is given anyway. */
  graceMs?: number;
  /** A statement given up at its deadline finished after all (the cancel came too late). */
  late?: (what: string) => void;
}

export interface RunOptions<T = unknown> {
  /** performance.now() ms; default: now + waitMs. */
  deadline?: number;
  /** The client's request signal: a request whose client has gone never reaches the database. */
  signal?: AbortSignal;
  /** Names the statement in the log line of a late finish. */
  what?: string;
  /** Receives the result of a statement that finished after its answer was given up. */
  late?: (value: T) => void;
}

/**
 * How the server reaches PostgreSQL: every statement passes the connection gate and carries a
 * deadline, and so does every connection held for several statements (`hold`). A gate as wide as
 * its pool means postgres.js never pipelines one statement behind another (see cancel.ts).
 * Only a statement that finished before its cancel went out is answered with its result: one
 * that reports success later may have had its wait for a synchronous standby cancelled, and is
 * handled as a late finish (the claim queue gives its coins back; a keyed claim keeps its replay). At the deadline it is cancelled, so PostgreSQL rolls it back instead of committing it
 * after its answer was given up; the caller gets a 503 once the cancel is confirmed, or at the
 * latest `graceMs` later (then the outcome is unknown, and a late finish is reported). A query
 * postgres.js still holds while it reconnects is dropped from its queue by the same cancel.
 */
export class Db {
  readonly prepare: boolean;
  readonly waitMs: number;
  /** When a statement last succeeded (performance.now() ms): the database is answering, if slowly. */
  lastSuccess = 0;

  constructor(readonly sql: Sql, readonly gate: ConnectionGate, private readonly options: DbOptions) {
    this.prepare = options.prepare;
    this.waitMs = options.waitMs;
  }

  deadline(from = performance.now()): number {
    return from + this.options.waitMs;
  }

  run<T extends readonly (object | undefined)[] = Row[]>(make: (sql: Sql) => PendingQuery<T>, opts: RunOptions<T> = {}): Promise<T> {
    const deadline = opts.deadline ?? this.deadline();
    const grace = this.options.graceMs ?? 250;
    return new Promise<T>((resolve, reject) => {
      let answered = false;
      const answer = (fn: () => void) => {
        if (answered) return;
        answered = true;
        fn();
      };
      const timedOut = () => answer(() => reject(new UnavailableError("The database did not answer in time; retry shortly")));
      let cancelled = false;
      let warnings = 0;
      this.gate.run(async () => {
        const left = deadline - performance.now();
        if (left <= 0) throw new UnavailableError("The database did not answer in time; retry shortly");
        const query = make(this.sql);
        warnings = warningCount();
        const cancel = setTimeout(() => {
          cancelled = true;
          cancelAtDatabase(query);
        }, left);
        const giveUp = setTimeout(timedOut, left + grace);
        try {
          return await query;
        } finally {
          clearTimeout(cancel);
          clearTimeout(giveUp);
        }
      }, deadline, opts.signal).then((value) => {
        dropLeadingHoles(value);
        // Success after the cancel went out, or while PostgreSQL sent a WARNING (on any of this
        // process's connections: erring towards distrust), is not trusted: PostgreSQL reports a
        // commit whose wait for a synchronous standby was cancelled — by this cancel, by
        // statement_timeout — as a success with only a WARNING, though it may not survive a
        // failover. It is answered 503 and handled as a late finish.
        if (cancelled || warningCount() !== warnings) timedOut();
        else this.lastSuccess = performance.now();
        if (answered) {
          this.options.late?.(opts.what ?? "statement");
          try {
            opts.late?.(value);
          } catch (error) {
            console.error(JSON.stringify({ time: new Date().toISOString(), level: "error", msg: "handling a late finish failed", statement: opts.what, error: String(error) }));
          }
        }
        answer(() => resolve(value));
      }, (error) => answer(() => reject(translate(error))));
    });
  }

  /**
   * `work` in one transaction (BEGIN … COMMIT), for changes that need several statements, each
   * seeing what committed before it (READ COMMITTED), on a connection of its own that passes the
   * gate like a statement. At the deadline whatever the transaction is running is cancelled —
   * a statement (rolled back) or the COMMIT's wait for a synchronous standby, which PostgreSQL
   * then reports as a success with a WARNING: committed here, maybe not on the standby — and the
   * answer is a 503, as for any statement cancelled at its deadline or reported with a warning;
   * at the latest `graceMs` after the deadline (then its outcome is unknown: a late finish).
   */
  async transaction<T>(work: (tx: Sql) => Promise<T>, opts: Pick<RunOptions, "deadline" | "signal" | "what"> = {}): Promise<T> {
    const deadline = opts.deadline ?? this.deadline();
    const grace = this.options.graceMs ?? 250;
    let answered = false;
    let giveUp: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      giveUp = setTimeout(() => {
        answered = true;
        reject(new UnavailableError("The database did not confirm the change in time; retry shortly"));
      }, Math.max(0, deadline - performance.now()) + grace);
    });
    const running = this.hold(async (conn) => {
      const warnings = warningCount();
      let current: PendingQuery<Row[]> | undefined;
      // every statement of the transaction, so that the one running at the deadline can be cancelled
      const tx = new Proxy(conn, {
        apply: (target, self, args) => (current = Reflect.apply(target, self, args) as PendingQuery<Row[]>),
        get: (target, prop, receiver) => (prop === "unsafe"
          ? (...args: Parameters<Sql["unsafe"]>) => (current = target.unsafe(...args))
          : Reflect.get(target, prop, receiver)),
      });
      let cancelled = false;
      const cancel = setTimeout(() => {
        cancelled = true;
        if (current) cancelAtDatabase(current);
      }, Math.max(0, deadline - performance.now()));
      try {
        await tx`BEGIN`;
        let value: T;
        try {
          value = await work(tx);
        } catch (error) {
          await conn`ROLLBACK`.catch(() => {});
          throw error;
        }
        // PostgreSQL answers COMMIT of a transaction a failed statement aborted with ROLLBACK, not an
        // error: only a work that swallowed that failure gets here, and nothing of it was written
        const { command } = await tx`COMMIT`;
        if (cancelled || warningCount() !== warnings) throw new UnavailableError("The database did not confirm the change in time; retry shortly");
        if (command !== "COMMIT") throw new Error(`the transaction ended in ${command}, not COMMIT: a statement in it failed and the failure was swallowed`);
        this.lastSuccess = performance.now();
        return value;
      } finally {
        clearTimeout(cancel);
      }
    }, { deadline, signal: opts.signal });
    try {
      return await Promise.race([running, late]);
    } catch (error) {
      throw translate(error);
    } finally {
      clearTimeout(giveUp);
      if (answered) {
        running.then(() => this.options.late?.(opts.what ?? "transaction"), () => {});
      }
    }
  }

  /**
   * A connection of its own for `work` (several statements on one session, such as a maintenance
   * run under its advisory lock): it passes the gate like a statement, and the connection must be
   * had before the deadline; then `work` runs without one (its statements carry their own
   * statement_timeout) and the connection goes back to the pool.
   */
  async hold<T>(work: (conn: Sql) => Promise<T>, opts: Pick<RunOptions, "deadline" | "signal"> = {}): Promise<T> {
    const deadline = opts.deadline ?? this.deadline();
    return this.gate.run(async () => {
      const reserving = this.sql.reserve();
      let timer: ReturnType<typeof setTimeout> | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new UnavailableError("The database did not answer in time; retry shortly")), Math.max(0, deadline - performance.now()));
      });
      let conn: postgres.ReservedSql;
      try {
        conn = await Promise.race([reserving, late]);
      } catch (error) {
        void reserving.then((c) => c.release(), () => {}); // had after the deadline: straight back
        throw translate(error);
      } finally {
        clearTimeout(timer);
      }
      try {
        return await work(conn as unknown as Sql);
      } finally {
        conn.release();
      }
    }, deadline, opts.signal);
  }
}

/**
 * postgres.js 3.4 does not reset its row counter when a statement fails after sending rows (a
 * cancel or statement_timeout mid-stream), so the next statement on that connection resolves with
 * as many empty slots before its rows (porsager/postgres#1119, #1181). The rows themselves are
 * right; the slots go, in place (the result keeps `count` and `columns`).
 */
export function dropLeadingHoles<T extends readonly unknown[]>(rows: T): T {
  let holes = 0;
  while (holes < rows.length && !(holes in rows)) holes++;
  if (holes > 0) (rows as unknown as unknown[]).splice(0, holes);
  return rows;
}
