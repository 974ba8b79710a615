import { afterAll } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, startEmbeddedPostgres } from "../src/db/embedded.ts";

if (!process.env.TEST_DATABASE_URL) {
  // Under the system temp directory: as root, PostgreSQL runs as the postgres user, which may
  // not be able to reach a checkout in a private home directory.
  const dataDir = mkdtempSync(join(tmpdir(), "aqm-test-"));
  // pg_stat_statements preloaded (as in .ci/databases.ts): tests/deploy.test.ts runs the runbook's
  // queries of it for real.
  const pg = await startEmbeddedPostgres({
    dataDir, port: await freePort(), persistent: false, settings: { shared_preload_libraries: "pg_stat_statements" },
  });
  process.env.TEST_DATABASE_URL = pg.url;
  afterAll(async () => {
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
}
