// A throw-away PgBouncer (Debian's package, as CI installs it) in transaction mode in front of a
// PostgreSQL URL, as .ci/databases.ts starts one. As root it runs as the postgres user.
import { execFileSync, spawn } from "node:child_process";
import { chownSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../src/db/embedded.ts";

export interface PgBouncer {
  /** `postgresUrl` with the pooler's port. */
  url: string;
  stop(): Promise<void>;
}

export async function startPgBouncer(postgresUrl: string, extraSettings: string[] = []): Promise<PgBouncer> {
  const direct = new URL(postgresUrl);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "aqm-pgbouncer-"));
  const owner = process.getuid?.() === 0 ? Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" })) : undefined;
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text, { mode: 0o600 });
    if (owner !== undefined) chownSync(join(dir, name), owner, -1);
  };
  if (owner !== undefined) chownSync(dir, owner, -1);
  file("userlist.txt", `"${direct.username}" "${decodeURIComponent(direct.password)}"\n`);
  file("pgbouncer.ini", [
    "[databases]", `* = host=${direct.hostname} port=${direct.port}`,
    "[pgbouncer]", "listen_addr = 127.0.0.1", `listen_port = ${port}`, "unix_socket_dir =",
    "auth_type = scram-sha-256", `auth_file = ${join(dir, "userlist.txt")}`, "pool_mode = transaction",
    `logfile = ${join(dir, "pgbouncer.log")}`, ...extraSettings, "",
  ].join("\n"));
  const proc = spawn("pgbouncer", ["-q", ...(owner !== undefined ? ["-u", "postgres"] : []), join(dir, "pgbouncer.ini")], { stdio: "ignore" });
  const exited = new Promise<number | null>((resolve) => proc.on("exit", resolve));
  const stop = async () => {
    if (proc.exitCode === null) proc.kill("SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  for (let tries = 0; tries < 100; tries++) {
    if (proc.exitCode !== null) break;
    const up = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ host: "127.0.0.1", port }, () => (socket.end(), resolve(true)));
      socket.on("error", () => resolve(false));
    });
    if (up) {
      const url = new URL(postgresUrl);
      url.port = String(port);
      return { url: url.toString(), stop };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  let log = "";
  try {
    log = readFileSync(join(dir, "pgbouncer.log"), "utf8");
  } catch {
    // none yet
  }
  await stop();
  throw new Error(`pgbouncer did not listen on 127.0.0.1:${port}:\n${log}`);
}
