import { pinnedTransaction } from "../claims/routing.ts";
import type { Db, RunOptions } from "../db/db.ts";
import { DeviceStateError } from "../errors.ts";
import type { Coin, Inventory, InventoryByDevice } from "./model.ts";
import { DeviceMovedError, holdDevice, inputOf, uploadCoins, type UploadDevice, type UploadOutcome } from "./upload.ts";
import { tiers, type Tier } from "./tiers.ts";

const COUNT = `
SELECT t.tier,
       (SELECT count(*)::int FROM coin_inventory c
        WHERE c.user_id = $1::uuid AND c.device_id = $3::smallint AND c.coin_category = t.tier AND c.fetched_at IS NULL) AS n,
       EXISTS (SELECT 1 FROM last_resort_coin l WHERE l.user_id = $1::uuid AND l.device_id = $3::smallint AND l.coin_category = t.tier) AS last_resort
FROM unnest($2::text[]) AS t(tier)`;

/** Every device's counts: 'c' available coins per (device, tier), 'l' a last-resort coin, 'd' a device row. */
const COUNT_DEVICES = `
SELECT 'c' AS k, device_id, coin_category AS tier, count(*)::int AS n FROM coin_inventory
WHERE user_id = $1::uuid AND fetched_at IS NULL GROUP BY device_id, coin_category
UNION ALL SELECT 'l', device_id, coin_category, 1 FROM last_resort_coin WHERE user_id = $1::uuid
UNION ALL SELECT 'd', device_id, NULL, 0 FROM device WHERE user_id = $1::uuid`;

const AVAILABLE = "SELECT coin_category AS tier, count(*)::int AS n FROM coin_inventory WHERE fetched_at IS NULL GROUP BY 1";

const PUT_LAST_RESORT = `
INSERT INTO last_resort_coin AS l (user_id, device_id, key_id, coin_category, public_key_blob, signature_blob)
SELECT $1::uuid, $6::smallint, k, c, p, s
FROM unnest($2::text::text[], $3::text::text[], $4::bytea[], $5::bytea[]) AS u(k, c, p, s)
ON CONFLICT (user_id, device_id, coin_category) DO UPDATE
SET key_id = excluded.key_id, public_key_blob = excluded.public_key_blob, signature_blob = excluded.signature_blob,
    uploaded_at = excluded.uploaded_at`; // (its default, now(); Citus refuses a function that is not IMMUTABLE in DO UPDATE SET)

const emptyInventory = (): Inventory => ({ gold: 0, silver: 0, bronze: 0, last_resort: { gold: false, silver: false, bronze: false } });
const nameOf = (tier: Tier) => tier.toLowerCase() as "gold" | "silver" | "bronze";

/**
 * The device coins are stored for, once their signatures were checked (devices/…): its id and
 * the generation of keys they were verified against. Throws the 4xx the device's state calls for.
 */
export type CheckDevice = (userId: string, deviceId: number, coins: Coin[], opts?: RunOptions & { fresh?: boolean }) => Promise<UploadDevice>;

/** Coins were verified against keys replaced meanwhile: checked again (then refused, if signed with the old keys). */
const ATTEMPTS = 2;

/** Upload, count and last-resort coins: one statement each (last resort: one transaction), through the gate and with a deadline. */
export function coinService(db: Db, checkDevice: CheckDevice) {
  const run = <T extends object>(text: string, params: unknown[], opts?: RunOptions) =>
    db.run<T[]>((sql) => sql.unsafe<T[]>(text, params as never[], { prepare: db.prepare }), opts);

  /** `write` with the device checked; checked again when its keys changed between the check and the write. */
  async function forDevice<T>(userId: string, deviceId: number, coins: Coin[], opts: RunOptions | undefined, write: (device: UploadDevice) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const device = await checkDevice(userId, deviceId, coins, { ...opts, fresh: attempt > 1 });
      try {
        return await write(device);
      } catch (error) {
        if (!(error instanceof DeviceMovedError)) throw error;
        if (attempt >= ATTEMPTS) {
          throw new DeviceStateError(`Device ${deviceId}'s identity keys changed (or it was removed) during this upload; nothing was written: upload coins signed with its current keys`);
        }
      }
    }
  }

  return {
    /** Stores coins of the caller's device (verified against its identity keys, per AQM_VERIFY_SIGNATURES). */
    async uploadCoins(userId: string, deviceId: number, coins: Coin[], opts?: RunOptions): Promise<UploadOutcome> {
      return forDevice(userId, deviceId, coins, opts, (device) => uploadCoins(db, userId, device, coins, opts));
    },

    /** One device's counts. */
    async getInventoryCount(userId: string, deviceId: number, opts?: RunOptions): Promise<Inventory> {
      const rows = await run<{ tier: Tier; n: number; last_resort: boolean }>(COUNT, [userId, tiers, deviceId], { what: "count", ...opts });
      const inventory = emptyInventory();
      for (const { tier, n, last_resort } of rows) {
        inventory[nameOf(tier)] = n;
        inventory.last_resort[nameOf(tier)] = last_resort;
      }
      return inventory;
    },

    /** The sums over a user's devices, and each device's counts (devices with a row, coins or a last-resort coin). */
    async getInventoryByDevice(userId: string, opts?: RunOptions): Promise<InventoryByDevice> {
      const rows = await run<{ k: "c" | "l" | "d"; device_id: number; tier: Tier | null; n: number }>(COUNT_DEVICES, [userId], { what: "count", ...opts });
      const total = emptyInventory();
      const devices = new Map<number, Inventory>();
      for (const { k, device_id, tier, n } of rows) {
        const device = devices.get(device_id) ?? devices.set(device_id, emptyInventory()).get(device_id)!;
        if (tier === null) continue;
        if (k === "c") {
          device[nameOf(tier)] = n;
          total[nameOf(tier)] += n;
        } else if (k === "l") {
          device.last_resort[nameOf(tier)] = true;
          total.last_resort[nameOf(tier)] = true;
        }
      }
      const list = [...devices].sort(([a], [b]) => a - b).map(([device_id, { gold, silver, bronze, last_resort }]) => ({ device_id, gold, silver, bronze, last_resort }));
      return { ...total, devices: list };
    },

    /** Unclaimed coins per tier, all owners (the metrics gauge). */
    async availableByTier(opts?: RunOptions): Promise<Record<Tier, number>> {
      const rows = await run<{ tier: Tier; n: number }>(AVAILABLE, [], { what: "available", ...opts });
      return Object.fromEntries(tiers.map((tier) => [tier, rows.find((r) => r.tier === tier)?.n ?? 0])) as Record<Tier, number>;
    },

    /** Stores (or replaces) the device's last-resort coin of each tier sent; other tiers keep theirs. */
    async putLastResort(userId: string, deviceId: number, coins: Coin[], opts?: RunOptions): Promise<void> {
      const params = [userId, ...inputOf(db.sql, coins), deviceId];
      await forDevice(userId, deviceId, coins, opts, (device) => pinnedTransaction(db, userId, async (tx) => {
        await holdDevice(tx, db.prepare, userId, device);
        await tx.unsafe(PUT_LAST_RESORT, params as never[], { prepare: db.prepare });
      }, opts));
    },
  };
}

export type CoinService = ReturnType<typeof coinService>;
