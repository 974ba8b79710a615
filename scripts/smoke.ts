// Starts a server with the command given, runs the black-box smoke (smoke-checks.ts) against it,
// stops it with SIGTERM and checks it stops cleanly. Runs under Bun or Deno:
//
//   bun scripts/smoke.ts [--bare] [--label NAME] -- <command that starts the server…>
//   deno task smoke                         (the Deno entry, see deno.json)
//
// The server gets PORT=0 and HOST=127.0.0.1, and reports its address in its JSON "listening" line.
// By default it also gets fresh AQM_JWT_SECRET and AQM_HASH_SECRET. --bare gives it nothing but
// DATABASE_URL (and PATH, PORT, HOST), in an empty working directory: the development secret it
// creates there signs the smoke's tokens. A server that prints a WARNING fails the smoke (behind a
// pooler: a timeout the role does not carry). The server's own settings come from the environment.
// Without --bare the stop is checked with an upload in flight whose body never ends: the drain
// (AQM_SHUTDOWN_DRAIN_MS=1000 here) must time out and the server still stop cleanly.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { signToken } from "../src/auth/jwt.ts";
import { smokeChecks } from "./smoke-checks.ts";

const args = process.argv.slice(2);
const dashes = args.indexOf("--");
const flags = dashes < 0 ? args : args.slice(0, dashes);
const command = dashes < 0 ? [] : args.slice(dashes + 1);
const bare = flags.includes("--bare");
const label = flags.includes("--label") ? flags[flags.indexOf("--label") + 1]! : command.join(" ");
if (command.length === 0) {
  console.error("usage: smoke.ts [--bare] [--label NAME] -- <command that starts the server…>");
  process.exit(2);
}
const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  console.error("smoke: set DATABASE_URL");
  process.exit(2);
}

const workDir = mkdtempSync(join(tmpdir(), "aqm-smoke-"));
const secret = randomBytes(32).toString("base64url");
const listenOn = { PORT: "0", HOST: "127.0.0.1" };
const env: Record<string, string> = bare
  ? { PATH: process.env.PATH ?? "/usr/bin:/bin", DATABASE_URL: databaseUrl, ...listenOn }
  : {
    ...(process.env as Record<string, string>), ...listenOn, AQM_LOG: "off", AQM_SHUTDOWN_DRAIN_MS: "1000",
    AQM_JWT_SECRET: secret, AQM_HASH_SECRET: randomBytes(32).toString("base64url"),
  };
const server = spawn(command[0]!, command.slice(1), { cwd: bare ? workDir : process.cwd(), env, stdio: ["ignore", "pipe", "pipe"] });
const lines: Record<string, unknown>[] = [];
let stderr = "";
const exited = new Promise<number | null>((resolve) => server.on("exit", (code) => resolve(code)));
const listening = new Promise<string>((resolve, reject) => {
  let buffer = "";
  server.stdout!.on("data", (chunk: Uint8Array) => {
    buffer += Buffer.from(chunk).toString("utf8");
    for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try {
        const parsed = JSON.parse(line) as Record<string, unknown>;
        lines.push(parsed);
        if (parsed.msg === "listening") resolve(String(parsed.url));
      } catch {
        // not a JSON line
      }
    }
  });
  server.stderr!.on("data", (chunk: Uint8Array) => (stderr += Buffer.from(chunk).toString("utf8")));
  void exited.then((code) => reject(new Error(`the server exited with ${code} before listening:\n${stderr}`)));
  setTimeout(() => reject(new Error(`the server did not listen within 60 s:\n${stderr}`)), 60_000);
});

let failures = 0;
const fail = (message: string) => {
  failures++;
  console.log(`FAIL ${message}`);
};

/** An upload whose chunked body never ends: in flight until the drain times out. */
function stalledUpload(url: string, token: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = connect({ host: hostname, port: Number(port) }, () => {
      socket.write(`POST /v1/coins/upload HTTP/1.1\r\nHost: ${hostname}\r\nAuthorization: Bearer ${token}\r\n`
        + "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"co\r\n");
      setTimeout(() => resolve(socket), 300);
    });
    socket.on("error", () => {}); // the server closes it
  });
}

/** SIGTERM: the server must stop by itself, exit 0, and say "stopped" last. */
async function stop(stalled?: Socket): Promise<void> {
  // process.kill, not server.kill: under Deno, a child killed with child.kill() reports the signal
  // it was sent as its end even when it handled it and exited 0.
  if (server.exitCode === null) process.kill(server.pid!, "SIGTERM");
  const code = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r("still running after 20 s"), 20_000))]);
  stalled?.destroy();
  if (code !== 0) {
    fail(`SIGTERM: the server ended with ${code}\n${stderr}`);
    server.kill("SIGKILL");
  } else if (lines.at(-1)?.msg !== "stopped") {
    fail(`SIGTERM: no "stopped" line (last: ${JSON.stringify(lines.at(-1))})`);
  } else if (stalled && !lines.some((l) => l.msg === "drain timeout: closing open connections")) {
    fail("SIGTERM: an upload in flight past the drain timeout did not end the drain");
  }
}

let stalled: Socket | undefined;
try {
  const url = await listening;
  const started = lines.find((l) => l.msg === "listening");
  console.log(`smoke (${label}): server at ${url}, ${JSON.stringify(started)}`);
  const jwtSecret = new TextEncoder().encode(bare ? readFileSync(join(workDir, ".data", "jwt-secret"), "utf8").trim() : secret);
  const checks = smokeChecks({ url, secret: jwtSecret, pairQuota: Number(env.AQM_PAIR_QUOTA ?? 100) });
  for (const [name, run] of checks) {
    const t0 = performance.now();
    try {
      await run();
      console.log(`ok   ${name} (${Math.round(performance.now() - t0)} ms)`);
    } catch (error) {
      fail(`${name}: ${(error as Error).message}`);
    }
  }
  if (/WARNING/.test(stderr)) fail(`the server warned:\n${stderr}`);
  if (!bare) stalled = await stalledUpload(url, await signToken(jwtSecret, crypto.randomUUID()));
} catch (error) {
  fail((error as Error).message);
} finally {
  const t0 = performance.now();
  await stop(stalled);
  if (failures === 0) console.log(`ok   SIGTERM${stalled ? " with an upload stalled past the drain timeout" : ""}: exit 0 (${Math.round(performance.now() - t0)} ms)`);
  rmSync(workDir, { recursive: true, force: true });
}
console.log(`smoke (${label}): ${failures === 0 ? "passed" : `${failures} failed`}`);
process.exit(failures === 0 ? 0 : 1);
