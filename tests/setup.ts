import { afterAll } from "bun:test";
import { rmSync } from "node:fs";
import { createServer } from "node:net";
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
  const dataDir = join(import.meta.dir, "..", ".data", `test-${process.pid}`);
  const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), persistent: false });
  process.env.TEST_DATABASE_URL = pg.url;
  afterAll(async () => {
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
}
