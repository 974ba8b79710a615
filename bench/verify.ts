// Uploads with signature verification (issue 20): coins/s of devices with registered identity keys
// (every coin verified: Ed25519 for SILVER and BRONZE, the device's ML-DSA set for GOLD) beside
// devices without keys (stored unverified, AQM_VERIFY_SIGNATURES=registered, the default), on the
// `default` server, interleaved in one run. See bench/README.md, "Uploads with verification".
import { randomBytes, randomUUID } from "node:crypto";
import type { Coin } from "../src/coins/model.ts";
import { typicalSizes, type Tier } from "../src/coins/tiers.ts";
import { mlDsaSets, mlDsaSizes } from "../src/devices/signatures.ts";
import { deviceIdentity, signedCoin, type DeviceIdentity } from "../tests/helpers/identity.ts";
import { signTokens } from "./client.ts";
import { closedLoop, type Job } from "./load.ts";
import { log, measure, type Bench } from "./phases.ts";
import type { Row } from "./report.ts";

/** Uploaders per group; each (uploader, body) pair is sent once, so bodies are reused across uploaders. */
const uploaders = 400;
/** Distinct identities (key pairs) per verified group; uploader u registers identity u % n. */
const edIdentities = 4;
const goldIdentities = 2;
/** Coins per upload: 100 for SILVER and BRONZE (as the upload phase), 10 for GOLD (20–50 ms of ML-DSA verification each here). */
const batchOf: Record<Tier, number> = { GOLD: 10, SILVER: 100, BRONZE: 100 };
/** Assumed highest rates, uploads/s, to size the bodies (a pair used up is an error "exhausted", logged). */
const maxUploadsPerS = { edVerified: 400, edUnverified: 1000, goldVerified: 100, goldUnverified: 1000 }; // BRONZE unverified ran 760/s (2026-12-05)
/** SILVER/BRONZE segments per variant: interleaved (verified, unverified) then (unverified, verified). */
const rounds = 2;

/** What a group of uploaders sends: bodies[identity][i], and the tokens of its uploaders. */
interface Source {
  tokens: string[];
  bodies: string[][];
  next: number;
}

const bodyOf = (coins: Coin[]) => JSON.stringify({ coins });

/** A coin of the tier's wire sizes with random signature bytes (`signature` bytes: GOLD's set). */
function unsignedCoin(tier: Tier, signature = typicalSizes[tier].sig): Coin {
  return {
    key_id: randomUUID(), coin_category: tier,
    public_key_b64: randomBytes(typicalSizes[tier].key).toString("base64"), signature_b64: randomBytes(signature).toString("base64"),
  };
}

/**
 * Bodies per identity (each uploader sends its identity's bodies in turn, each once) for
 * `segments` segments at `rate` uploads/s with half again as margin.
 */
function bodiesPerIdentity(b: Bench, rate: number, segments: number, minimum = 1): number {
  const { warmupS, durationS } = b.options;
  return Math.max(minimum, Math.ceil((rate * (warmupS + durationS) * segments * 1.5) / uploaders));
}

/** Round robin over uploaders, then over bodies: uploader u sends its identity's bodies in order, each once. */
function uploadJob(baseUrl: string, source: Source): Job {
  return async () => {
    const k = source.next++;
    const u = k % source.tokens.length;
    const bodies = source.bodies[u % source.bodies.length]!;
    const body = bodies[Math.floor(k / source.tokens.length)];
    if (body === undefined) return { ok: false, coins: 0, error: "exhausted" };
    const response = await fetch(`${baseUrl}/v1/coins/upload`, {
      method: "POST", headers: { authorization: `Bearer ${source.tokens[u]}`, "content-type": "application/json" }, body, signal: AbortSignal.timeout(60_000),
    });
    if (!response.ok) {
      await response.arrayBuffer();
      return { ok: false, coins: 0, error: String(response.status) };
    }
    const { inserted } = (await response.json()) as { inserted: number };
    return { ok: true, coins: inserted };
  };
}

/** `n` new uploaders (tokens for device 1); with identities, uploader u registers identities[u % n] (PUT /v1/devices/1), else only its device row is created. */
async function uploaderGroup(b: Bench, identities: DeviceIdentity[] | null): Promise<string[]> {
  const users = Array.from({ length: uploaders }, () => randomUUID());
  const tokens = await signTokens(b.stack.secret, users, 6 * 3600);
  const baseUrl = b.stack.servers.default!.baseUrl;
  if (identities === null) {
    // a device that uploaded before (no keys): the row exists, as for the verified uploaders
    await b.sql`INSERT INTO device (user_id, device_id) SELECT u, 1 FROM unnest(${users}::uuid[]) AS u`;
  } else {
    for (let from = 0; from < users.length; from += 50) {
      await Promise.all(users.slice(from, from + 50).map(async (user, i) => {
        const identity = identities[(from + i) % identities.length]!;
        const response = await fetch(`${baseUrl}/v1/devices/1`, {
          method: "PUT", headers: { authorization: `Bearer ${tokens.get(user)}`, "content-type": "application/json" },
          body: JSON.stringify({ ed25519_b64: identity.ed25519_b64, ml_dsa_b64: identity.mlDsa_b64, ml_dsa: identity.set }),
        });
        if (response.status !== 200) throw new Error(`PUT /v1/devices/1 answered ${response.status}: ${await response.text()}`);
      }));
    }
  }
  return users.map((u) => tokens.get(u)!);
}

async function signedBodies(identities: DeviceIdentity[], tier: Tier, perIdentity: number): Promise<string[][]> {
  const out: string[][] = [];
  for (const identity of identities) {
    const bodies: string[] = [];
    for (let i = 0; i < perIdentity; i++) {
      const coins: Coin[] = [];
      for (let c = 0; c < batchOf[tier]; c++) coins.push(await signedCoin(identity, tier));
      bodies.push(bodyOf(coins));
    }
    out.push(bodies);
  }
  return out;
}

const unsignedBodies = (tier: Tier, n: number, signature?: number) =>
  [Array.from({ length: n }, () => bodyOf(Array.from({ length: batchOf[tier] }, () => unsignedCoin(tier, signature))))];

/** One closed-loop segment of uploads by `source`'s uploaders, with its own warm-up, as a `default` row. */
async function segment(b: Bench, phase: string, mode: string, source: Source): Promise<Row> {
  const job = uploadJob(b.stack.servers.default!.baseUrl, source);
  await closedLoop(job, b.options.concurrency, b.options.warmupS);
  const row = await measure(b, "default", phase, mode, () => closedLoop(job, b.options.concurrency, b.options.durationS));
  if (row.errorKinds.exhausted) log(`        (${row.errorKinds.exhausted} uploads found no unsent body: raise maxUploadsPerS in bench/verify.ts)`);
  return row;
}

/**
 * SILVER and BRONZE, verified (uploaders with keys) and unverified (uploaders without), in
 * `rounds` rounds alternating which goes first; then GOLD, per ML-DSA set, verified then
 * unverified (random signature bytes of that set's size). Every body is built before the first
 * segment: signing is not timed, and both variants send prebuilt strings.
 */
export async function verifyPhase(b: Bench): Promise<void> {
  if (!b.stack.servers.default) return;
  const started = performance.now();
  const c = b.options.concurrency;
  const ed = await Promise.all(Array.from({ length: edIdentities }, () => deviceIdentity("ML-DSA-65")));
  const edTiers = ["SILVER", "BRONZE"] as const;
  const edPer = bodiesPerIdentity(b, maxUploadsPerS.edVerified, rounds);
  const unverifiedPer = bodiesPerIdentity(b, maxUploadsPerS.edUnverified, rounds);
  const [verifiedTokens, unverifiedTokens] = [await uploaderGroup(b, ed), await uploaderGroup(b, null)];
  const sources: Record<string, Source> = {};
  for (const tier of edTiers) {
    sources[`${tier} verified`] = { tokens: verifiedTokens, bodies: await signedBodies(ed, tier, edPer), next: 0 };
    sources[`${tier} unverified`] = { tokens: unverifiedTokens, bodies: unsignedBodies(tier, unverifiedPer), next: 0 };
  }
  const goldPer = bodiesPerIdentity(b, maxUploadsPerS.goldVerified, 1, 10);
  const goldUnverifiedPer = bodiesPerIdentity(b, maxUploadsPerS.goldUnverified, 1);
  for (const set of mlDsaSets) {
    const identities = await Promise.all(Array.from({ length: goldIdentities }, () => deviceIdentity(set)));
    sources[`GOLD ${set} verified`] = { tokens: await uploaderGroup(b, identities), bodies: await signedBodies(identities, "GOLD", goldPer), next: 0 };
    // GOLD's unverified uploaders are new too: SILVER/BRONZE ones hold many coins by now
    sources[`GOLD ${set} unverified`] = { tokens: await uploaderGroup(b, null), bodies: unsignedBodies("GOLD", goldUnverifiedPer, mlDsaSizes[set].signature), next: 0 };
  }
  const signed = edIdentities * edPer * edTiers.length * batchOf.SILVER;
  log(`verify: ${signed.toLocaleString("en-US")} Ed25519 and ${(mlDsaSets.length * goldIdentities * goldPer * batchOf.GOLD).toLocaleString("en-US")} ML-DSA signatures made in ${((performance.now() - started) / 1000).toFixed(1)} s (not timed)`);
  for (let round = 1; round <= rounds; round++) {
    for (const tier of edTiers) {
      const order = round % 2 === 1 ? ["verified", "unverified"] : ["unverified", "verified"];
      for (const variant of order) await segment(b, `upload ${tier} ${variant}`, `closed c=${c}, ${batchOf[tier]}/upload, #${round}`, sources[`${tier} ${variant}`]!);
    }
  }
  for (const set of mlDsaSets) {
    for (const variant of ["verified", "unverified"]) await segment(b, `upload GOLD ${set} ${variant}`, `closed c=${c}, ${batchOf.GOLD}/upload`, sources[`GOLD ${set} ${variant}`]!);
  }
}
