import { Elysia } from "elysia";
import { authenticated } from "../auth/plugin.ts";
import { MAX_DEVICE_ID, type Caller, type TokenVerifier } from "../auth/jwt.ts";
import { DigestMismatchError, ForbiddenError, ValidationError } from "../errors.ts";
import { problemExample, problemResponses } from "../http/openapi.ts";
import type { Throttle } from "../rate-limit/throttle.ts";
import {
  CheckBody, CheckResult, DeleteResult, DeviceList, DeviceParams, deviceIdMessage, deviceProblemExamples as examples, ed25519Message, RegisterBody,
  RegisterResult, ResetResult, UserParams, type DeviceInfo,
} from "./model.ts";
import type { DeviceService } from "./service.ts";
import { mlDsaSizes, validEd25519Key, validMlDsaKey, type DeviceKeys } from "./signatures.ts";

export interface DevicesDeps {
  devices: DeviceService;
  verify: TokenVerifier;
  throttle: Throttle;
}

const invalid = (location: string, field: string, message: string) =>
  new ValidationError(`The request ${location} is invalid: ${field}`, [{ field, message }]);

// Checked here, before Elysia's coercion: it would read "0x10" or "1e1" as numbers, and its
// range error for a coerced path parameter names no field.
function decimalDeviceId({ params }: { params: Record<string, unknown> }): void {
  const id = params.device_id;
  if (typeof id === "string" && !(/^\d{1,3}$/.test(id) && Number(id) >= 1 && Number(id) <= MAX_DEVICE_ID)) {
    throw invalid("params", "device_id", deviceIdMessage);
  }
}

function requireOwnDevice(caller: Caller, deviceId: number): void {
  if (deviceId !== caller.deviceId) {
    throw new ForbiddenError(`device_id must be the token's own device (${caller.deviceId}); a token acts for one device only`);
  }
}

/** The body's keys as bytes, or a 422 naming the field that is wrong. */
async function keysOf(body: RegisterBody): Promise<DeviceKeys> {
  if (body.ml_dsa_b64 !== undefined && body.ml_dsa === undefined) throw invalid("body", "ml_dsa", "must name the parameter set of ml_dsa_b64");
  if (body.ml_dsa !== undefined && body.ml_dsa_b64 === undefined) throw invalid("body", "ml_dsa_b64", "must be sent with ml_dsa");
  const ed25519 = Buffer.from(body.ed25519_b64, "base64");
  if (!(await validEd25519Key(ed25519))) throw invalid("body", "ed25519_b64", ed25519Message);
  if (body.ml_dsa === undefined) return { ed25519, mlDsa: null, mlDsaSet: null };
  const mlDsa = Buffer.from(body.ml_dsa_b64!, "base64");
  if (!validMlDsaKey(body.ml_dsa, mlDsa)) {
    throw invalid("body", "ml_dsa_b64", `must be a ${body.ml_dsa} public key: ${mlDsaSizes[body.ml_dsa].publicKey} bytes, standard base64 with padding`);
  }
  return { ed25519, mlDsa, mlDsaSet: body.ml_dsa };
}

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString("base64");

function served(deviceId: number, { ed25519, mlDsa, mlDsaSet }: DeviceKeys): DeviceInfo {
  return {
    device_id: deviceId,
    ...(ed25519 ? { ed25519_b64: b64(ed25519) } : {}),
    ...(mlDsa && mlDsaSet ? { ml_dsa_b64: b64(mlDsa), ml_dsa: mlDsaSet } : {}),
  };
}

const tags = ["devices"];

/** A user's devices: identity keys, removal, reset and the state check. */
export const devicesController = ({ devices, verify, throttle }: DevicesDeps) =>
  new Elysia()
    .use(authenticated(verify))
    .put("/v1/devices/:device_id", async ({ params, body, caller, set, request }) => {
      Object.assign(set.headers, throttle("upload", caller.userId));
      requireOwnDevice(caller, params.device_id);
      const keys = await keysOf(body);
      const { replaced, coinsDeleted } = await devices.registerKeys(caller.userId, params.device_id, keys, { signal: request.signal });
      set.headers["cache-control"] = "no-store";
      return { device_id: params.device_id, replaced, coins_deleted: coinsDeleted };
    }, {
      transform: decimalDeviceId,
      params: DeviceParams,
      body: RegisterBody,
      parse: "json",
      response: {
        200: RegisterResult, ...problemResponses(400, 401, 413, 415, 429, 503),
        403: problemExample(examples.notOwnDevice), 409: problemExample(examples.deviceLimit), 422: problemExample(examples.badKey),
      },
      detail: {
        tags, summary: "Register or replace your device's identity keys",
        description: "The token's own device only (its `dev` claim). Coins the device uploads are verified against these keys. "
          + "When the keys change (the first registration too), the device's unclaimed coins and last-resort coins are deleted: "
          + "they were not signed with the new keys. Claimed coins stay. The same keys again change nothing. "
          + "A device new to the server counts against AQM_MAX_DEVICES (409 past it).",
      },
    })
    .get("/v1/users/:user_id/devices", async ({ params, caller, set, request }) => {
      Object.assign(set.headers, throttle("count", caller.userId));
      const list = await devices.listDevices(params.user_id.toLowerCase(), { signal: request.signal });
      set.headers["cache-control"] = "no-store";
      return { devices: list.map((d) => served(d.deviceId, d.keys)) };
    }, {
      params: UserParams,
      response: { 200: DeviceList, ...problemResponses(401, 429, 503), 422: problemExample(examples.badUserId) },
      detail: {
        tags, summary: "A user's devices and their public identity keys",
        description: "Any authenticated user may read them: identity keys are public. A device without registered keys is listed without key fields; an unknown user has no devices.",
      },
    })
    .delete("/v1/devices/:device_id", async ({ params, caller, set, request }) => {
      Object.assign(set.headers, throttle("upload", caller.userId));
      const { coinsDeleted } = await devices.deleteDevice(caller.userId, params.device_id, { signal: request.signal });
      set.headers["cache-control"] = "no-store";
      return { coins_deleted: coinsDeleted };
    }, {
      transform: decimalDeviceId,
      params: DeviceParams,
      response: { 200: DeleteResult, ...problemResponses(401, 429, 503), 404: problemExample(examples.noDevice), 422: problemExample(examples.badDeviceId) },
      detail: {
        tags, summary: "Remove one of your devices, with its unclaimed and last-resort coins",
        description: "Any device of the token's user. Once this answers, no coin of the device is handed out any more; coins claimed before stay with their claimers. 404 when the server holds nothing of the device.",
      },
    })
    .delete("/v1/coins", async ({ caller, set, request }) => {
      Object.assign(set.headers, throttle("upload", caller.userId));
      const { deleted } = await devices.resetDevice(caller.userId, caller.deviceId, { signal: request.signal });
      set.headers["cache-control"] = "no-store";
      return { deleted };
    }, {
      response: { 200: ResetResult, ...problemResponses(401, 429, 503) },
      detail: {
        tags, summary: "Delete your device's unclaimed and last-resort coins (it lost its private keys)",
        description: "For a device that lost its local state (as Matrix MSC4162): its coins can no longer be used, so none is handed out any more. "
          + "The device and its identity keys stay; upload new coins after.",
      },
    })
    .post("/v1/devices/:device_id/check", async ({ params, body, caller, set, request }) => {
      Object.assign(set.headers, throttle("count", caller.userId));
      requireOwnDevice(caller, params.device_id);
      const digest = await devices.digest(caller.userId, params.device_id, { signal: request.signal });
      set.headers["cache-control"] = "no-store";
      if (!Buffer.from(digest).equals(Buffer.from(body.digest_b64, "base64"))) throw new DigestMismatchError();
      return { match: true as const };
    }, {
      transform: decimalDeviceId,
      params: DeviceParams,
      body: CheckBody,
      parse: "json",
      response: {
        200: CheckResult, ...problemResponses(400, 401, 413, 415, 429, 503),
        403: problemExample(examples.notOwnDevice), 409: problemExample(examples.mismatch), 422: problemExample(examples.badDigest),
      },
      detail: {
        tags, summary: "Check that the server holds what your device believes it holds",
        description: "The token's own device only. Send the SHA-256 digest (version 1) of your identity keys and last-resort coins: "
          + "fields, each a 4-byte big-endian length then its bytes: the ASCII string `aqm-device-digest-v1`; the Ed25519 public key; "
          + "the ML-DSA parameter set name (ASCII); the ML-DSA public key; then for GOLD, SILVER and BRONZE in that order the last-resort "
          + "coin's key_id (UTF-8), public key and signature. Anything the server does not hold is an empty field. 409 when it differs: "
          + "register your keys again (PUT /v1/devices/{id}) and store your last-resort coins again.",
      },
    });
