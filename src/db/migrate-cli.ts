// `bun run migrate` applies pending migrations; `bun run migrate -- --rollback` reverts the newest one.
// Whatever goes wrong is one line on stderr (exit 1; 2 for a bad setting), never a stack trace.
import { ConfigError, loadConfig } from "../config.ts";
import { openDatabase, type Database } from "./open.ts";
import { migrate, rollbackLatest } from "./migrate.ts";

const fail = (error: unknown, exitCode = 1): never => {
  const { message, code } = (error ?? {}) as { message?: string; code?: string };
  console.error(`aqm migrate: ${error instanceof ConfigError ? "configuration error: " : ""}${code ? `(${code}) ` : ""}${(message ?? String(error)).trim().replace(/\s*\n\s*/g, "; ")}`);
  process.exit(exitCode);
};

let db: Database;
try {
  db = await openDatabase(loadConfig(), { migrate: false });
} catch (error) {
  fail(error, error instanceof ConfigError ? 2 : 1);
}
try {
  if (process.argv.includes("--rollback")) {
    const reverted = await rollbackLatest(db!.session);
    console.log(reverted ? `rolled back ${reverted.version} ${reverted.description}` : "nothing to roll back");
  } else {
    const applied = await migrate(db!.session);
    console.log(applied.length ? applied.map((m) => `applied ${m.version} ${m.description}`).join("\n") : "schema is up to date");
  }
} catch (error) {
  await db!.close(1);
  fail(error);
}
await db!.close();
