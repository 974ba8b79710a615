import type { CheckDevice } from "../coins/service.ts";
import type { Config } from "../config.ts";
import { AppError, BadSignatureError, DeviceStateError } from "../errors.ts";
import type { Device, DeviceService } from "./service.ts";
import { verifyCoins } from "./signatures.ts";
import type { Coin } from "../coins/model.ts";

/** Devices whose row and keys this process read last (an upload's first look; see below). */
const CACHE_SIZE = 10_000;

/**
 * Before coins of a device are stored (upload, last resort): its row (created under the device
 * limit), and per AQM_VERIFY_SIGNATURES every coin's signature checked against its identity keys:
 * `registered` for devices with keys, `required` refuses devices without, `off` never checks.
 * Answers the generation of keys the coins were checked against (the write holds the row to it).
 *
 * The row is read once and kept per process, concurrent first reads sharing one statement: a kept
 * copy can be stale (keys replaced, the device removed, on any instance), which never stores a
 * coin wrongly — the write stores nothing unless the row still has the generation checked, and
 * is then checked again from a fresh read (`fresh`) — and never refuses one wrongly: a refusal
 * from a kept copy is decided again from a fresh read.
 */
export function deviceCheck(devices: Pick<DeviceService, "ensureDevice">, mode: Config["AQM_VERIFY_SIGNATURES"]): CheckDevice {
  const kept = new Map<string, Promise<Device>>();
  const read = (userId: string, deviceId: number, deadline: number | undefined, fresh: boolean) => {
    const key = `${userId}/${deviceId}`;
    const hit = fresh ? undefined : kept.get(key);
    if (hit) return { device: hit, kept: true };
    // (no request's signal: a read shared by concurrent uploads must not end with one of their clients)
    const device = devices.ensureDevice(userId, deviceId, { deadline });
    kept.delete(key);
    if (kept.size >= CACHE_SIZE) kept.delete(kept.keys().next().value!);
    kept.set(key, device);
    device.catch(() => kept.get(key) === device && kept.delete(key));
    return { device, kept: false };
  };

  const refusal = async ({ keys }: Device, deviceId: number, coins: Coin[]): Promise<AppError | null> => {
    const register = `PUT /v1/devices/${deviceId}`;
    if (keys.ed25519 === null) {
      return mode === "required" ? new DeviceStateError(`Device ${deviceId} has no identity keys: this server stores only verified coins; register its keys first (${register})`) : null;
    }
    if (mode === "off") return null;
    if (keys.mlDsa === null && coins.some((c) => c.coin_category === "GOLD")) {
      return new DeviceStateError(`GOLD coins are signed with the device's ML-DSA key, and device ${deviceId} registered none: register one first (${register})`);
    }
    const bad = await verifyCoins(keys, coins.map((c) => ({
      key_id: c.key_id, coin_category: c.coin_category,
      publicKey: Buffer.from(c.public_key_b64, "base64"), signature: Buffer.from(c.signature_b64, "base64"),
    })));
    return bad.length > 0 ? new BadSignatureError(bad) : null;
  };

  return async (userId, deviceId, coins, { fresh = false, ...opts } = {}) => {
    for (;;) {
      const read_ = read(userId, deviceId, opts.deadline, fresh);
      const device = await read_.device;
      const refused = await refusal(device, deviceId, coins);
      if (refused === null) return { deviceId, generation: device.generation };
      if (!read_.kept) throw refused;
      fresh = true;
    }
  };
}
