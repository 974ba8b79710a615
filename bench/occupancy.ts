/**
 * Where a closed-loop claim's time goes, and why the server's claims/s differ from the batched
 * ceiling's (issue 21). Little's law, per segment: claims/s = the claims inside a statement on
 * average ÷ the time each spends in one. In a closed loop of c connections each claim's round trip
 * is c ÷ claims/s: its statement, its wait in the server's queue (aqm_claim_queue_seconds), and the
 * rest (HTTP both ways, the app, the load generator). The ceiling keeps all its claims inside
 * statements (no HTTP, no queue), so server ÷ ceiling = (claims inside: server ÷ ceiling) ×
 * (statement time per claim: ceiling ÷ server).
 */
import { num, type Row } from "./report.ts";

export interface Occupancy {
  phase: string;
  config: "default" | "off";
  claimsPerS: number;
  /** c ÷ claims/s, ms: one claim's round trip in the closed loop. */
  roundTripMs: number;
  statementMs: number;
  queueMs: number | null;
  /** roundTripMs − statementMs − queueMs: HTTP, the app, the load generator. */
  elsewhereMs: number | null;
  claimsInStatements: number;
  statementsInFlight: number;
  ceiling: { mode: string; claimsPerS: number; claimsInStatements: number; statementsInFlight: number; claimMs: number };
  /** Server ÷ ceiling claims inside statements, and ceiling ÷ server time per claim in one; their product ≈ the claims/s ratio. */
  inside: number;
  speed: number;
}

const round = (x: number) => Math.round(x * 100) / 100;

export function occupancyOf(rows: Row[], concurrency: number): Occupancy[] {
  const out: Occupancy[] = [];
  for (const server of rows.filter((r) => (r.config === "default" || r.config === "off") && r.phase.startsWith("claim count=") && r.mode.startsWith("closed"))) {
    const ceiling = rows.find((r) => r.config === `sql:${server.config}` && r.phase === server.phase && r.mode.startsWith("closed") && !r.mode.includes("as sent"));
    const { statementMs, claimsInStatements, statementsInFlight } = server;
    if (!ceiling || statementMs === undefined || claimsInStatements === undefined || statementsInFlight === undefined) continue;
    if (ceiling.claimsInStatements === undefined || ceiling.statementsInFlight === undefined || !(server.reqPerS > 0 && ceiling.reqPerS > 0)) continue;
    const roundTripMs = (concurrency / server.reqPerS) * 1000;
    const queueMs = server.queueMs ?? null;
    const claimMs = (ceiling.claimsInStatements / ceiling.reqPerS) * 1000;
    out.push({
      phase: server.phase, config: server.config as "default" | "off", claimsPerS: server.reqPerS, roundTripMs: round(roundTripMs), statementMs, queueMs,
      elsewhereMs: queueMs === null ? null : round(roundTripMs - statementMs - queueMs),
      claimsInStatements, statementsInFlight,
      ceiling: { mode: ceiling.mode, claimsPerS: ceiling.reqPerS, claimsInStatements: ceiling.claimsInStatements, statementsInFlight: ceiling.statementsInFlight, claimMs: round(claimMs) },
      inside: round(claimsInStatements / ceiling.claimsInStatements), speed: round(claimMs / statementMs),
    });
  }
  return out;
}

export function formatOccupancy(entries: Occupancy[], concurrency: number): string {
  return entries.map((o) => {
    const parts = [`${num(o.statementMs, 2)} in its statement`];
    if (o.queueMs !== null) parts.push(`${num(o.queueMs, 2)} in the queue`, `${num(o.elsewhereMs, 2)} elsewhere (HTTP, the app, the client)`);
    return `  ${o.phase} ${o.config}: ${num(o.claimsPerS)} claims/s; a claim's round trip ${num(o.roundTripMs, 2)} ms: ${parts.join(", ")}; `
      + `inside a statement on average ${num(o.claimsInStatements, 1)} of ${concurrency} claims (${num(o.statementsInFlight, 2)} statements at once)\n`
      + `    ceiling (${o.ceiling.mode}): ${num(o.ceiling.claimsPerS)} claims/s, ${num(o.ceiling.claimsInStatements, 1)} claims inside (${num(o.ceiling.statementsInFlight, 2)} statements at once), ${num(o.ceiling.claimMs, 2)} ms each\n`
      + `    → ${o.inside.toFixed(2)}× as many claims inside PostgreSQL × ${o.speed.toFixed(2)} (the ceiling's time in a statement ÷ the server's) = ${(o.inside * o.speed).toFixed(2)}× `
      + `(measured ${(o.claimsPerS / o.ceiling.claimsPerS).toFixed(2)}×)`;
  }).join("\n");
}
