import { join } from "node:path";

export interface ServerProcess {
  url: string;
  proc: ReturnType<typeof Bun.spawn>;
  /** Every JSON line the process printed so far. */
  lines: Record<string, unknown>[];
  /** What it wrote to stderr so far (drained, so a full pipe never blocks it). */
  stderr: () => string;
  exited: Promise<number>;
  /** Resolves once stdout ended and every line of it is in `lines` (exited can come first). */
  output: Promise<void>;
}

/** Starts `bun src/index.ts` as a real process on a free port and waits until it listens. */
export async function startServer(env: Record<string, string>): Promise<ServerProcess> {
  const proc = Bun.spawn(["bun", "src/index.ts"], {
    cwd: join(import.meta.dir, "..", ".."),
    env: { ...process.env, PORT: "0", HOST: "127.0.0.1", AQM_LOG: "off", AQM_JWT_SECRET: "test-secret-test-secret-test-secret-0123", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const lines: Record<string, unknown>[] = [];
  let resolveUrl!: (url: string) => void;
  const listening = new Promise<string>((resolve) => (resolveUrl = resolve));
  const output = (async () => {
    let buffer = "";
    for await (const chunk of proc.stdout as ReadableStream<Uint8Array>) {
      buffer += new TextDecoder().decode(chunk);
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        try {
          const parsed = JSON.parse(line);
          lines.push(parsed);
          if (parsed.msg === "listening") resolveUrl(parsed.url);
        } catch {
          // not a JSON line
        }
      }
    }
  })();
  void output.catch(() => {});
  let stderr = "";
  void (async () => {
    for await (const chunk of proc.stderr as ReadableStream<Uint8Array>) stderr += new TextDecoder().decode(chunk);
  })();
  const url = await Promise.race([listening, proc.exited.then((code) => {
    throw new Error(`server exited with ${code} before listening`);
  }), Bun.sleep(20_000).then(() => {
    throw new Error("server did not listen within 20 s");
  })]);
  return { url, proc, lines, stderr: () => stderr, exited: proc.exited, output: output.catch(() => {}) };
}
