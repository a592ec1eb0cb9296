/**
 * @module
 * A small metrics registry rendered in the Prometheus text exposition format (version 0.0.4), so an
 * operator can see what the daemon does without a dependency: counters and histograms that the
 * code updates, and gauges read from the running parts (volume, NBD server) at scrape time.
 * Label values are fixed per series when the series is created; the hot paths only add numbers.
 */

import { assert, assertEqual, assertFail } from "../util/assert.ts";

export type Labels = Readonly<Record<string, string>>;

/** Latency buckets in seconds: 1 ms to 30 s, roughly ×2.5 apart (S3 is ~20 ms in a region). */
export const LATENCY_BUCKETS_SECONDS = [
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
  30,
];

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

export class Counter {
  #value = 0;
  inc(by = 1): void {
    if (!(by >= 0)) assertFail(`a counter only goes up (by ${by})`);
    this.#value += by;
  }
  get value(): number {
    return this.#value;
  }
}

export class Histogram {
  readonly bucketsUpper: readonly number[];
  /** Count per bucket (not cumulative); the last slot is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(bucketsUpper: readonly number[]) {
    this.bucketsUpper = bucketsUpper;
    this.counts = new Array(bucketsUpper.length + 1).fill(0);
  }
  observe(value: number): void {
    let i = 0;
    while (i < this.bucketsUpper.length && value > this.bucketsUpper[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

interface Family {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  series: Map<string, { labels: Labels; metric: Counter | Histogram | (() => number | undefined) }>;
}

export class MetricsRegistry {
  #families = new Map<string, Family>();

  /** The counter for name + labels, created on first use. */
  counter(name: string, help: string, labels: Labels = {}): Counter {
    return this.#series(name, help, "counter", labels, () => new Counter()) as Counter;
  }

  histogram(name: string, help: string, labels: Labels = {}, buckets = LATENCY_BUCKETS_SECONDS): Histogram {
    return this.#series(name, help, "histogram", labels, () => new Histogram(buckets)) as Histogram;
  }

  /** A counter kept elsewhere (it must only grow), read at scrape time; undefined leaves it out. */
  counterFrom(name: string, help: string, read: () => number | undefined, labels: Labels = {}): void {
    this.#series(name, help, "counter", labels, () => read);
  }

  /** A gauge read at scrape time; a read that returns undefined leaves the series out. */
  gauge(name: string, help: string, read: () => number | undefined, labels: Labels = {}): void {
    this.#series(name, help, "gauge", labels, () => read);
  }

  #series(
    name: string,
    help: string,
    type: Family["type"],
    labels: Labels,
    create: () => Counter | Histogram | (() => number | undefined),
  ): Counter | Histogram | (() => number | undefined) {
    assert(NAME.test(name), `bad metric name ${name}`);
    let family = this.#families.get(name);
    if (family === undefined) {
      family = { name, help, type, series: new Map() };
      this.#families.set(name, family);
    }
    assertEqual(family.type, type, `metric ${name} registered as ${family.type} and ${type}`);
    const key = renderLabels(labels);
    let series = family.series.get(key);
    if (series === undefined) {
      series = { labels, metric: create() };
      family.series.set(key, series);
    }
    return series.metric;
  }

  /** The Prometheus text exposition of every metric. */
  render(): string {
    const lines: string[] = [];
    for (const family of this.#families.values()) {
      lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`, `# TYPE ${family.name} ${family.type}`);
      for (const { labels, metric } of family.series.values()) {
        if (metric instanceof Counter) {
          lines.push(`${family.name}${renderLabels(labels)} ${number(metric.value)}`);
        } else if (metric instanceof Histogram) lines.push(...renderHistogram(family.name, labels, metric));
        else {
          const value = metric();
          if (value !== undefined) lines.push(`${family.name}${renderLabels(labels)} ${number(value)}`);
        }
      }
    }
    return lines.join("\n") + "\n";
  }
}

function renderHistogram(name: string, labels: Labels, h: Histogram): string[] {
  const lines: string[] = [];
  let cumulative = 0;
  h.bucketsUpper.forEach((upper, i) => {
    cumulative += h.counts[i]!;
    lines.push(`${name}_bucket${renderLabels({ ...labels, le: number(upper) })} ${cumulative}`);
  });
  lines.push(`${name}_bucket${renderLabels({ ...labels, le: "+Inf" })} ${h.count}`);
  lines.push(`${name}_sum${renderLabels(labels)} ${number(h.sum)}`);
  lines.push(`${name}_count${renderLabels(labels)} ${h.count}`);
  return lines;
}

function renderLabels(labels: Labels): string {
  const entries = Object.entries(labels);
  if (entries.length === 0) return "";
  return `{${
    entries.map(([k, v]) => `${k}="${v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`)
      .join(",")
  }}`;
}

function escapeHelp(help: string): string {
  return help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function number(n: number): string {
  if (Number.isNaN(n)) return "NaN";
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  return String(n);
}
