/** What one request did: `error` names the failure (HTTP status, "network", "timeout"). */
export interface Outcome {
  ok: boolean;
  coins: number;
  /** A claim that got fewer coins than it asked for (the stock ran dry). */
  short?: boolean;
  error?: string;
}

/** Sends one request; each call picks its own target, so a job carries its own counter. */
export type Job = () => Promise<Outcome>;

export interface Stats {
  requests: number;
  errors: number;
  errorKinds: Record<string, number>;
  short: number;
  coins: number;
  elapsedS: number;
  /** Successful requests per second. */
  reqPerS: number;
  coinsPerS: number;
  /** Latency of successful requests, ms. */
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** How late an open loop sent its requests after their intended times, ms. */
export interface SendLag {
  sendLagP50: number;
  sendLagP99: number;
}

const round = (x: number) => Math.round(x * 100) / 100;

/** The middle value, the lower of the two middle ones for an even count (null for none); `xs` is left as it is. */
export function lowerMedian(xs: readonly number[]): number | null {
  return xs.length === 0 ? null : [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]!;
}

export function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export class Recorder {
  private latencies = new Float64Array(1 << 14);
  private ok = 0;
  private requests = 0;
  private errors = 0;
  private short = 0;
  private coins = 0;
  private errorKinds: Record<string, number> = {};

  record(latencyMs: number, outcome: Outcome): void {
    this.requests++;
    if (!outcome.ok) {
      this.errors++;
      const kind = outcome.error ?? "unknown";
      this.errorKinds[kind] = (this.errorKinds[kind] ?? 0) + 1;
      return;
    }
    if (this.ok === this.latencies.length) {
      const grown = new Float64Array(this.latencies.length * 2);
      grown.set(this.latencies);
      this.latencies = grown;
    }
    this.latencies[this.ok++] = latencyMs;
    this.coins += outcome.coins;
    if (outcome.short) this.short++;
  }

  stats(elapsedS: number): Stats {
    const sorted = this.latencies.slice(0, this.ok).sort();
    return {
      requests: this.requests, errors: this.errors, errorKinds: this.errorKinds, short: this.short, coins: this.coins,
      elapsedS: round(elapsedS), reqPerS: round(this.ok / elapsedS), coinsPerS: round(this.coins / elapsedS),
      p50: round(percentile(sorted, 50)), p95: round(percentile(sorted, 95)), p99: round(percentile(sorted, 99)),
      max: round(sorted[sorted.length - 1] ?? NaN),
    };
  }
}

/** Runs a job; a thrown error (refused connection, timeout) is an outcome, not an exception. */
async function attempt(job: Job): Promise<Outcome> {
  try {
    return await job();
  } catch (error) {
    const name = (error as { name?: string } | null)?.name;
    return { ok: false, coins: 0, error: name === "TimeoutError" ? "timeout" : "network" };
  }
}

/** `concurrency` workers, each sending its next request as soon as the previous one is answered. */
export async function closedLoop(job: Job, concurrency: number, durationS: number): Promise<Stats> {
  const recorder = new Recorder();
  const start = performance.now();
  const end = start + durationS * 1000;
  const worker = async () => {
    while (performance.now() < end) {
      const sent = performance.now();
      const outcome = await attempt(job);
      recorder.record(performance.now() - sent, outcome);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return recorder.stats((performance.now() - start) / 1000);
}

/**
 * Wakes at the first timer tick at or after `time`: up to ~1 ms late (reported as send lag, and
 * counted in the latency), but without the busy wait a finer wake-up would need, which would
 * take CPU from the server on a small machine.
 */
async function sleepUntil(time: number): Promise<void> {
  for (let wait = time - performance.now(); wait > 0; wait = time - performance.now()) await Bun.sleep(Math.ceil(wait));
}

/**
 * Requests at a fixed arrival rate, request i at t0 + i / rate whatever happened to the earlier
 * ones. Latency counts from that intended time, so a stall of the server (or of this generator)
 * shows up in every request it delayed: no coordinated omission. `record` gets the intended
 * time (ms after t0) too. Resolves when every request is answered, with how late the
 * generator sent them (p50, p99).
 */
export async function schedule(job: Job, rate: number, durationS: number,
  record: (intendedMs: number, latencyMs: number, outcome: Outcome) => void): Promise<SendLag> {
  const total = Math.max(1, Math.round(rate * durationS));
  const lags = new Float64Array(total);
  const pending: Promise<void>[] = [];
  const t0 = performance.now();
  for (let i = 0; i < total; i++) {
    const intended = t0 + (i * 1000) / rate;
    await sleepUntil(intended);
    lags[i] = performance.now() - intended;
    pending.push(attempt(job).then((outcome) => record(intended - t0, performance.now() - intended, outcome)));
  }
  await Promise.all(pending);
  lags.sort();
  return { sendLagP50: round(percentile(lags, 50)), sendLagP99: round(percentile(lags, 99)) };
}

export async function openLoop(job: Job, rate: number, durationS: number): Promise<Stats & SendLag> {
  const recorder = new Recorder();
  const t0 = performance.now();
  const lag = await schedule(job, rate, durationS, (_, latency, outcome) => recorder.record(latency, outcome));
  return { ...recorder.stats((performance.now() - t0) / 1000), ...lag };
}

/** `n` requests issued at once; latency counts from the moment the first one was issued. */
export async function burst(job: Job, n: number): Promise<Stats> {
  const recorder = new Recorder();
  const t0 = performance.now();
  const all: Promise<void>[] = [];
  for (let i = 0; i < n; i++) all.push(attempt(job).then((outcome) => recorder.record(performance.now() - t0, outcome)));
  await Promise.all(all);
  return recorder.stats((performance.now() - t0) / 1000);
}
