import { Elysia, t } from "elysia";
import { authenticated } from "../auth/plugin.ts";
import { requireSelf, type TokenVerifier } from "../auth/jwt.ts";
import type { Config } from "../config.ts";
import { ForbiddenError, ValidationError } from "../errors.ts";
import { deviceProblemExamples } from "../devices/model.ts";
import { problemExample, problemResponses } from "../http/openapi.ts";
import type { Throttle } from "../rate-limit/throttle.ts";
import type { Metrics } from "../metrics/registry.ts";
import type { CountWatch } from "./count-watch.ts";
import { CountQuery, Inventory, InventoryByDevice, LastResortBody, UploadBody, UploadResult } from "./model.ts";
import type { CoinService } from "./service.ts";
import { checkShapes } from "./shapes.ts";

export interface CoinsDeps {
  coins: CoinService;
  countWatch: CountWatch;
  verify: TokenVerifier;
  throttle: Throttle;
  metrics?: Metrics;
  config: Config;
  holdOpen?: (request: Request, seconds: number) => void;
}

/** Upload, count and last-resort coins: the owner's side (claims are in ../claims/controller.ts). */
export const coinsController = ({ coins, countWatch, verify, throttle, metrics, config, holdOpen }: CoinsDeps) =>
  new Elysia({ prefix: "/v1/coins" })
    .use(authenticated(verify))
    .post("/upload", async ({ body, caller, set, request }) => {
      Object.assign(set.headers, throttle("upload", caller.userId));
      requireSelf(caller, body.user_id, "user_id");
      checkShapes(body.coins, config.AQM_TIER_SIZES);
      const { inserted, duplicates, insertedByTier } = await coins.uploadCoins(caller.userId, caller.deviceId, body.coins, { signal: request.signal });
      for (const [tier, n] of Object.entries(insertedByTier)) metrics?.uploaded.inc({ tier }, n);
      return { inserted, duplicates };
    }, {
      body: UploadBody,
      parse: "json", // for the OpenAPI media type; the bounded parser in http/body.ts runs first
      response: { 200: UploadResult, ...problemResponses(400, 401, 403, 409, 413, 415, 422, 429, 503) },
      detail: {
        tags: ["coins"], summary: "Upload a batch of your own coins (1–100), atomically",
        description: "Identical re-uploads count as duplicates; a key_id reused with other content is a 409 and nothing is written. "
          + "Blob sizes must match the tier (GOLD: 1,184 B key, 2,420/3,309/4,627 B signature; SILVER: 1,184 B key, 64 B signature; BRONZE: 32 B key, 64 B signature).",
      },
    })
    .put("/last-resort", async ({ body, caller, set, request }) => {
      Object.assign(set.headers, throttle("upload", caller.userId));
      const seen = new Set<string>();
      body.coins.forEach((coin, i) => {
        if (seen.has(coin.coin_category)) {
          throw new ValidationError("At most one last-resort coin per tier", [{ field: `coins[${i}].coin_category`, message: `${coin.coin_category} appears twice` }]);
        }
        seen.add(coin.coin_category);
      });
      checkShapes(body.coins, config.AQM_TIER_SIZES);
      await coins.putLastResort(caller.userId, caller.deviceId, body.coins, { signal: request.signal });
      set.headers["cache-control"] = "no-store";
      return coins.getInventoryCount(caller.userId, caller.deviceId, { signal: request.signal });
    }, {
      body: LastResortBody,
      parse: "json",
      response: { 200: Inventory, ...problemResponses(400, 401, 413, 415, 422, 429, 503), 409: problemExample(deviceProblemExamples.deviceLimit) },
      detail: {
        tags: ["coins"], summary: "Store your last-resort coin of each tier sent (replacing the previous one)",
        description: "A last-resort coin is reusable: a claim that allows it gets it when the tier has nothing left, and never deletes it. Answers your counts.",
      },
    })
    .get("/count", async ({ query, caller, set, request }) => {
      Object.assign(set.headers, throttle("count", caller.userId));
      const userId = query.user_id?.toLowerCase() ?? caller.userId;
      const polling = query.below !== undefined || query.wait_ms !== undefined;
      if (userId !== caller.userId && (polling || config.AQM_COUNT_VISIBILITY === "self")) {
        throw new ForbiddenError(polling ? "Only your own inventory can be long-polled" : "This server only shows users their own counts");
      }
      set.headers["cache-control"] = "no-store";
      if (polling && query.below !== undefined && (query.wait_ms ?? 0) > 0) {
        holdOpen?.(request, Math.ceil(query.wait_ms! / 1000) + 10);
        return countWatch(userId, caller.deviceId, query.below, query.wait_ms!, request.signal);
      }
      if (query.user_id !== undefined && !polling) return coins.getInventoryByDevice(userId, { signal: request.signal });
      return coins.getInventoryCount(userId, caller.deviceId, { signal: request.signal });
    }, {
      query: CountQuery,
      response: { 200: t.Union([Inventory, InventoryByDevice]), ...problemResponses(401, 403, 422, 429, 503) },
      detail: {
        tags: ["coins"], summary: "Available coins per tier: your device's, or with user_id a user's, summed and per device; long-poll your own with below and wait_ms",
        description: "Without user_id: the token's device. With user_id (yourself or, where counts of others are visible, anyone): the sums over the user's devices and a `devices` list. "
          + "With `below=N&wait_ms=…` (your own device only) the answer comes as soon as any tier of your device has fewer than N coins — whichever route or instance took them — or at the deadline.",
      },
    });
