/**
 * @module
 * Reads the Prometheus text exposition format back into samples, for `lsvd status`, which shows
 * a running daemon's /metrics to a person. Only what the format needs for lsvd's own output:
 * comments, names, labels with escaped values, numbers (+Inf/-Inf/NaN).
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/y;

/** Parses the text; throws with the line number on anything malformed. */
export function parseMetricsText(text: string): Sample[] {
  const samples: Sample[] = [];
  text.split("\n").forEach((line, i) => {
    if (line.trim() === "" || line.startsWith("#")) return;
    const m = SAMPLE.exec(line);
    if (m === null) throw new Error(`line ${i + 1} is not a metric sample: ${line.slice(0, 80)}`);
    const labels: Record<string, string> = {};
    const body = m[3] ?? "";
    LABEL.lastIndex = 0;
    while (LABEL.lastIndex < body.length) {
      const at = LABEL.lastIndex;
      const l = LABEL.exec(body);
      if (l === null) {
        throw new Error(`line ${i + 1} has malformed labels at ${at}: ${body.slice(at, at + 40)}`);
      }
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => c === "n" ? "\n" : c);
    }
    const raw = m[4]!;
    const value = raw === "+Inf" ? Infinity : raw === "-Inf" ? -Infinity : Number(raw);
    if (Number.isNaN(value) && raw !== "NaN") throw new Error(`line ${i + 1} has a bad value "${raw}"`);
    samples.push({ name: m[1]!, labels, value });
  });
  return samples;
}

/** Sum of every sample of name whose labels include `where`. */
export function total(samples: readonly Sample[], name: string, where: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}

/** The value of a single sample, undefined when it is absent. */
export function valueOf(samples: readonly Sample[], name: string): number | undefined {
  return samples.find((s) => s.name === name)?.value;
}

/** Estimated quantile q from a histogram's cumulative buckets (upper bound of the bucket holding it). */
export function quantileUpper(
  samples: readonly Sample[],
  name: string,
  q: number,
  where: Record<string, string> = {},
): number | undefined {
  const buckets = samples
    .filter((s) => s.name === `${name}_bucket` && Object.entries(where).every(([k, v]) => s.labels[k] === v))
    .map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), count: s.value }))
    .sort((a, b) => a.le - b.le);
  const count = buckets.at(-1)?.count ?? 0;
  if (count === 0) return undefined;
  return buckets.find((b) => b.count >= q * count)?.le;
}
