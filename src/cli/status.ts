/**
 * @module
 * `lsvd status`: fetches /metrics from a running `lsvd serve --metrics HOST:PORT` and prints it
 * for a person: memory, the log's progress, store traffic with latencies and errors, connections.
 * The address comes from --metrics or LSVD_METRICS, the same setting serve reads.
 */

import { parseMetricsText, quantileUpper, type Sample, total, valueOf } from "../metrics/text_format.ts";
import { flagOption, helpText, listenOption, parseOptions, UsageError, wantsHelp } from "./options.ts";

const STATUS_OPTIONS = {
  metrics: listenOption({
    group: "serving",
    help: "Address the daemon serves metrics on (its --metrics)",
    placeholder: "HOST:PORT",
  }),
  raw: flagOption({ help: "Print the Prometheus text as served" }),
};

const FETCH_TIMEOUT_MS = 5_000;

export async function statusCommand(args: string[]): Promise<number> {
  if (wantsHelp(args)) {
    console.log(helpText({
      command: "status",
      summary: "Shows what a running lsvd serve is doing, read from its --metrics endpoint.",
      specs: STATUS_OPTIONS,
      examples: [
        "lsvd serve --size 10G --metrics 127.0.0.1:9477 &",
        "lsvd status --metrics 127.0.0.1:9477",
        "curl -s http://127.0.0.1:9477/metrics          # the same, for Prometheus",
      ],
    }));
    return 0;
  }
  const options = parseOptions(args, STATUS_OPTIONS).noPositionals();
  const address = options.values.metrics;
  if (address === undefined) {
    throw new UsageError(
      "No metrics address: give --metrics HOST:PORT (or LSVD_METRICS), as given to lsvd serve",
    );
  }
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  const url = `http://${host}:${address.port}/metrics`;
  const text = await fetchText(url);
  if (options.values.raw) {
    console.log(text.trimEnd());
    return 0;
  }
  let samples: Sample[];
  try {
    samples = parseMetricsText(text);
  } catch (e) {
    throw new UsageError(`Cannot read ${url}: not lsvd metrics (${(e as Error).message})`);
  }
  if (
    valueOf(samples, "lsvd_dirty_bytes") === undefined &&
    valueOf(samples, "lsvd_process_resident_bytes") === undefined
  ) {
    throw new UsageError(`Cannot read ${url}: the server there is not lsvd`);
  }
  console.log(renderStatus(url, samples));
  return 0;
}

async function fetchText(url: string): Promise<string> {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
    const text = await response.text();
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return text;
  } catch (e) {
    const cause = e instanceof DOMException && e.name === "TimeoutError"
      ? `no answer in ${FETCH_TIMEOUT_MS / 1000} s`
      : (e instanceof Error ? e.message : String(e)).replace(
        /^error sending request for url \([^)]*\): /,
        "",
      );
    throw new UsageError(`Cannot read ${url}: ${cause}; is lsvd serve running with --metrics there?`);
  }
}

/** The person-readable summary of one scrape. */
export function renderStatus(url: string, s: readonly Sample[]): string {
  const v = (name: string) => valueOf(s, name);
  const ms = (op: string, q: number) => {
    const upper = quantileUpper(s, "lsvd_store_request_duration_seconds", q, { op });
    return upper === undefined ? "-" : upper === Infinity ? "> 30 s" : `<= ${upper * 1000} ms`;
  };
  const errors = s.filter((x) => x.name === "lsvd_store_errors_total" && x.value > 0)
    .map((x) => `${x.labels.op} ${x.labels.kind} ${x.value}`);
  const ratio = v("lsvd_cache_hit_ratio");
  const rows: [string, string][] = [
    ["Volume", `${bytes(v("lsvd_volume_size_bytes"))}`],
    ["Dirty (not yet stored)", bytes(v("lsvd_dirty_bytes"))],
    ["Journal (not yet stored)", journal(v("lsvd_journal_pending_bytes"), v("lsvd_journal_bytes"))],
    [
      "Log objects",
      `newest ${v("lsvd_log_last_sequence") ?? "-"}, stored through ${v("lsvd_log_durable_through") ?? "-"}`,
    ],
    [
      "Uploaded",
      `${total(s, "lsvd_log_objects_uploaded_total")} log objects, ${
        bytes(total(s, "lsvd_store_uploaded_bytes_total"))
      }`,
    ],
    ["Downloaded", bytes(total(s, "lsvd_store_downloaded_bytes_total"))],
    [
      "Store requests",
      ["put", "get", "head", "list", "delete", "copy"].map((op) =>
        `${op.toUpperCase()} ${total(s, "lsvd_store_requests_total", { op })}`
      )
        .join(", "),
    ],
    ["PUT latency", `p50 ${ms("put", 0.5)}, p99 ${ms("put", 0.99)}`],
    ["GET latency", `p50 ${ms("get", 0.5)}, p99 ${ms("get", 0.99)}`],
    ["Retries", String(total(s, "lsvd_store_retries_total"))],
    ["Errors", errors.length === 0 ? "none" : errors.join(", ")],
    [
      "Client I/O",
      `read ${bytes(total(s, "lsvd_nbd_read_bytes_total"))}, written ${
        bytes(total(s, "lsvd_nbd_written_bytes_total"))
      }, ${total(s, "lsvd_nbd_requests_total")} requests, ${total(s, "lsvd_nbd_error_replies_total")} errors`,
    ],
    [
      "NBD connections",
      `${v("lsvd_nbd_connections") ?? 0} open, ${
        total(s, "lsvd_nbd_connections_accepted_total")
      } since start`,
    ],
    ["Extent map", `${bytes(v("lsvd_map_bytes"))} (${v("lsvd_map_extents") ?? "-"} extents)`],
    [
      "Read cache",
      `${bytes(v("lsvd_cache_bytes"))}${
        ratio === undefined ? "" : `, hit ratio ${(ratio * 100).toFixed(1)}%`
      }`,
    ],
    ["Disk cache", diskCache(s)],
    ["Resident memory", bytes(v("lsvd_process_resident_bytes"))],
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  return [`lsvd at ${url}`, ...rows.map(([k, val]) => `  ${k.padEnd(width)}  ${val}`)].join("\n");
}

function diskCache(s: readonly Sample[]): string {
  const held = valueOf(s, "lsvd_disk_cache_bytes");
  if (held === undefined) return "none (no --cache-dir)";
  const n = (name: string) => total(s, `lsvd_disk_cache_${name}_total`);
  return `${bytes(held)} of ${bytes(valueOf(s, "lsvd_disk_cache_capacity_bytes"))}, ${n("hits")} hits, ` +
    `${n("misses")} misses, ${n("evictions")} evictions, ${n("dropped")} dropped`;
}

function journal(pending: number | undefined, files: number | undefined): string {
  if (pending === undefined || (pending === 0 && !files)) return "none (no --journal, or empty)";
  return `${bytes(pending)} pending upload, ${bytes(files)} in segment files`;
}

function bytes(n: number | undefined): string {
  if (n === undefined) return "-";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let x = n;
  while (x >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return i === 0 ? `${n} bytes` : `${x.toFixed(1)} ${units[i]}`;
}
