// `bun run migrate` applies pending migrations; `bun run migrate -- --rollback` reverts the newest one.
import { loadConfig } from "../config.ts";
import { openDatabase } from "./open.ts";
import { migrate, rollbackLatest } from "./migrate.ts";

const config = loadConfig();
const db = await openDatabase(config, { migrate: false });
try {
  if (process.argv.includes("--rollback")) {
    const reverted = await rollbackLatest(db.session);
    console.log(reverted ? `rolled back ${reverted.version} ${reverted.description}` : "nothing to roll back");
  } else {
    const applied = await migrate(db.session);
    console.log(applied.length ? applied.map((m) => `applied ${m.version} ${m.description}`).join("\n") : "schema is up to date");
  }
} finally {
  await db.close();
}
