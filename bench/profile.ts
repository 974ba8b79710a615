// The CPU profile of the `default` server (--profile), cut to the segments it served.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { relative } from "node:path";
import { markdownTable, num, type Row } from "./report.ts";
import { profileIntervalUs } from "./stack.ts";

/** The parts of a V8/JSC .cpuprofile (what `bun --cpu-prof` writes) this reads. */
interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  /** µs since the epoch. */
  startTime: number;
  endTime: number;
  samples: number[];
  /** µs from the previous sample (the first: from startTime). */
  timeDeltas: number[];
}

export interface ProfileEntry {
  function: string;
  location: string;
  samples: number;
  /** Share of the samples taken in the window, %. */
  selfPct: number;
  /** Share of the samples with this function anywhere on the stack, %. */
  totalPct: number;
  /** The nearest caller in the project's or its packages' code (src/…, node_modules/…) in most of its samples, with that share of them, %. */
  calledFrom: string | null;
  calledFromPct: number | null;
}

export interface SegmentProfile {
  segment: string;
  /** Samples in the window: Bun samples only while the JS thread runs JavaScript (one per interval). */
  samples: number;
  /** samples × the sampling interval, s: the JavaScript time the profiler saw. */
  sampledS: number;
  /** The server's CPU over the segment, from /proc (all threads; native work included). */
  serverCpuS: number | null;
  top: ProfileEntry[];
}

const repoRoot = new URL("..", import.meta.url).pathname;

/** A Markdown code span that survives a table cell (a regex's `|` would split it). */
const code = (text: string) => `\`${text.replaceAll("|", "\\|")}\``;

function locationOf(frame: CpuProfile["nodes"][number]["callFrame"]): string {
  if (!frame.url) return "(native)";
  const path = frame.url.replace(/^file:\/\//, "");
  const short = path.startsWith(repoRoot) ? relative(repoRoot, path) : path;
  return frame.lineNumber >= 0 ? `${short}:${frame.lineNumber + 1}` : short;
}

/**
 * Self and total shares of each function over the samples taken inside `windows` (epoch ms),
 * counted in samples, not in time deltas: Bun takes a sample only while JavaScript runs, so the
 * delta before a sample also holds the idle time before it.
 */
export function summarize(profile: CpuProfile, windows: [number, number][], topN = 10): { samples: number; entries: ProfileEntry[] } {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const frameOf = (id: number) => byId.get(id)!.callFrame;
  const keyOf = (id: number) => `${frameOf(id).functionName || "(anonymous)"}\u0000${locationOf(frameOf(id))}`;
  const ours = (id: number) => /^file:\/\//.test(frameOf(id).url);
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const callers = new Map<string, Map<string, number>>();
  let t = profile.startTime;
  let samples = 0;
  profile.samples.forEach((id, i) => {
    t += profile.timeDeltas[i] ?? 0;
    const ms = t / 1000;
    if (!windows.some(([from, to]) => ms >= from && ms < to)) return;
    samples++;
    const key = keyOf(id);
    self.set(key, (self.get(key) ?? 0) + 1);
    let caller = "(none)";
    for (let n = parent.get(id); n !== undefined; n = parent.get(n)) {
      if (!ours(n)) continue;
      caller = `${frameOf(n).functionName || "(anonymous)"} ${locationOf(frameOf(n))}`;
      break;
    }
    const byCaller = callers.get(key) ?? new Map<string, number>();
    byCaller.set(caller, (byCaller.get(caller) ?? 0) + 1);
    callers.set(key, byCaller);
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const k = keyOf(n);
      if (frameOf(n).functionName === "(root)" || seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + 1);
    }
  });
  const pct = (n: number, of = samples) => Math.round((n / Math.max(1, of)) * 1000) / 10;
  const entries = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, topN).map(([key, n]) => {
    const [fn, location] = key.split("\u0000") as [string, string];
    const [caller, c] = [...callers.get(key)!.entries()].sort((a, b) => b[1] - a[1])[0]!;
    return {
      function: fn, location, samples: n, selfPct: pct(n), totalPct: pct(total.get(key) ?? n),
      calledFrom: caller === "(none)" ? null : caller, calledFromPct: caller === "(none)" ? null : pct(c, n),
    };
  });
  return { samples, entries };
}

/**
 * Reads <base>.cpuprofile (written by the profiled server when it stopped) and writes
 * <base>-segments.md: the top functions of each measured segment of the `default` server, the
 * closed-loop claim segments first. Returns the summaries, or undefined when there is no profile.
 */
export function profileBySegment(base: string, rows: Row[], topN = 10): { file: string; segments: SegmentProfile[] } | undefined {
  const file = `${base}.cpuprofile`;
  if (!existsSync(file)) return undefined;
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const served = rows.filter((r) => r.config === "default" && r.window);
  const claimClosed = served.filter((r) => r.phase.startsWith("claim count=") && r.mode.startsWith("closed"));
  const groups: [string, Row[]][] = [
    ...claimClosed.map((r): [string, Row[]] => [`${r.phase}, ${r.mode}`, [r]]),
    ...(claimClosed.length > 1 ? [["every claim count=N segment (closed and open)", served.filter((r) => r.phase.startsWith("claim count="))] as [string, Row[]]] : []),
    ...served.filter((r) => !r.phase.startsWith("claim count=") && r.mode.startsWith("closed")).map((r): [string, Row[]] => [`${r.phase}, ${r.mode}`, [r]]),
  ];
  const segments: SegmentProfile[] = groups.map(([segment, group]) => {
    const { samples, entries } = summarize(profile, group.map((r) => r.window!), topN);
    const cpu = group.every((r) => r.serverCpuS !== undefined) ? Math.round(group.reduce((a, r) => a + r.serverCpuS!, 0) * 100) / 100 : null;
    return { segment, samples, sampledS: Math.round((samples * profileIntervalUs) / 1e4) / 100, serverCpuS: cpu, top: entries };
  });
  const text = [
    "# CPU profile of the `default` server, by segment",
    "",
    `Cut from \`${relative(repoRoot, file)}\` (Bun's \`--cpu-prof\`, ${profileIntervalUs / 1000} ms sampling) to each segment's time window.`,
    "Shares count **samples**: Bun samples the JavaScript thread only while it runs JavaScript (Bun's own",
    "`.md` next to this file weighs each sample by the time since the previous one, idle time included).",
    "Native work that is not under a JavaScript frame (socket I/O, HTTP parsing, the event loop, GC on other threads)",
    "is not sampled: compare the sampled seconds with the server's CPU from /proc.",
    "",
    ...segments.flatMap((s) => [
      `## ${s.segment}`,
      "",
      `${num(s.samples)} samples ≈ ${num(s.sampledS, 2)} s of JavaScript; server CPU over the segment ${num(s.serverCpuS, 2)} s.`,
      "",
      markdownTable(["#", "function", "location", "nearest caller in src/ or node_modules/ (share of its samples)", "self %", "total %", "samples"],
        s.top.map((e, i) => [String(i + 1), code(e.function), code(e.location), e.calledFrom ? `${code(e.calledFrom)} (${e.calledFromPct} %)` : "—",
          e.selfPct.toFixed(1), e.totalPct.toFixed(1), num(e.samples)]), 4),
      "",
    ]),
  ].join("\n");
  const out = `${base}-segments.md`;
  writeFileSync(out, text);
  return { file: out, segments };
}

if (import.meta.main) {
  // bun bench/profile.ts <result.json> <profile base, without .cpuprofile>: re-cut a saved profile.
  const [resultFile, base] = process.argv.slice(2);
  if (!resultFile || !base) {
    console.error("usage: bun bench/profile.ts <result.json> <profile base (without .cpuprofile)>");
    process.exit(2);
  }
  const result = JSON.parse(readFileSync(resultFile, "utf8")) as { rows: Row[] };
  const written = profileBySegment(base, result.rows);
  console.log(written ? `wrote ${written.file}` : `no ${base}.cpuprofile`);
}
