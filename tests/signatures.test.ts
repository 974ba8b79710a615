// Coin signatures (issue 20): known answers from RFC 8032, Wycheproof and NIST ACVP
// (tests/fixtures/signature-vectors.json says where each came from), then verifyCoins.
import { afterAll, describe, expect, test } from "bun:test";
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import type { Tier } from "../src/coins/tiers.ts";
import {
  closeVerifiers, coinMessage, mlDsaSets, mlDsaSizes, validEd25519Key, validMlDsaKey, verifierThreads,
  verifyCoins, verifyEd25519, verifyMlDsa, verifyMlDsaMany, type MlDsaSet, type SignedCoin,
} from "../src/devices/signatures.ts";
import vectors from "./fixtures/signature-vectors.json";
import { decodedCoin, deviceIdentity, signedCoin, type DeviceIdentity } from "./helpers/identity.ts";

afterAll(() => closeVerifiers());

const hex = (text: string) => new Uint8Array(Buffer.from(text, "hex"));
const flipped = (bytes: Uint8Array, at: number) => {
  const copy = bytes.slice();
  copy[at]! ^= 1;
  return copy;
};
const noble = { "ML-DSA-44": ml_dsa44, "ML-DSA-65": ml_dsa65, "ML-DSA-87": ml_dsa87 } as const;

describe("known answers", () => {
  for (const v of vectors.ed25519) {
    test(`Ed25519, RFC 8032 ${v.name}`, async () => {
      const [publicKey, message, signature] = [hex(v.publicKey), hex(v.message), hex(v.signature)];
      expect(await verifyEd25519(publicKey, message, signature)).toBe(true);
      expect(await validEd25519Key(publicKey)).toBe(true);
      for (const at of [0, 31, 32, 63]) expect(await verifyEd25519(publicKey, message, flipped(signature, at))).toBe(false);
      const otherMessage = message.length ? flipped(message, message.length - 1) : Uint8Array.of(0);
      expect(await verifyEd25519(publicKey, otherMessage, signature)).toBe(false);
      expect(await verifyEd25519(flipped(publicKey, 0), message, signature)).toBe(false);
    });
  }

  for (const v of vectors.mlDsa) {
    const set = v.set as MlDsaSet;
    const [publicKey, message, signature, context] = [hex(v.publicKey), hex(v.message), hex(v.signature), hex(v.context)];
    if (context.length === 0) {
      test(`${set}, ${v.source} ${v.name}: ${v.valid ? "verifies" : "does not verify"}, here and in the worker`, async () => {
        expect(verifyMlDsa(set, publicKey, message, signature)).toBe(v.valid);
        expect(await verifyMlDsaMany(set, publicKey, [message], [signature])).toEqual([v.valid]);
        if (v.valid) expect(verifyMlDsa(set, publicKey, message, flipped(signature, signature.length >> 1))).toBe(false);
      });
    } else {
      // ACVP's pure vectors all carry a context; the coins' signatures have none.
      test(`${set}, ${v.source} ${v.name}: with its ${context.length}-byte context ${v.valid ? "verifies" : "does not"}; without, not`, () => {
        expect(noble[set].verify(signature, message, publicKey, { context })).toBe(v.valid);
        expect(verifyMlDsa(set, publicKey, message, signature)).toBe(false);
      });
    }
  }

  test("the ML-DSA sizes are FIPS 204's, and the library's", () => {
    expect(mlDsaSets).toEqual(["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"]);
    for (const set of mlDsaSets) {
      expect(mlDsaSizes[set]).toEqual({ publicKey: noble[set].lengths.publicKey!, signature: noble[set].lengths.signature! });
    }
    expect(mlDsaSizes["ML-DSA-65"]).toEqual({ publicKey: 1952, signature: 3309 });
  });
});

test("a coin's signed bytes: UTF-8 'aqm-coin-v1:<tier>:<key_id>:' then the raw public key", () => {
  const message = coinMessage("SILVER", "k-1.é", Uint8Array.of(0, 1, 255));
  expect([...message]).toEqual([...Buffer.from("aqm-coin-v1:SILVER:k-1.é:", "utf8"), 0, 1, 255]);
});

describe("registration keys", () => {
  test("Ed25519: 32 bytes that encode a curve point", async () => {
    const device = await deviceIdentity("ML-DSA-44", "registration");
    expect(await validEd25519Key(device.ed25519)).toBe(true);
    expect(await validEd25519Key(device.ed25519.subarray(0, 31))).toBe(false);
    expect(await validEd25519Key(new Uint8Array([...device.ed25519, 0]))).toBe(false);
    expect(await validEd25519Key(new Uint8Array(0))).toBe(false);
    // y = 2^255 - 1 is not below the field prime (WebCrypto itself imports it)
    expect(await validEd25519Key(new Uint8Array(32).fill(0xff))).toBe(false);
    // y = 2: (y² − 1) / (d·y² + 1) has no square root
    expect(await validEd25519Key(Uint8Array.of(2, ...new Uint8Array(31)))).toBe(false);
  });

  test("ML-DSA: exactly its set's public key size", () => {
    for (const set of mlDsaSets) {
      expect(validMlDsaKey(set, new Uint8Array(mlDsaSizes[set].publicKey))).toBe(true);
      expect(validMlDsaKey(set, new Uint8Array(mlDsaSizes[set].publicKey - 1))).toBe(false);
      expect(validMlDsaKey(set, new Uint8Array(mlDsaSizes[set].publicKey + 1))).toBe(false);
    }
    expect(validMlDsaKey("ML-DSA-65", new Uint8Array(mlDsaSizes["ML-DSA-44"].publicKey))).toBe(false);
  });
});

describe("verifyCoins", () => {
  const coin = async (device: DeviceIdentity, tier: Tier, keyId?: string) => decodedCoin(await signedCoin(device, tier, keyId));
  const me = () => deviceIdentity("ML-DSA-65", "me");

  test("valid coins of every tier and every ML-DSA set verify", async () => {
    for (const set of mlDsaSets) {
      const device = await deviceIdentity(set, "every-tier");
      const coins = [await coin(device, "GOLD"), await coin(device, "SILVER"), await coin(device, "BRONZE"), await coin(device, "GOLD")];
      expect(coins.map((c) => c.signature.length)).toEqual([mlDsaSizes[set].signature, 64, 64, mlDsaSizes[set].signature]);
      expect(coins.map((c) => c.publicKey.length)).toEqual([1184, 1184, 32, 1184]);
      expect(await verifyCoins(device.keys, coins)).toEqual([]);
    }
    expect(await verifyCoins((await me()).keys, [])).toEqual([]);
  });

  test("a tampered signature is reported, wherever the flipped bit", async () => {
    const device = await me();
    const coins = [await coin(device, "BRONZE", "good")];
    for (const tier of ["GOLD", "SILVER", "BRONZE"] as const) {
      for (const at of ["first", "middle", "last"]) {
        const c = await coin(device, tier, `${tier}-${at}`);
        const index = { first: 0, middle: c.signature.length >> 1, last: c.signature.length - 1 }[at]!;
        coins.push({ ...c, signature: flipped(c.signature, index) });
      }
    }
    expect(await verifyCoins(device.keys, coins)).toEqual(coins.slice(1).map((c) => c.key_id));
  });

  test("a signature by another device's key is reported", async () => {
    const [device, other] = [await me(), await deviceIdentity("ML-DSA-65", "other")];
    const coins = [await coin(device, "GOLD", "mine"), await coin(other, "GOLD", "g"), await coin(other, "SILVER", "s"), await coin(other, "BRONZE", "b")];
    expect(await verifyCoins(device.keys, coins)).toEqual(["g", "s", "b"]);
    expect(await verifyCoins(other.keys, coins)).toEqual(["mine"]);
  });

  test("a signature by the key of another tier is reported", async () => {
    const device = await me();
    const sign = (c: SignedCoin) => coinMessage(c.coin_category, c.key_id, c.publicKey);
    const gold = await coin(device, "GOLD", "gold-by-ed25519");
    const silver = await coin(device, "SILVER", "silver-by-ml-dsa");
    const bronze = await coin(device, "BRONZE", "bronze-by-ml-dsa-cut");
    const coins = [
      { ...gold, signature: await device.signEd25519(sign(gold)) },
      { ...silver, signature: device.signMlDsa(sign(silver)) },
      { ...bronze, signature: device.signMlDsa(sign(bronze)).subarray(0, 64) },
      await coin(device, "SILVER", "fine"),
    ];
    expect(await verifyCoins(device.keys, coins)).toEqual(["gold-by-ed25519", "silver-by-ml-dsa", "bronze-by-ml-dsa-cut"]);
  });

  test("a signature over another coin's bytes (key_id, tier, public key) is reported", async () => {
    const device = await me();
    const [a, b] = [await coin(device, "SILVER", "a"), await coin(device, "SILVER", "b")];
    const [g1, g2] = [await coin(device, "GOLD", "g1"), await coin(device, "GOLD", "g2")];
    const bronze = await coin(device, "BRONZE", "bronze");
    const coins: SignedCoin[] = [
      { ...a, signature: b.signature }, // signed for key_id b
      { ...g1, key_id: "g1-renamed" },
      { ...g2, publicKey: flipped(g2.publicKey, 100) },
      { ...bronze, publicKey: flipped(bronze.publicKey, 31) },
      { ...a, key_id: "a-as-bronze", coin_category: "BRONZE" }, // signed as SILVER "a"
      { ...(await coin(device, "SILVER", "as-bronze")), coin_category: "BRONZE" },
      { ...(await coin(device, "BRONZE", "as-silver")), coin_category: "SILVER" },
      b,
    ];
    expect(await verifyCoins(device.keys, coins)).toEqual(["a", "g1-renamed", "g2", "bronze", "a-as-bronze", "as-bronze", "as-silver"]);
  });

  test("signatures of the wrong length are reported, not thrown at", async () => {
    const device = await me();
    const [silver, gold] = [await coin(device, "SILVER", "s"), await coin(device, "GOLD", "g")];
    const gold44 = await coin(await deviceIdentity("ML-DSA-44", "me"), "GOLD", "g44");
    const coins: SignedCoin[] = [
      { ...silver, key_id: "s-63", signature: silver.signature.subarray(0, 63) },
      { ...silver, key_id: "s-65", signature: new Uint8Array([...silver.signature, 0]) },
      { ...silver, key_id: "s-0", signature: new Uint8Array(0) },
      { ...gold, key_id: "g-short", signature: gold.signature.subarray(0, 3308) },
      { ...gold, key_id: "g-long", signature: new Uint8Array([...gold.signature, 0]) },
      { ...gold, key_id: "g-0", signature: new Uint8Array(0) },
      gold44, // an ML-DSA-44 signature (2,420 B) for an ML-DSA-65 device
      { ...gold, key_id: "g-zeros", signature: new Uint8Array(3309) },
      { ...silver, key_id: "s-zeros", signature: new Uint8Array(64) },
      { ...gold, key_id: "g-ff", signature: new Uint8Array(3309).fill(0xff) },
      { ...silver, key_id: "s-ff", signature: new Uint8Array(64).fill(0xff) },
    ];
    expect(await verifyCoins(device.keys, coins)).toEqual(coins.map((c) => c.key_id));
  });

  test("what the device's keys cannot check is reported: GOLD without an ML-DSA key, and the like", async () => {
    const device = await me();
    const coins = [await coin(device, "GOLD", "g"), await coin(device, "SILVER", "s"), await coin(device, "BRONZE", "b")];
    expect(await verifyCoins({ ...device.keys, mlDsa: null, mlDsaSet: null }, coins)).toEqual(["g"]);
    expect(await verifyCoins({ ...device.keys, mlDsaSet: null }, coins)).toEqual(["g"]);
    expect(await verifyCoins({ ...device.keys, mlDsaSet: "ML-DSA-87" }, coins)).toEqual(["g"]);
    expect(await verifyCoins({ ...device.keys, mlDsa: device.mlDsa.subarray(1) }, coins)).toEqual(["g"]);
    expect(await verifyCoins({ ...device.keys, ed25519: null }, coins)).toEqual(["s", "b"]);
    expect(await verifyCoins({ ...device.keys, ed25519: device.ed25519.subarray(1) }, coins)).toEqual(["s", "b"]);
    expect(await verifyCoins({ ...device.keys, ed25519: new Uint8Array(32).fill(0xff) }, coins)).toEqual(["s", "b"]);
    expect(await verifyCoins({ ed25519: null, mlDsa: null, mlDsaSet: null }, coins)).toEqual(["g", "s", "b"]);
  });

  test("a key_id is reported once, in the order of the input", async () => {
    const device = await me();
    const [x, y, z] = [await coin(device, "BRONZE", "x"), await coin(device, "GOLD", "y"), await coin(device, "SILVER", "z")];
    const badY = { ...y, signature: flipped(y.signature, 0) };
    const badZ = { ...z, signature: flipped(z.signature, 0) };
    expect(await verifyCoins(device.keys, [badZ, x, y, badY, badZ, x])).toEqual(["z", "y"]);
    expect(await verifyCoins(device.keys, [x, x, y, y])).toEqual([]);
  });

  test("100 GOLD coins are verified off the request thread: a timer fires all along", async () => {
    const device = await deviceIdentity("ML-DSA-65", "batch");
    const coins = await Promise.all(Array.from({ length: 100 }, () => coin(device, "GOLD")));
    coins[57] = { ...coins[57]!, signature: flipped(coins[57]!.signature, 9) };
    await verifyCoins(device.keys, coins.slice(0, 2)); // the verifiers start and load

    let ticks = 0;
    let running = true;
    const tick = () => { ticks++; if (running) setTimeout(tick, 0); };
    setTimeout(tick, 0);
    const started = performance.now();
    const rejected = await verifyCoins(device.keys, coins);
    const took = performance.now() - started;
    running = false;

    expect(rejected).toEqual([coins[57]!.key_id]);
    expect(verifierThreads()).toBeGreaterThan(0);
    // Verified here, the batch would take as long with no tick at all (about 3 ms a coin).
    expect(ticks).toBeGreaterThanOrEqual(10);
    console.log(`100 ML-DSA-65 coins: ${took.toFixed(0)} ms, ${ticks} timer ticks meanwhile, ${verifierThreads()} verifier thread(s)`);
  });

  test("after closeVerifiers the next GOLD coin starts them again", async () => {
    const device = await me();
    const coins = [await coin(device, "GOLD", "g")];
    closeVerifiers();
    expect(verifierThreads()).toBe(0);
    expect(await verifyCoins(device.keys, [{ ...coins[0]!, signature: flipped(coins[0]!.signature, 1) }])).toEqual(["g"]);
    expect(await verifyCoins(device.keys, coins)).toEqual([]);
    expect(verifierThreads()).toBeGreaterThan(0);
  });
});
