// `bun run lint:openapi`: Redocly's recommended ruleset (redocly.yaml) over the OpenAPI document
// the real server serves at /docs/json. Errors and warnings both fail; the deliberate exceptions
// are listed, with their reasons, in .redocly.lint-ignore.yaml. Run by .ci/run.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startLiveServer } from "./live-server.ts";

const root = join(import.meta.dir, "..", "..");
const saved = ".lint/openapi.json"; // the path .redocly.lint-ignore.yaml names

const server = await startLiveServer();
try {
  const res = await fetch(`${server.url}/docs/json`);
  if (res.status !== 200) throw new Error(`GET /docs/json answered ${res.status}`);
  mkdirSync(join(root, ".lint"), { recursive: true });
  writeFileSync(join(root, saved), JSON.stringify(await res.json(), null, 2));
} finally {
  await server.stop();
}

// Under Bun (no Node.js needed); no telemetry and no update check: CI has no internet.
const lint = Bun.spawnSync([process.execPath, "--bun", join(root, "node_modules/.bin/redocly"), "lint", saved, "--format", "json"], {
  cwd: root,
  env: { ...process.env, REDOCLY_TELEMETRY: "off", REDOCLY_SUPPRESS_UPDATE_NOTICE: "true" },
});
let report: { totals: { errors: number; warnings: number; ignored: number }; problems: { ruleId: string; severity: string; message: string; location: { pointer: string }[] }[] };
try {
  report = JSON.parse(lint.stdout.toString());
} catch {
  console.error(`openapi lint: Redocly did not report (exit ${lint.exitCode}):\n${lint.stderr.toString()}`);
  process.exit(1);
}
for (const p of report.problems) console.error(`${p.severity} ${p.ruleId}: ${p.message} at ${p.location.map((l) => l.pointer).join(", ")}`);
const { errors, warnings, ignored } = report.totals;
console.log(`openapi lint: ${errors} errors, ${warnings} warnings under Redocly's recommended rules (${ignored} ignored on purpose, see .redocly.lint-ignore.yaml)`);
process.exit(errors + warnings > 0 ? 1 : 0);
