/**
 * bun bench/profile-groups.ts <file.cpuprofile>…: a CPU profile's samples by component — the
 * innermost frame on each sample's stack that belongs to one (prom-client, postgres.js, the token
 * check, the claim code, …) takes the sample; a sample in none of them is "other". Samples of the
 * bench's own seeding (topUp, the embedded PostgreSQL's start) and idle ones are left out. Shares
 * of samples, not of time: Bun weights a sample by the time since the previous one, which a
 * descheduled thread inflates. For the profiles of `bun --cpu-prof bench/in-process.ts`
 * (bench/README.md, issue 21, ninth round).
 */
import { readFileSync } from "node:fs";

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
}

const components: [string, RegExp][] = [
  ["bench: building each Request", /^request .*bench\//],
  ["bench: its loop", /^\(anon\) .*bench\/in-process\.ts/],
  ["prom-client", /node_modules\/prom-client\//],
  ["token check (src/auth)", /\/src\/auth\//],
  ["rate limits (src/rate-limit)", /\/src\/rate-limit\//],
  ["request log (src/http/request-log.ts)", /\/src\/http\/request-log\.ts/],
  ["Response.json (answer's JSON and headers)", /^json /],
  ["postgres.js", /node_modules\/postgres\//],
  ["claim code (src/claims)", /\/src\/claims\//],
  ["TypeBox (validation)", /node_modules\/@sinclair\//],
  ["Elysia", /node_modules\/elysia\//],
  ["text of result columns (toString)", /^toString /],
];
const skipped = /topUp|bench\/seed\.ts|embedded\.ts|^\(idle\)/;

for (const file of process.argv.slice(2)) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const frame = (id: number) => {
    const { functionName, url } = byId.get(id)!.callFrame;
    return `${functionName || "(anon)"} ${url}`;
  };
  const counts = new Map<string, number>();
  let total = 0;
  for (const leaf of profile.samples) {
    const stack: string[] = [];
    for (let id: number | undefined = leaf; id !== undefined; id = parent.get(id)) stack.push(frame(id));
    if (stack.some((f) => skipped.test(f))) continue;
    total++;
    let component = "other";
    for (const f of stack) {
      const hit = components.find(([, re]) => re.test(f));
      if (hit) {
        component = hit[0];
        break;
      }
    }
    counts.set(component, (counts.get(component) ?? 0) + 1);
  }
  console.log(`${file}: ${total} samples\n| component | share of samples |\n|:--|--:|`);
  for (const [component, n] of [...counts].sort((a, b) => b[1] - a[1])) console.log(`| ${component} | ${((100 * n) / total).toFixed(1)} % |`);
}
