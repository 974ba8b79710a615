import postgres from "postgres";
import type { Sql } from "./pool.ts";

export interface Listener {
  close(): Promise<void>;
}

/**
 * LISTEN on one channel over one dedicated connection (a waiting request holds none). After the
 * connection drops, LISTEN is issued again until it succeeds, and `ready` is called every time it
 * does — notifications sent in between were missed, so listeners re-check what they wait for.
 * Needs a session: through a transaction-mode pooler, give it a direct URL. `aliveEveryS`: the
 * connection is asked a `SELECT 1` that often and given up when it stays silent that long (a host
 * that vanished or froze keeps it open and mute: nothing would arrive, and nothing would say so).
 */
export function listen(source: string | Sql, channel: string, message: (payload: string) => void, ready: () => void,
  { aliveEveryS = 0 }: { aliveEveryS?: number } = {}): Listener {
  let closed = false;
  let retry: ReturnType<typeof setTimeout> | undefined;
  // From a URL, or from the options of the pool it serves (as postgres.js's own listen() does).
  const base = typeof source === "string" ? postgres(source).options : source.options;
  const sql = postgres({
    ...(base as unknown as postgres.Options<{}>),
    max: 1, idle_timeout: undefined, max_lifetime: null, fetch_types: false, connect_timeout: 2,
    backoff: () => 0.25, onnotice: () => {}, unresponsive_timeout: aliveEveryS || null,
    connection: { application_name: "aqm-coin-server listen" },
    onnotify: (name: string, payload: string) => {
      if (name === channel) message(payload);
    },
    onclose: () => {
      if (!closed) subscribe();
    },
  } as postgres.Options<{}>);
  // Only the latest LISTEN may call `ready` or retry: postgres.js can report the connection closed
  // (onclose: a new LISTEN) before it rejects the previous one, whose retry would then run beside it
  let attempt = 0;
  function subscribe(): void {
    clearTimeout(retry);
    const mine = ++attempt;
    sql.unsafe(`LISTEN "${channel.replace(/"/g, '""')}"`).then(() => {
      if (!closed && mine === attempt) ready();
    }, () => {
      if (!closed && mine === attempt) retry = setTimeout(subscribe, 250);
    });
  }
  subscribe();
  const alive = aliveEveryS > 0 ? setInterval(() => void sql`SELECT 1`.catch(() => {}), aliveEveryS * 1000) : undefined;
  alive?.unref?.();
  return {
    async close() {
      closed = true;
      clearTimeout(retry);
      clearInterval(alive);
      await sql.end({ timeout: 1 });
    },
  };
}
