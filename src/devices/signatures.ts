// Verifying coin signatures against a device's registered identity keys (issue 20). SILVER and
// BRONZE coins carry an Ed25519 signature (WebCrypto), GOLD coins a pure ML-DSA one (FIPS 204,
// empty context) checked by @noble/post-quantum in worker threads (verify-worker.ts), so the
// milliseconds each one takes never hold up the request thread.
import { ml_dsa44, ml_dsa65, ml_dsa87 } from "@noble/post-quantum/ml-dsa.js";
import type { Tier } from "../coins/tiers.ts";

export const mlDsaSets = ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"] as const;
export type MlDsaSet = (typeof mlDsaSets)[number];

export const mlDsaSizes: Record<MlDsaSet, { publicKey: number; signature: number }> = {
  "ML-DSA-44": { publicKey: 1312, signature: 2420 },
  "ML-DSA-65": { publicKey: 1952, signature: 3309 },
  "ML-DSA-87": { publicKey: 2592, signature: 4627 },
};

const mlDsa = { "ML-DSA-44": ml_dsa44, "ML-DSA-65": ml_dsa65, "ML-DSA-87": ml_dsa87 } as const;

export const ed25519Sizes = { publicKey: 32, signature: 64 } as const;

export interface DeviceKeys {
  ed25519: Uint8Array | null;
  mlDsa: Uint8Array | null;
  mlDsaSet: MlDsaSet | null;
}

export interface SignedCoin {
  key_id: string;
  coin_category: Tier;
  publicKey: Uint8Array;
  signature: Uint8Array;
}

const utf8 = new TextEncoder();

/** The bytes a coin's signature covers: UTF-8 "aqm-coin-v1:<tier>:<key_id>:" then the raw public key. */
export function coinMessage(tier: Tier, keyId: string, publicKey: Uint8Array): Uint8Array {
  const head = utf8.encode(`aqm-coin-v1:${tier}:${keyId}:`);
  const message = new Uint8Array(head.length + publicKey.length);
  message.set(head);
  message.set(publicKey, head.length);
  return message;
}

export function isMlDsaSet(name: unknown): name is MlDsaSet {
  return typeof name === "string" && (mlDsaSets as readonly string[]).includes(name);
}

/** Registration: an ML-DSA public key is any byte string of its set's size (every one decodes). */
export function validMlDsaKey(set: MlDsaSet, publicKey: Uint8Array): boolean {
  return publicKey.length === mlDsaSizes[set].publicKey;
}

/**
 * Registration: 32 bytes that encode a point of Ed25519 (RFC 8032 5.1.3) and that WebCrypto
 * imports. The decoding is checked here because Bun and Deno import any 32 bytes.
 */
export async function validEd25519Key(publicKey: Uint8Array): Promise<boolean> {
  return publicKey.length === ed25519Sizes.publicKey && decodesEd25519Point(publicKey)
    && (await ed25519Key(publicKey)) !== null;
}

const p = 2n ** 255n - 19n;
const mod = (a: bigint) => ((a % p) + p) % p;
function pow(base: bigint, exponent: bigint): bigint {
  let result = 1n;
  for (let b = mod(base), e = exponent; e > 0n; e >>= 1n, b = (b * b) % p) if (e & 1n) result = (result * b) % p;
  return result;
}

function decodesEd25519Point(encoded: Uint8Array): boolean {
  let y = 0n;
  for (let i = encoded.length - 1; i >= 0; i--) y = (y << 8n) | BigInt(encoded[i]!);
  const xOdd = y >> 255n === 1n;
  y &= (1n << 255n) - 1n;
  if (y >= p) return false;
  // x² = (y² − 1) / (d·y² + 1) must have a root; x = 0 has no odd twin.
  const d = mod(-121665n * pow(121666n, p - 2n));
  const u = mod(y * y - 1n);
  const v = mod(d * y * y + 1n);
  const x = mod(u * pow(v, 3n) * pow(u * pow(v, 7n), (p - 5n) / 8n));
  const vx2 = mod(v * x * x);
  if (vx2 !== u && vx2 !== mod(-u)) return false;
  return !(u === 0n && xOdd);
}

/** Pure ML-DSA with an empty context. Never throws: malformed input does not verify. */
export function verifyMlDsa(set: MlDsaSet, publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  const { publicKey: keyBytes, signature: signatureBytes } = mlDsaSizes[set];
  if (publicKey.length !== keyBytes || signature.length !== signatureBytes) return false;
  try {
    return mlDsa[set].verify(signature, message, publicKey);
  } catch {
    return false;
  }
}

// Imported keys by their bytes: a device's uploads reuse one key, and importing costs as much as
// a verification. Bounded; the oldest entry goes first.
const keyCache = new Map<string, Promise<CryptoKey | null>>();
const keyCacheSize = 256;

function ed25519Key(publicKey: Uint8Array): Promise<CryptoKey | null> {
  const id = String.fromCharCode(...publicKey);
  let key = keyCache.get(id);
  if (!key) {
    key = crypto.subtle.importKey("raw", new Uint8Array(publicKey), { name: "Ed25519" }, false, ["verify"])
      .catch(() => null);
    if (keyCache.size >= keyCacheSize) keyCache.delete(keyCache.keys().next().value!);
    keyCache.set(id, key);
  }
  return key;
}

/** Never throws: a key WebCrypto refuses, or a malformed signature, does not verify. */
export async function verifyEd25519(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
  if (publicKey.length !== ed25519Sizes.publicKey || signature.length !== ed25519Sizes.signature) return false;
  const key = await ed25519Key(publicKey);
  if (!key) return false;
  try {
    return await crypto.subtle.verify("Ed25519", key, new Uint8Array(signature), new Uint8Array(message));
  } catch {
    return false;
  }
}

/**
 * The key_ids, in input order and each once, of the coins whose signature does not verify against
 * the device's keys: wrong length, another key, another tier's key, other bytes, or a GOLD coin
 * from a device without an ML-DSA key. Never throws for malformed bytes.
 */
export async function verifyCoins(keys: DeviceKeys, coins: SignedCoin[]): Promise<string[]> {
  const valid = coins.map(() => false);
  const checks: Promise<void>[] = [];
  const gold: number[] = [];
  const goldMessages: Uint8Array[] = [];
  coins.forEach((coin, i) => {
    const message = coinMessage(coin.coin_category, coin.key_id, coin.publicKey);
    if (coin.coin_category === "GOLD") {
      gold.push(i);
      goldMessages.push(message);
    } else if ((coin.coin_category === "SILVER" || coin.coin_category === "BRONZE") && keys.ed25519) {
      checks.push(verifyEd25519(keys.ed25519, message, coin.signature).then((ok) => { valid[i] = ok; }));
    }
  });
  const { mlDsa: key, mlDsaSet: set } = keys;
  if (gold.length > 0 && key && set) {
    const signatures = gold.map((i) => coins[i]!.signature);
    checks.push(verifyMlDsaMany(set, key, goldMessages, signatures).then((results) => {
      results.forEach((ok, j) => { valid[gold[j]!] = ok; });
    }));
  }
  await Promise.all(checks);
  const failed = new Set<string>();
  coins.forEach((coin, i) => { if (!valid[i]) failed.add(coin.key_id); });
  return [...failed];
}

// The ML-DSA verifiers: worker threads, started on first need, unref'd while idle so they never
// keep a process alive. Without them (a worker cannot start or load) verification runs here.

/** What verify-worker.ts is sent and answers. */
export interface VerifyRequest { id: number; set: MlDsaSet; publicKey: Uint8Array; messages: Uint8Array[]; signatures: Uint8Array[] }
export interface VerifyReply { id: number; valid: boolean[] }

interface Verifier {
  worker: Worker;
  /** Items sent and not answered: the least loaded verifier gets the next chunk. */
  load: number;
  jobs: Map<number, { size: number; done: (valid: boolean[] | null) => void }>;
}

// One thread on a two-core machine, so the request thread keeps a core; two on more.
const poolSize = Math.min(2, Math.max(1, (navigator.hardwareConcurrency || 2) - 1));

// In a `bun build --compile` executable every module's import.meta.url is the executable's
// (file:///$bunfs/root/<name>), and the worker is there only when the build names it as an
// entrypoint, under its path from the entrypoints' common folder (src/); otherwise it fails to load
// and verification runs here.
const workerUrl = import.meta.url.includes("/$bunfs/")
  ? new URL("./devices/verify-worker.ts", import.meta.url)
  : new URL("./verify-worker.ts", import.meta.url);

let verifiers: Verifier[] | null = null;
let jobIds = 0;

/** Verifies each message's signature, in workers when they run, else here between timer turns. */
export async function verifyMlDsaMany(
  set: MlDsaSet, publicKey: Uint8Array, messages: Uint8Array[], signatures: Uint8Array[],
): Promise<boolean[]> {
  if (publicKey.length !== mlDsaSizes[set].publicKey) return messages.map(() => false);
  const todo = messages.flatMap((_, i) => (signatures[i]?.length === mlDsaSizes[set].signature ? [i] : []));
  const valid = messages.map(() => false);
  const pool = startVerifiers();
  const chunk = Math.ceil(todo.length / Math.max(pool.length, 1));
  const parts: Promise<void>[] = [];
  for (let from = 0; from < todo.length; from += chunk) {
    const part = todo.slice(from, from + chunk);
    const request = { set, publicKey, messages: part.map((i) => messages[i]!), signatures: part.map((i) => signatures[i]!) };
    parts.push(runRequest(request).then((results) => { part.forEach((i, j) => { valid[i] = results[j] === true; }); }));
  }
  await Promise.all(parts);
  return valid;
}

async function runRequest(request: Omit<VerifyRequest, "id">): Promise<boolean[]> {
  const pool = startVerifiers();
  const verifier = pool.reduce<Verifier | undefined>((best, v) => (best && best.load <= v.load ? best : v), undefined);
  if (verifier) {
    const answer = await new Promise<boolean[] | null>((done) => {
      const id = ++jobIds;
      if (verifier.jobs.size === 0) refWorker(verifier.worker, true);
      verifier.jobs.set(id, { size: request.messages.length, done });
      verifier.load += request.messages.length;
      try {
        verifier.worker.postMessage({ id, ...request } satisfies VerifyRequest);
      } catch {
        retire(verifier);
      }
    });
    if (answer) return answer;
  }
  return verifyHere(request);
}

async function verifyHere({ set, publicKey, messages, signatures }: Omit<VerifyRequest, "id">): Promise<boolean[]> {
  const valid: boolean[] = [];
  for (let i = 0; i < messages.length; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, 0));
    valid.push(verifyMlDsa(set, publicKey, messages[i]!, signatures[i]!));
  }
  return valid;
}

function startVerifiers(): Verifier[] {
  if (verifiers) return verifiers;
  verifiers = [];
  for (let i = 0; i < poolSize; i++) {
    let worker: Worker;
    try {
      worker = new Worker(workerUrl, { type: "module" });
    } catch (error) {
      fellBack(error);
      break;
    }
    const verifier: Verifier = { worker, load: 0, jobs: new Map() };
    refWorker(worker, false);
    worker.onmessage = ({ data }: MessageEvent<VerifyReply>) => {
      const job = verifier.jobs.get(data.id);
      if (!job) return;
      verifier.jobs.delete(data.id);
      verifier.load -= job.size;
      if (verifier.jobs.size === 0) refWorker(worker, false);
      job.done(data.valid);
    };
    // A worker that fails to load or breaks is dropped; what it held is verified here instead.
    worker.onerror = (event) => {
      event.preventDefault();
      fellBack(event.message);
      retire(verifier);
    };
    worker.onmessageerror = () => retire(verifier);
    verifiers.push(verifier);
  }
  return verifiers;
}

let warned = false;
/** Said once per process: GOLD uploads then hold up the requests around them (README, runbook: the signature worker). */
function fellBack(reason: unknown): void {
  if (warned) return;
  warned = true;
  console.error(JSON.stringify({
    time: new Date().toISOString(), level: "warn", msg: "the ML-DSA verifier thread could not run: GOLD signatures are verified on the request thread", error: String(reason).slice(0, 300),
  }));
}

function retire(verifier: Verifier): void {
  verifier.worker.terminate();
  verifiers = verifiers?.filter((v) => v !== verifier) ?? null;
  const jobs = [...verifier.jobs.values()];
  verifier.jobs.clear();
  for (const job of jobs) job.done(null);
}

/** Only Bun's workers can be unref'd; a pending verification holds its worker's ref. */
function refWorker(worker: Worker, ref: boolean): void {
  const handle = worker as Worker & { ref?: () => void; unref?: () => void };
  if (ref) handle.ref?.();
  else handle.unref?.();
}

/** How many verifier threads run (0 before the first GOLD coin, or when none could start). */
export function verifierThreads(): number {
  return verifiers?.length ?? 0;
}

/** Terminates the verifiers (at shutdown); verifications still pending finish here instead. */
export function closeVerifiers(): void {
  const pool = verifiers ?? [];
  verifiers = null;
  for (const verifier of pool) retire(verifier);
}
