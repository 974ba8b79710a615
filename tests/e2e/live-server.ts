import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { signToken } from "../../src/auth/jwt.ts";
import { freePort } from "../../src/db/embedded.ts";
import { startServer } from "../helpers/server.ts";

const secret = "e2e-secret-e2e-secret-e2e-secret-0123456";

export interface LiveServer {
  url: string;
  /** A token for `userId` (acting for `device`, 1 when absent), signed with the server's secret. */
  token(userId: string, opts?: { admin?: boolean; device?: number }): Promise<string>;
  stop(): Promise<void>;
}

/**
 * The real server (`bun src/index.ts`) on a free port, with its embedded PostgreSQL in a
 * throw-away directory (never a DATABASE_URL from the environment or .env), for the scripts here.
 */
export async function startLiveServer(): Promise<LiveServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "aqm-e2e-"));
  const env = { DATABASE_URL: "", AQM_DATA_DIR: dataDir, AQM_EMBEDDED_PG_PORT: String(await freePort()), AQM_CRON: "off", AQM_JWT_SECRET: secret };
  const server = await startServer(env).catch((error) => {
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  });
  return {
    url: server.url,
    token: (userId, opts) => signToken(new TextEncoder().encode(secret), userId, opts),
    async stop() {
      server.proc.kill("SIGTERM");
      await server.exited;
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
