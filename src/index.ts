// Entry point for Bun: opens the database (embedded by default), serves the app, shuts down cleanly.
import { createApp } from "./app.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { openDatabase } from "./db/open.ts";

let config;
try {
  config = loadConfig();
} catch (error) {
  if (error instanceof ConfigError) {
    console.error(`aqm: configuration error: ${error.message}`);
    process.exit(2);
  }
  throw error;
}

const db = await openDatabase(config);
const app = createApp({ sql: db.sql, config });
const server = Bun.serve({ port: config.PORT, hostname: config.HOST, fetch: app.fetch });
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
