import type { Sql } from "../src/db/pool.ts";

export interface ActiveBackends {
  /** Average number of active backends of the server's pools; null when no sample could be read (not measured). */
  pgActive: number | null;
  /** The same by wait event ("CPU" when not waiting), the largest four. */
  pgWaits: Record<string, number>;
}

/**
 * Samples pg_stat_activity every 250 ms for active backends of the server's pools (and the
 * SQL ceiling's, which share the application_name): whether the database is busy, and on what.
 * "LWLock:WALWrite" and "IO:WalSync" are backends waiting for their commit to be flushed.
 */
export function startWaitSampler(sql: Sql, applicationName = "aqm-coin-server"): { stop(): Promise<ActiveBackends> } {
  const counts = new Map<string, number>();
  let samples = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const rows = await sql<{ wait: string; n: number }[]>`
        SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait, count(*)::int AS n
        FROM pg_stat_activity
        WHERE application_name = ${applicationName} AND state = 'active' AND pid <> pg_backend_pid()
        GROUP BY 1`.catch(() => undefined);
      if (rows) {
        for (const { wait, n } of rows) counts.set(wait, (counts.get(wait) ?? 0) + n);
        samples++;
      }
      await Bun.sleep(250);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      const average = (n: number) => Math.round((n / samples) * 10) / 10;
      if (samples === 0) return { pgActive: null, pgWaits: {} };
      const total = [...counts.values()].reduce((a, b) => a + b, 0);
      const top = [...counts].sort((a, b) => b[1] - a[1]).slice(0, 4);
      return { pgActive: average(total), pgWaits: Object.fromEntries(top.map(([wait, n]) => [wait, average(n)])) };
    },
  };
}

/** "7.9: WALWrite 6.1": active backends on average, and the largest wait among them. */
export function describeActive(row: Partial<ActiveBackends>): string {
  if (row.pgActive === undefined || row.pgActive === null) return "n/a";
  const [wait, n] = Object.entries(row.pgWaits ?? {})[0] ?? [];
  return wait ? `${row.pgActive.toFixed(1)}: ${wait.split(":").at(-1)} ${n!.toFixed(1)}` : row.pgActive.toFixed(1);
}
