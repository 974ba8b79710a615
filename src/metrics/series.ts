import type { Registry } from "prom-client";

/**
 * Counters, histograms and gauges for the per-request and per-claim path, registered in a prom-client
 * Registry and printed by it like its own. prom-client hashes a label object on every inc() and
 * observe() (sorting, joining, checking each name): about 6 % of the server's CPU per claim
 * (bench/README.md, issue 21, ninth round). Here the caller names a series by a string it
 * already has (`key`: the same key, the same labels) and its labels are built once, on first use.
 * A metric without labels prints its zero series before the first change, as prom-client's do.
 */
type Labels = Record<string, string>;

abstract class Series<S> {
  protected readonly series = new Map<string, S>();

  constructor(readonly name: string, readonly help: string, registers: Registry[], protected readonly unlabelled: boolean) {
    for (const registry of registers) registry.registerMetric(this as never);
  }

  protected at(key: string, labels: () => Labels): S {
    let s = this.series.get(key);
    if (s === undefined) this.series.set(key, (s = this.fresh(labels())));
    return s;
  }

  protected abstract fresh(labels: Labels): S;

  reset(): void {
    this.series.clear();
  }
}

interface CounterSeries { labels: Labels; value: number }

export class FastCounter extends Series<CounterSeries> {
  readonly type = "counter";
  readonly aggregator = "sum";

  /** Adds `by` to the series `key` (labels: its labels, asked for once). */
  inc(key = "", labels: () => Labels = () => ({}), by = 1): void {
    this.at(key, labels).value += by;
  }

  protected fresh(labels: Labels): CounterSeries {
    return { labels, value: 0 };
  }

  async get() {
    if (this.unlabelled) this.at("", () => ({}));
    const values = [...this.series.values()].map(({ labels, value }) => ({ labels, value }));
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

interface HistogramSeries { labels: Labels; counts: number[]; sum: number; count: number }

export class FastHistogram extends Series<HistogramSeries> {
  readonly type = "histogram";
  readonly aggregator = "sum";

  constructor(name: string, help: string, registers: Registry[], unlabelled: boolean, private readonly bounds: readonly number[]) {
    super(name, help, registers, unlabelled);
  }

  observe(value: number, key = "", labels: () => Labels = () => ({})): void {
    if (!Number.isFinite(value)) return;
    const s = this.at(key, labels);
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    if (i < this.bounds.length) s.counts[i]! += 1;
    s.sum += value;
    s.count += 1;
  }

  protected fresh(labels: Labels): HistogramSeries {
    return { labels, counts: this.bounds.map(() => 0), sum: 0, count: 0 };
  }

  async get() {
    if (this.unlabelled) this.at("", () => ({}));
    const values = [...this.series.values()].flatMap(({ labels, counts, sum, count }) => {
      let cumulative = 0;
      return [
        ...this.bounds.map((le, i) => ({ labels: { le: String(le), ...labels }, value: (cumulative += counts[i]!), metricName: `${this.name}_bucket` })),
        { labels: { le: "+Inf", ...labels }, value: count, metricName: `${this.name}_bucket` },
        { labels, value: sum, metricName: `${this.name}_sum` },
        { labels, value: count, metricName: `${this.name}_count` },
      ];
    });
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** A gauge without labels: set on every change (a queue's length, connections held), read at a scrape. */
export class FastGauge {
  readonly type = "gauge";
  readonly aggregator = "sum";
  private value = 0;

  constructor(readonly name: string, readonly help: string, registers: Registry[]) {
    for (const registry of registers) registry.registerMetric(this as never);
  }

  set(value: number): void {
    this.value = value;
  }

  reset(): void {
    this.value = 0;
  }

  async get() {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: [{ labels: {}, value: this.value }] };
  }
}
