// The commands a developer runs, as processes: what they print when something is in the way.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startEmbeddedPostgres, type EmbeddedDatabase } from "../src/db/embedded.ts";
import { loadConfig } from "../src/config.ts";
import { useTestDatabase } from "./helpers/db.ts";
import { startServer } from "./helpers/server.ts";

const db = useTestDatabase();
const root = join(import.meta.dir, "..");

async function run(args: string[], env: Record<string, string>) {
  const proc = Bun.spawn(["bun", ...args], {
    cwd: root, env: { ...process.env, AQM_LOG: "off", AQM_CRON: "off", AQM_JWT_SECRET: "entry-secret-entry-secret-entry-secret-01", ...env },
    stdout: "pipe", stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  const [code, stdout, stderr] = await Promise.all([proc.exited, new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  clearTimeout(timer);
  return { code, stdout, stderr: stderr.trim() };
}

test("a port already in use ends the server with one line naming the port, and a warning names unknown AQM_* variables", async () => {
  const taken = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("someone else") });
  try {
    const { code, stderr } = await run(["src/index.ts"], { DATABASE_URL: db.url, HOST: "127.0.0.1", PORT: String(taken.port), AQM_DB_POOL_MAXX: "8" });
    expect(code).toBe(1);
    const lines = stderr.split("\n");
    expect(lines).toEqual([
      "aqm: WARNING: AQM_DB_POOL_MAXX is not a setting and is ignored (did you mean AQM_DB_POOL_MAX?); the README's Configuration table lists them all",
      `aqm: port ${taken.port} on 127.0.0.1 is already in use (another server running?); stop it or set PORT to another port`,
    ]);
  } finally {
    taken.stop(true);
  }
});

test("NODE_ENV=prod stops the server with one line", async () => {
  const { code, stderr } = await run(["src/index.ts"], { DATABASE_URL: db.url, NODE_ENV: "prod" });
  expect(code).toBe(2);
  expect(stderr).toBe('aqm: configuration error: NODE_ENV="prod" is invalid: expected one of development, production, test');
});

describe("bun run migrate while a server holds the embedded PostgreSQL", () => {
  let dataDir: string;
  let port: number;
  let held: EmbeddedDatabase;
  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "aqm-held-"));
    port = await freePort();
    held = await startEmbeddedPostgres({ dataDir, port });
  });
  afterAll(async () => {
    await held?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("ends with one line that says who holds it, not a stack trace", async () => {
    const { code, stderr } = await run(["run", "migrate"], { DATABASE_URL: "", AQM_DATA_DIR: dataDir, AQM_EMBEDDED_PG_PORT: String(port) });
    expect(code).toBe(1);
    const ours = stderr.split("\n").filter((l) => !l.startsWith("$ ") && !l.startsWith("error: script")); // bun run echoes the command and its exit
    expect(ours, stderr).toHaveLength(1);
    expect(ours[0]).toStartWith(`aqm migrate: the embedded PostgreSQL in ${join(dataDir, "pg")} is already running (pid ${held.pid()}, port ${port})`);
  });
});

test("the rejections postgres.js leaves unhandled (a new connection's type read timing out or cut by a reset, a cancel request refused) are logged and the process goes on; any other unhandled rejection still ends it", async () => {
  const script = "tests/helpers/stray-rejection.ts";
  const logged = (stderr: string) => stderr.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
  const stray = (code: string) => (l: Record<string, unknown>) => l.code === code && l.msg === "database error outside any request (postgres.js)";

  const cancel = await run([script], { DATABASE_URL: db.directUrl, STRAY: "cancel" });
  expect(cancel.code, `${cancel.stdout}\n${cancel.stderr}`).toBe(0);
  expect(cancel.stdout).toContain("statement: answered"); // the cancel never reached PostgreSQL
  expect(cancel.stdout).toContain("still running");
  expect(logged(cancel.stderr).some(stray("ECONNREFUSED"))).toBe(true);

  // the read's ECONNRESET names no port: it is recognised by the query postgres.js names on it
  const reset = await run([script], { DATABASE_URL: db.directUrl, STRAY: "reset" });
  expect(reset.code, reset.stderr).toBe(0);
  expect(reset.stdout).toContain("connections reset: 1");
  expect(reset.stdout).toContain("still running");
  expect(logged(reset.stderr).some(stray("ECONNRESET"))).toBe(true);

  const types = await run([script], { DATABASE_URL: db.directUrl, STRAY: "types" });
  expect(types.code, `${types.stdout}\n${types.stderr}`).toBe(0);
  expect(types.stdout).toContain("first statement: failed 57014");
  expect(types.stdout).toContain("still running");
  expect(logged(types.stderr).some(stray("57014"))).toBe(true);

  const bug = await run([script], { DATABASE_URL: db.directUrl, STRAY: "cancel", THEN_A_BUG: "1" });
  expect(bug.code).toBe(1);
  expect(bug.stderr).toContain("TypeError: a bug");
}, 90_000); // four processes started one after another: 3.6 s alone, 8 s and more on a busy machine

test("the server opens its AQM_DB_POOL_MAX request connections before it listens (a burst right after start finds them open), and by default keeps them while idle", async () => {
  const server = await startServer({ DATABASE_URL: db.directUrl, AQM_DB_POOL_MAX: "3", AQM_CRON: "off" });
  try {
    const [row] = await db.session<{ n: number }[]>`
      SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = ${db.name} AND application_name = 'aqm-coin-server'`;
    expect(row!.n).toBe(3);
  } finally {
    server.proc.kill("SIGTERM");
    await server.exited;
  }
  expect(loadConfig({}).AQM_DB_IDLE_TIMEOUT_S).toBe(0);
});
