// The regression check of --check: the deployed server's claim rate against its own ceiling, compared with a saved baseline.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { CeilingRatio } from "./report.ts";

/** What the check compares: `default` closed-loop claims/s ÷ `sql:default` claims/s at the batch size it sent, count=1, same run. */
export interface Regression {
  metric: string;
  phase: string;
  serverClaimsPerS: number;
  ceilingClaimsPerS: number;
  /** B of that ceiling row: the server's mean claims per statement, rounded (16 when it sent 16, or when /metrics could not be read). */
  batch: number;
  ratio: number;
}

export interface Baseline extends Regression {
  /** The committed result file the figures come from. */
  source: string;
  started_at: string;
  machine: unknown;
  /** The check fails when a run's ratio is below ratio × (1 - tolerance). */
  tolerance: number;
  note: string;
}

export const baselineFile = join(import.meta.dir, "results", "baseline.json");
export const tolerance = 0.15;
const metric = "claim count=1: default claims/s ÷ sql:default claims/s at B=16, ceil(pool / 2) statements at once (closed loops, same run)";
const repoRoot = join(import.meta.dir, "..");

/** The run's regression figure; undefined when it has no count=1 claim phase with a default row and its ceiling. */
export function regressionOf(ratios: CeilingRatio[]): Regression | undefined {
  const r = ratios.find((x) => x.phase === "claim count=1" && x.config === "default");
  if (!r) return undefined;
  // the fixed batched ceiling (issue 21), not the as-sent row, which follows whatever the server batches
  const c = r.ceilings.find((x) => x.batch === 16 && !x.asSent);
  if (!c) return undefined;
  return { metric, phase: r.phase, serverClaimsPerS: r.serverClaimsPerS, ceilingClaimsPerS: c.claimsPerS, batch: c.batch, ratio: c.ratio };
}

export interface Comparison {
  pass: boolean;
  /** Shown beside the targets. */
  text: string;
}

/** Compares a run with bench/results/baseline.json; a string (why not) when either side is missing: nothing to compare, not a failure. */
export function compareToBaseline(run: Regression | undefined, machine?: { cpu: string; cores: number }, profiled = false): Comparison | string {
  if (!existsSync(baselineFile)) return `no ${relative(repoRoot, baselineFile)}: no regression check`;
  if (!run) return "this run has no claim count=1 phase with its coalesced ceiling: no regression check";
  const base = JSON.parse(readFileSync(baselineFile, "utf8")) as Baseline;
  if (base.metric !== metric) return `${relative(repoRoot, baselineFile)} measures another figure ("${base.metric}"): no regression check until it is moved (bun bench/baseline.ts <result.json>)`;
  const floor = base.ratio * (1 - (base.tolerance ?? tolerance));
  const change = Math.round((run.ratio / base.ratio - 1) * 1000) / 10;
  const perS = (x: number) => Math.round(x).toLocaleString("en-US");
  const was = base.machine as { cpu?: string; cores?: number } | undefined;
  const elsewhere = machine && was && (was.cpu !== machine.cpu || was.cores !== machine.cores)
    ? ` — WARNING: the baseline ran on ${was.cores} cores of ${was.cpu}, this run on ${machine.cores} of ${machine.cpu}: not comparable` : "";
  const sampled = profiled ? " — WARNING: the default server ran under the CPU profiler (--profile): its rate carries the sampler's cost" : "";
  return {
    pass: run.ratio >= floor,
    text: `claim count=1, default ÷ sql:default (B=16) ${run.ratio.toFixed(2)}× (${perS(run.serverClaimsPerS)} ÷ ${perS(run.ceilingClaimsPerS)} claims/s at B=${run.batch}) `
      + `vs baseline ${base.ratio.toFixed(2)}× (${base.source}): ${change >= 0 ? "+" : "−"}${Math.abs(change)} %, fails below ${floor.toFixed(2)}× (−${Math.round((base.tolerance ?? tolerance) * 100)} %; same machine only)${elsewhere}${sampled}`,
  };
}

if (import.meta.main) {
  // bun bench/baseline.ts <result.json>: make that committed result the baseline.
  const source = process.argv[2];
  if (!source) {
    console.error("usage: bun bench/baseline.ts bench/results/<stamp>.json");
    process.exit(2);
  }
  const result = JSON.parse(readFileSync(source, "utf8")) as { started_at: string; machine: unknown; server_to_coalesced_ceiling?: CeilingRatio[] };
  const regression = regressionOf(result.server_to_coalesced_ceiling ?? []);
  if (!regression) {
    console.error(`${source} has no claim count=1 default row with its coalesced ceiling`);
    process.exit(1);
  }
  const baseline: Baseline = {
    ...regression, source: relative(repoRoot, source), started_at: result.started_at, machine: result.machine, tolerance,
    note: "Compared by bun run bench -- --check. Only meaningful on the machine (and machine load) the source run had: the ratio moved from 0.50× to 1.11× between two runs on a shared 2-core VM.",
  };
  writeFileSync(baselineFile, JSON.stringify(baseline, null, 2) + "\n");
  console.log(`wrote ${relative(repoRoot, baselineFile)}: ratio ${regression.ratio} from ${baseline.source}`);
}
