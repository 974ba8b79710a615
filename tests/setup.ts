import { afterAll } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startEmbeddedPostgres } from "../src/db/embedded.ts";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

if (!process.env.TEST_DATABASE_URL) {
  // Under the system temp directory: as root, PostgreSQL runs as the postgres user, which may
  // not be able to reach a checkout in a private home directory.
  const dataDir = mkdtempSync(join(tmpdir(), "aqm-test-"));
  const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
  process.env.TEST_DATABASE_URL = pg.url;
  afterAll(async () => {
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
}
