// Entry point for Bun: opens the database (embedded by default), serves the app, shuts down cleanly.
import { createApp } from "./app.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { openDatabase } from "./db/open.ts";
import { loadAuthKeys } from "./auth/keys.ts";

let config, keys;
try {
  config = loadConfig();
  keys = await loadAuthKeys(config);
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`aqm: configuration error: ${error.message}`);
    process.exit(2);
  }
  throw error;
}

const db = await openDatabase(config);
const app = createApp({ sql: db.sql, config, keys });
if (config.AQM_RATE_LIMITS === "off") {
  console.warn("aqm: WARNING: AQM_RATE_LIMITS=off — no per-user rate limits and no pair quota. Anyone may drain anyone's coins. Benchmarks only.");
}
if (keys.source === "development secret") {
  console.warn(`aqm: no AQM_JWT_SECRET or AQM_JWT_PUBLIC_KEY; using the development secret in ${config.AQM_DATA_DIR}/jwt-secret (bun run token <user-uuid>)`);
}
// The app itself answers 413 for bodies over 1 MiB; this is Bun's backstop for anything larger.
const server = Bun.serve({ port: config.PORT, hostname: config.HOST, fetch: app.fetch, maxRequestBodySize: 2 * 1024 * 1024 });
console.log(JSON.stringify({
  msg: "listening", url: `http://${server.hostname}:${server.port}`, database: db.embedded ? "embedded" : "DATABASE_URL",
}));

let stopping = false;
async function shutdown(signal: string) {
  if (stopping) return;
  stopping = true;
  console.log(JSON.stringify({ msg: "shutting down", signal }));
  await server.stop();
  await db.close();
  process.exit(0);
}
process.on("SIGTERM", () => void shutdown("SIGTERM"));
process.on("SIGINT", () => void shutdown("SIGINT"));
