// The start-up traps, as the real server process meets them: a secret Deno may not create, a
// PgBouncer the server does not know it is behind (issue 17), and commits a claim cannot rely on
// (synchronous_commit). Each ends with one line.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import postgres from "postgres";
import { commitRisk } from "../src/db/durability.ts";
import { createDatabase, databaseUrl, dropDatabase, useTestDatabase } from "./helpers/db.ts";
import { startPgBouncer, type PgBouncer } from "./helpers/pgbouncer.ts";
import { startServer } from "./helpers/server.ts";

const db = useTestDatabase();
const root = join(import.meta.dir, "..");
const jwtSecret = "start-secret-start-secret-start-secret-01";
const hashSecret = "start-hash-start-hash-start-hash-start-01";

/** Runs a command to its end; stderr without the runner's own echo (`deno task` prints "Task start …"). */
async function run(cmd: string[], env: Record<string, string>) {
  const proc = Bun.spawn(cmd, {
    cwd: root,
    env: { ...process.env, NO_COLOR: "1", AQM_LOG: "off", AQM_CRON: "off", HOST: "127.0.0.1", PORT: "0", AQM_JWT_SECRET: jwtSecret, ...env },
    stdout: "pipe", stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
  clearTimeout(timer);
  return { code, lines: stderr.split("\n").filter((l) => l && !l.startsWith("Task ")) };
}

describe("no AQM_HASH_SECRET", () => {
  test("deno task start (no file access) ends with one line naming AQM_HASH_SECRET and deno task dev, exit 2", async () => {
    const { code, lines } = await run(["deno", "task", "start"], { DATABASE_URL: db.directUrl, AQM_HASH_SECRET: "", AQM_DATA_DIR: "" });
    expect(lines).toEqual(["aqm: configuration error: AQM_HASH_SECRET is not set, and the development stand-in .data/hash-secret needs file access, "
      + "which deno task start does not allow: set AQM_HASH_SECRET (at least 32 characters), or use deno task dev, which allows the file"]);
    expect(code).toBe(2);
  }, 40_000);

  test("under Deno without any JWT key either, the JWT line comes first, the same way", async () => {
    const { code, lines } = await run(["deno", "task", "start"], { DATABASE_URL: db.directUrl, AQM_JWT_SECRET: "", AQM_HASH_SECRET: "" });
    expect(lines).toEqual(["aqm: configuration error: neither AQM_JWT_SECRET nor AQM_JWT_PUBLIC_KEY is set, and the development stand-in .data/jwt-secret "
      + "needs file access, which deno task start does not allow: set AQM_JWT_SECRET (at least 32 characters) or AQM_JWT_PUBLIC_KEY, or use deno task dev, which allows the file"]);
    expect(code).toBe(2);
  }, 40_000);

  test("under Bun a data directory that cannot hold the file ends with one line, exit 2", async () => {
    const dir = mkdtempSync(join(tmpdir(), "aqm-start-"));
    const notADirectory = join(dir, "file");
    writeFileSync(notADirectory, "");
    try {
      const { code, lines } = await run(["bun", "src/index.ts"], { DATABASE_URL: db.directUrl, AQM_HASH_SECRET: "", AQM_DATA_DIR: notADirectory });
      expect(lines).toEqual([`aqm: configuration error: AQM_HASH_SECRET is not set, and the development stand-in ${notADirectory}/hash-secret cannot be created `
        + `(EEXIST: file already exists, mkdir '${notADirectory}'): set AQM_HASH_SECRET (at least 32 characters), or point AQM_DATA_DIR at a writable directory`]);
      expect(code).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("with NODE_ENV=production, under Bun and under Deno, one line before any file is touched, exit 2", async () => {
    const env = { DATABASE_URL: db.directUrl, NODE_ENV: "production", AQM_HASH_SECRET: "" };
    const line = "aqm: configuration error: NODE_ENV=production needs AQM_HASH_SECRET (at least 32 bytes, the same on every instance)";
    for (const cmd of [["bun", "src/index.ts"], ["deno", "task", "start"]]) {
      const { code, lines } = await run(cmd, env);
      expect(lines, cmd.join(" ")).toEqual([line]);
      expect(code).toBe(2);
    }
  }, 60_000);
});

describe("behind PgBouncer in transaction mode without AQM_DB_POOLER=transaction", () => {
  let refusing: PgBouncer; // PgBouncer's default: the timeouts as startup parameters are refused
  let ignoring: PgBouncer; // ignore_startup_parameters: connects, then prepared statements collide
  beforeAll(async () => {
    refusing = await startPgBouncer(db.directUrl);
    ignoring = await startPgBouncer(db.directUrl, ["ignore_startup_parameters = statement_timeout,idle_in_transaction_session_timeout"]);
  });
  afterAll(async () => {
    await refusing?.stop();
    await ignoring?.stop();
  });
  const env = (url: string, direct: string) => ({ DATABASE_URL: url, AQM_DATABASE_DIRECT_URL: direct, AQM_HASH_SECRET: hashSecret, AQM_DB_POOLER: "" });
  const refused = "aqm: DATABASE_URL is a pooler (PgBouncer?) that refuses startup parameters (08P01: unsupported startup parameter: statement_timeout): "
    + 'set AQM_DB_POOLER=transaction and AQM_DATABASE_DIRECT_URL (a direct connection to the same database); docs/runbook.md, "Through a transaction-mode pooler"';

  test("a pooler that refuses the startup parameters: one line with the SQLSTATE, exit 1, with or without AQM_DATABASE_DIRECT_URL", async () => {
    for (const direct of ["", db.directUrl]) {
      const { code, lines } = await run(["bun", "src/index.ts"], env(refusing.url, direct));
      expect(lines, `AQM_DATABASE_DIRECT_URL=${direct}`).toEqual([refused]);
      expect(code).toBe(1);
    }
  });

  test("a pooler that accepts them but shares server connections: one line, exit 1", async () => {
    const { code, lines } = await run(["bun", "src/index.ts"], env(ignoring.url, db.directUrl));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp("^aqm: DATABASE_URL is a transaction-mode pooler \\(two of its connections ran on one PostgreSQL backend, pid \\d+\\), "
      + "where prepared statements and sessions do not hold: set AQM_DB_POOLER=transaction and AQM_DATABASE_DIRECT_URL \\(a direct connection "
      + 'to the same database\\); docs/runbook.md, "Through a transaction-mode pooler"$'));
    expect(code).toBe(1);
  });

  test("the same PgBouncer with AQM_DB_POOLER=transaction, and PostgreSQL itself without it, start", async () => {
    for (const extra of [{ DATABASE_URL: refusing.url, AQM_DB_POOLER: "transaction" }, { DATABASE_URL: db.directUrl, AQM_DB_POOLER: "" }]) {
      const server = await startServer({ AQM_DATABASE_DIRECT_URL: db.directUrl, AQM_HASH_SECRET: hashSecret, AQM_CRON: "off", ...extra });
      const ready = await fetch(`${server.url}/v1/health/ready`);
      expect(ready.status, extra.DATABASE_URL).toBe(200);
      server.proc.kill("SIGTERM");
      expect(await server.exited).toBe(0);
    }
  }, 60_000);
});

describe("a database whose commits a claim cannot rely on", () => {
  test("synchronous_commit = off for the server's sessions (here from DATABASE_URL): one line naming it, exit 1, before anything is written", async () => {
    const name = await createDatabase();
    const fresh = databaseUrl(name);
    const { code, lines } = await run(["bun", "src/index.ts"], { DATABASE_URL: `${fresh}?synchronous_commit=off`, AQM_HASH_SECRET: hashSecret });
    expect(lines).toEqual([`aqm: refusing to start: ${commitRisk("the server's own sessions (DATABASE_URL)", { commit: "off", standbys: "" })}`]);
    expect(lines[0]).toContain("synchronous_commit is off on the server's own sessions (DATABASE_URL): PostgreSQL confirms a commit before writing it");
    expect(code).toBe(1);
    const check = postgres(fresh, { max: 1 });
    try {
      expect((await check`SELECT to_regclass('schema_version') IS NULL AS none`)[0]!.none).toBe(true);
    } finally {
      await check.end();
      await dropDatabase(name);
    }
  }, 40_000);

  test("what is refused: off anywhere; local only beside a synchronous standby; on, remote_write and remote_apply never", () => {
    const risk = (commit: string, standbys = "") => commitRisk("n", { commit, standbys }) !== undefined;
    expect(risk("off")).toBe(true);
    expect(risk("off", "ANY 1 (s1, s2)")).toBe(true);
    expect(risk("local")).toBe(false);
    expect(risk("local", "ANY 1 (s1, s2)")).toBe(true);
    expect(commitRisk("n", { commit: "local", standbys: "s1" })).toContain("a failover can lose a claim already answered 200");
    for (const commit of ["on", "remote_write", "remote_apply"]) {
      expect(risk(commit), commit).toBe(false);
      expect(risk(commit, "s1"), commit).toBe(false);
    }
  });
});
