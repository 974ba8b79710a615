import type { Db } from "../db/db.ts";
import type { Inventory } from "./model.ts";
import type { CoinService } from "./service.ts";
import type { StockEvents } from "./stock-events.ts";

const below = (counts: Inventory, n: number) => counts.gold < n || counts.silver < n || counts.bronze < n;

export type CountWatch = (userId: string, deviceId: number, under: number, waitMs: number, signal?: AbortSignal) => Promise<Inventory>;

/**
 * The owner's long-poll: answers as soon as any tier of the device's stock is below `under`, or at
 * the deadline (notifications name the user: a change on another of its devices costs one read). It marks the owner as watched in stock_watch, so claims on every instance notify
 * it (uploads always do), subscribes, then reads. A claim statement that began before the mark
 * was visible sends no notification but ends within `claimBoundMs` (its deadline): one more read
 * after that bound closes the gap — it is not polling.
 */
export function countWatch({ db, coins, events, claimBoundMs }: { db: Db; coins: CoinService; events: StockEvents; claimBoundMs: number }): CountWatch {
  return async (userId, deviceId, under, waitMs, signal) => {
    const until = performance.now() + waitMs;
    const stock = await events.subscribe(userId);
    try {
      await db.run((sql) => sql`
        INSERT INTO stock_watch (user_id, device_id, until)
        VALUES (${userId}::uuid, ${deviceId}::smallint, now() + make_interval(secs => ${(waitMs + claimBoundMs) / 1000}))
        ON CONFLICT (user_id, device_id) DO UPDATE SET until = greatest(stock_watch.until, excluded.until)`, { signal, what: "watch" });
      let recheck: number | undefined = performance.now() + claimBoundMs;
      let counts = await coins.getInventoryCount(userId, deviceId, { signal });
      while (!below(counts, under) && performance.now() < until && !signal?.aborted && !events.isClosed) {
        await stock.next(Math.min(until, recheck ?? until), signal);
        if (recheck !== undefined && performance.now() >= recheck) recheck = undefined;
        if (signal?.aborted) break;
        counts = await coins.getInventoryCount(userId, deviceId, { signal });
      }
      return counts;
    } finally {
      stock.close();
    }
  };
}
