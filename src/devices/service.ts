import { pinnedTransaction } from "../claims/routing.ts";
import { notifyStock } from "../coins/stock-events.ts";
import type { Tier } from "../coins/tiers.ts";
import type { Config } from "../config.ts";
import type { Db, RunOptions } from "../db/db.ts";
import type { Sql } from "../db/pool.ts";
import { DeviceStateError, NotFoundError } from "../errors.ts";
import { deviceDigest, noKeys, type DeviceState } from "./digest.ts";
import type { DeviceKeys, MlDsaSet } from "./signatures.ts";

/**
 * A user's devices: their rows (created under AQM_MAX_DEVICES), identity keys, removal and
 * reset. Every statement names the user (`user_id = …` on each table), so on Citus each is a
 * router statement on the user's shard.
 *
 * Writes that change what a device holds lock its row first (the UPDATE or DELETE, or FOR
 * UPDATE), which waits for uploads holding it FOR SHARE; the coin DELETEs come as later
 * statements of the same transaction, so (READ COMMITTED) they see every upload that committed
 * meanwhile, and an upload starting later waits for the commit. A coin a claim locked first is
 * skipped by those DELETEs once the claim commits (fetched_at is set then); one they locked first
 * is skipped by the claim (SKIP LOCKED).
 */

export interface Device {
  /** Bumped whenever the keys change: an upload verified against one generation stores its coins only while the row still has it. */
  generation: number;
  keys: DeviceKeys;
}

export interface ListedDevice {
  deviceId: number;
  keys: DeviceKeys;
}

type Options = Pick<RunOptions, "signal" | "deadline">;

interface Row {
  generation: number;
  ed25519: Uint8Array | null;
  ml_dsa_set: MlDsaSet | null;
  ml_dsa: Uint8Array | null;
}

const keysOf = (row: Pick<Row, "ed25519" | "ml_dsa_set" | "ml_dsa">): DeviceKeys => ({ ed25519: row.ed25519, mlDsa: row.ml_dsa, mlDsaSet: row.ml_dsa_set });

const sameBytes = (a: Uint8Array | null, b: Uint8Array | null) => (a === null || b === null ? a === b : Buffer.from(a).equals(b));
const sameKeys = (a: DeviceKeys, b: DeviceKeys) => sameBytes(a.ed25519, b.ed25519) && a.mlDsaSet === b.mlDsaSet && sameBytes(a.mlDsa, b.mlDsa);

const selectRow = (sql: Sql, userId: string, deviceId: number) =>
  sql<Row[]>`SELECT generation, ed25519, ml_dsa_set, ml_dsa FROM device WHERE user_id = ${userId}::uuid AND device_id = ${deviceId}`;

/** Deletes the device's unclaimed coins and last-resort coins; how many went. */
async function deleteCoins(tx: Sql, userId: string, deviceId: number): Promise<{ coins: number; lastResort: number }> {
  const coins = await tx`DELETE FROM coin_inventory WHERE user_id = ${userId}::uuid AND device_id = ${deviceId} AND fetched_at IS NULL`;
  const lastResort = await tx`DELETE FROM last_resort_coin WHERE user_id = ${userId}::uuid AND device_id = ${deviceId}`;
  return { coins: coins.count, lastResort: lastResort.count };
}

export function deviceService(db: Db, config: Pick<Config, "AQM_MAX_DEVICES">) {
  const max = config.AQM_MAX_DEVICES;

  /**
   * Creates the device's row (no keys, the generation the column's default draws) unless it
   * exists, in `tx`. New rows are created one at a time per user, under a transaction-scoped
   * advisory lock, so that counting the user's rows and inserting one is exact under concurrency.
   */
  async function createRow(tx: Sql, userId: string, deviceId: number): Promise<Row> {
    await tx`SELECT pg_advisory_xact_lock(hashtextextended('aqm-device:' || ${userId}::uuid::text, 0))`;
    const [existing] = await selectRow(tx, userId, deviceId); // created while this waited
    if (existing) return existing;
    const [{ n }] = await tx<[{ n: number }]>`SELECT count(*)::int AS n FROM device WHERE user_id = ${userId}::uuid`;
    if (n >= max) {
      throw new DeviceStateError(`This user already has ${n} devices, the most this server allows (AQM_MAX_DEVICES=${max}); `
        + "remove one with DELETE /v1/devices/{id} first");
    }
    const [inserted] = await tx<Row[]>`
      INSERT INTO device (user_id, device_id) VALUES (${userId}::uuid, ${deviceId}) ON CONFLICT DO NOTHING
      RETURNING generation, ed25519, ml_dsa_set, ml_dsa`;
    return inserted ?? (await selectRow(tx, userId, deviceId))[0]!;
  }

  /** What the server holds for the device as far as the digest covers it (one statement: one snapshot). */
  async function deviceState(userId: string, deviceId: number, opts: Options = {}): Promise<DeviceState> {
    const rows = await db.run((sql) => sql<{ tier: Tier | null; key_id: string | null; a: Uint8Array | null; b: Uint8Array | null; set: MlDsaSet | null }[]>`
      SELECT NULL::text AS tier, NULL::text AS key_id, ed25519 AS a, ml_dsa AS b, ml_dsa_set AS set
      FROM device WHERE user_id = ${userId}::uuid AND device_id = ${deviceId}
      UNION ALL
      SELECT coin_category, key_id, public_key_blob, signature_blob, NULL
      FROM last_resort_coin WHERE user_id = ${userId}::uuid AND device_id = ${deviceId}`, { what: "device digest", ...opts });
    const state: DeviceState = { keys: noKeys, lastResort: {} };
    for (const row of rows) {
      if (row.tier === null) state.keys = { ed25519: row.a, mlDsa: row.b, mlDsaSet: row.set };
      else state.lastResort[row.tier] = { keyId: row.key_id!, publicKey: row.a!, signature: row.b! };
    }
    return state;
  }

  return {
    /** The device's row, created if it has none (409 DeviceStateError past AQM_MAX_DEVICES). */
    async ensureDevice(userId: string, deviceId: number, opts: Options = {}): Promise<Device> {
      const [row] = await db.run((sql) => selectRow(sql, userId, deviceId), { what: "device", ...opts });
      const found = row ?? await db.transaction((tx) => createRow(tx, userId, deviceId), opts);
      return { generation: found.generation, keys: keysOf(found) };
    },

    /**
     * Registers the device's identity keys, or replaces them (creating its row as ensureDevice
     * does). When they change — from none too: coins stored before were never verified against
     * them — the generation is bumped and the device's unclaimed and last-resort coins are deleted.
     */
    async registerKeys(userId: string, deviceId: number, keys: DeviceKeys, opts: Options = {}): Promise<{ replaced: boolean; coinsDeleted: number }> {
      const outcome = await pinnedTransaction(db, userId, async (tx) => {
        const lock = () => tx<Row[]>`
          SELECT generation, ed25519, ml_dsa_set, ml_dsa FROM device WHERE user_id = ${userId}::uuid AND device_id = ${deviceId} FOR UPDATE`;
        let [row] = await lock();
        if (!row) {
          await createRow(tx, userId, deviceId);
          [row] = await lock();
        }
        const before = keysOf(row!);
        if (sameKeys(before, keys)) return { replaced: false, coins: 0, lastResort: 0 };
        await tx`
          UPDATE device SET ed25519 = ${keys.ed25519}, ml_dsa_set = ${keys.mlDsaSet}, ml_dsa = ${keys.mlDsa}, generation = generation + 1
          WHERE user_id = ${userId}::uuid AND device_id = ${deviceId}`;
        return { replaced: before.ed25519 !== null, ...await deleteCoins(tx, userId, deviceId) };
      }, opts);
      if (outcome.coins > 0) await notifyStock(db, [userId]).catch(() => {}); // a missed one costs a waiter its deadline only
      return { replaced: outcome.replaced, coinsDeleted: outcome.coins + outcome.lastResort };
    },

    /** Removes the device: its row, unclaimed coins, last-resort coins and stock watch. 404 when there was nothing. */
    async deleteDevice(userId: string, deviceId: number, opts: Options = {}): Promise<{ coinsDeleted: number }> {
      const deleted = await db.transaction(async (tx) => {
        const row = await tx`DELETE FROM device WHERE user_id = ${userId}::uuid AND device_id = ${deviceId}`;
        const { coins, lastResort } = await deleteCoins(tx, userId, deviceId);
        if (row.count === 0 && coins + lastResort === 0) throw new NotFoundError(`This user has no device ${deviceId}`);
        await tx`DELETE FROM stock_watch WHERE user_id = ${userId}::uuid AND device_id = ${deviceId}`;
        return { coins, lastResort };
      }, opts);
      if (deleted.coins > 0) await notifyStock(db, [userId]).catch(() => {});
      return { coinsDeleted: deleted.coins + deleted.lastResort };
    },

    /** Deletes the device's unclaimed and last-resort coins; its row and keys stay. */
    async resetDevice(userId: string, deviceId: number, opts: Options = {}): Promise<{ deleted: number }> {
      const { coins, lastResort } = await pinnedTransaction(db, userId, async (tx) => {
        // uploads in progress commit first, so the DELETEs see their coins
        await tx`SELECT 1 FROM device WHERE user_id = ${userId}::uuid AND device_id = ${deviceId} FOR UPDATE`;
        return deleteCoins(tx, userId, deviceId);
      }, opts);
      if (coins > 0) await notifyStock(db, [userId]).catch(() => {});
      return { deleted: coins + lastResort };
    },

    /** The user's devices by device_id (none for an unknown user). */
    async listDevices(userId: string, opts: Options = {}): Promise<ListedDevice[]> {
      const rows = await db.run((sql) => sql<(Row & { device_id: number })[]>`
        SELECT device_id, generation, ed25519, ml_dsa_set, ml_dsa FROM device WHERE user_id = ${userId}::uuid ORDER BY device_id`,
      { what: "devices", ...opts });
      return rows.map((row) => ({ deviceId: row.device_id, keys: keysOf(row) }));
    },

    deviceState,

    /** The device's digest (digest.ts). */
    async digest(userId: string, deviceId: number, opts: Options = {}): Promise<Uint8Array> {
      return deviceDigest(await deviceState(userId, deviceId, opts));
    },
  };
}

export type DeviceService = ReturnType<typeof deviceService>;
