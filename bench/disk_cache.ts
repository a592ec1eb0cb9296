/**
 * @module
 * The disk cache's benchmark (issue 23), side by side in one run: 4 KiB random reads at QD32 over a
 * working set far beyond lsvd's memory read cache (the DEFAULT --cache-size: no override), on Ceph
 * RGW behind the WAN delay proxy.
 *
 *   (b) lsvd without --cache-dir: every read the memory cache misses is a ranged GET at WAN latency.
 *   (a) lsvd with --cache-dir, after ONE sequential 1 MiB read pass (QD8) as the warm-up: read-ahead
 *       and the reads themselves go through Fetcher.get, which keeps every verified range in the disk
 *       cache (src/volume/fetcher.ts), so one sequential pass fills it; a random 4 KiB pass would take
 *       hours at the WAN's latency. The disk cache's size after the pass is reported as evidence.
 *   (c) the same daemon restarted on the same --cache-dir: the first --seconds of the same reads.
 *   local-file: fio on a plain file of the same size in the same directory (same disk) as the cache
 *       directory, libaio, NOT O_DIRECT: the disk cache reads through the page cache, so must the bar.
 *   local-file-direct: the same file read with O_DIRECT at the same depth: the disk itself, what
 *       "local-disk speed" means when the working set is not in the machine's page cache.
 *   nbdkit-file: the same file served by `nbdkit file` over a unix socket, read with fio's nbd engine
 *       (the engine every lsvd run uses): what the NBD transport alone costs on top of the file.
 *
 * Checks: (a) ≥ 0.5 × local-file-direct, (a) ≥ 0.5 × local-file, (c) ≥ 0.8 × (a); (a) ÷ (b) is the
 * headline.
 *
 *   deno run -A bench/disk_cache.ts                       # 2 GiB working set, 30 s per measured run
 *   deno run -A bench/disk_cache.ts --size-mib 512 --seconds 20
 *   deno run -A bench/disk_cache.ts --write-results       # also prepend the table to bench/RESULTS.md
 */

import { parseArgs } from "node:util";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type RunningBackend, startBackend } from "./backend.ts";
import { fioArgs, type FioDevice, type FioJob, type FioResult, parseFioJson, runFio } from "./fio.ts";
import { scrapeLsvdMetrics } from "./lsvd_metrics.ts";
import { type Daemon, procStatusBytes, run, startDaemon, waitForPath } from "./process.ts";
import { loadAverage, prependToResults } from "./report.ts";
import { formatNumber } from "./stats.ts";
import { startLsvd, type TargetContext } from "./targets.ts";
import { freePort } from "../tests/support/ports.ts";

const REPO_ROOT = dirname(dirname(fileURLToPath(import.meta.url)));
const MiB = 2 ** 20;
/** Bytes the disk cache spends per 4 KiB sector (data + index record, src/cache/disk_cache.ts). */
const SLOT_DISK_BYTES = 4096 + 16;
/** fio stops at its runtime: the io size is only an upper bound that is never reached. */
const LOOPS = 1000;
const WARMUP_TIMEOUT_MS = 1_800_000;

interface Options {
  sizeBytes: number;
  seconds: number;
  delayMs: number;
  /** `--cache-size` for every lsvd run; undefined: lsvd's default (the set-up). */
  memoryCacheBytes: number | undefined;
  writeResults: boolean;
}

export interface Row {
  name: string;
  what: string;
  fio: FioResult;
  /** Peak RSS of the serving process (VmHWM), bytes. */
  peakRssBytes?: number;
  note?: string;
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: {
      "size-mib": { type: "string", default: "2048" },
      seconds: { type: "string", default: "30" },
      "delay-ms": { type: "string", default: "20" },
      "memory-cache-mib": { type: "string" },
      "write-results": { type: "boolean" },
    },
  });
  const sizeMib = Number(values["size-mib"]);
  const seconds = Number(values.seconds);
  if (!(Number.isInteger(sizeMib) && sizeMib >= 4 && sizeMib % 4 === 0)) {
    throw new Error(`Invalid --size-mib ${values["size-mib"]}: a multiple of 4, at least 4`);
  }
  if (!(Number.isInteger(seconds) && seconds >= 1)) throw new Error(`Invalid --seconds ${values.seconds}`);
  return {
    sizeBytes: sizeMib * MiB,
    seconds,
    delayMs: Number(values["delay-ms"]),
    memoryCacheBytes: values["memory-cache-mib"] === undefined
      ? undefined
      : Number(values["memory-cache-mib"]) * MiB,
    writeResults: values["write-results"] === true,
  };
}

/** The measured job: 4 KiB random reads at QD32 over the whole working set, for `seconds`. */
function randRead(o: Options): FioJob {
  return {
    name: "randread-4k-qd32",
    rw: "randread",
    blockSizeBytes: 4096,
    iodepth: 32,
    sizeBytes: o.sizeBytes,
    ioSizeBytes: LOOPS * o.sizeBytes,
    runtimeS: o.seconds,
  };
}

function sequential(rw: "read" | "write", sizeBytes: number): FioJob {
  return { name: `seq${rw}-1m`, rw, blockSizeBytes: MiB, iodepth: 8, sizeBytes, endFsync: rw === "write" };
}

/** A disk cache that holds every sector of the working set: slots × (4 KiB + 16) + the small files. */
function cacheDirSizeBytes(sizeBytes: number): number {
  return Math.ceil(((sizeBytes / 4096) * SLOT_DISK_BYTES + 64 * 1024) / MiB) * MiB;
}

interface Lsvd {
  daemon: Daemon;
  device: FioDevice;
  metricsPort: number;
  startMs: number;
}

async function serve(
  ctx: TargetContext,
  bucket: string,
  o: { wan: boolean; extra: string[] },
): Promise<Lsvd> {
  const socketPath = join(ctx.tmpDir, `lsvd-${ctx.nextId()}.sock`);
  const metricsPort = freePort();
  const t0 = performance.now();
  const daemon = await startLsvd(ctx, {
    socketPath,
    storeArgs: ["--bucket", bucket, "--path-style"],
    wan: o.wan,
    label: "lsvd",
    extraArgs: ["--metrics", `127.0.0.1:${metricsPort}`, ...o.extra],
  });
  return {
    daemon,
    device: { kind: "nbd", socketPath, exportName: "lsvd" },
    metricsPort,
    startMs: performance.now() - t0,
  };
}

async function stopLsvd(lsvd: Lsvd): Promise<void> {
  const code = await lsvd.daemon.stop();
  if (code !== 0) throw new Error(`Cannot stop lsvd cleanly: exit code ${code}\n${lsvd.daemon.output}`);
}

async function diskCacheFigures(lsvd: Lsvd): Promise<Record<string, number>> {
  const m = await scrapeLsvdMetrics(lsvd.metricsPort);
  const pick = (name: string) => m.get(name) ?? NaN;
  return {
    bytes: pick("lsvd_disk_cache_bytes"),
    hits: pick("lsvd_disk_cache_hits_total"),
    misses: pick("lsvd_disk_cache_misses_total"),
    fills: pick("lsvd_disk_cache_fills_total"),
    dropped: pick("lsvd_disk_cache_dropped_total"),
    memoryCacheBytes: pick("lsvd_cache_bytes"),
  };
}

function log(line: string): void {
  console.error(`disk_cache: ${line}`);
}

/** Writes the working set once (sequential 1 MiB, flushed) through the direct endpoint. */
async function fill(ctx: TargetContext, bucket: string, o: Options): Promise<void> {
  const lsvd = await serve(ctx, bucket, { wan: false, extra: [] });
  try {
    const r = await runFio(sequential("write", o.sizeBytes), lsvd.device, WARMUP_TIMEOUT_MS);
    log(`filled ${o.sizeBytes / MiB} MiB at ${formatNumber(r.bytesPerS / MiB)} MiB/s`);
  } finally {
    await stopLsvd(lsvd);
  }
}

/** (b): no disk cache, through the WAN. */
async function withoutDiskCache(ctx: TargetContext, bucket: string, o: Options): Promise<Row> {
  const lsvd = await serve(ctx, bucket, { wan: true, extra: [] });
  try {
    const fio = await runFio(randRead(o), lsvd.device);
    const peakRssBytes = await procStatusBytes(lsvd.daemon.pid, "VmHWM");
    return { name: "(b) lsvd-rgw", what: "no --cache-dir, memory cache only", fio, peakRssBytes };
  } finally {
    await stopLsvd(lsvd);
  }
}

/** (a): --cache-dir, one sequential warm-up pass, then the random reads; the daemon is stopped after. */
async function withDiskCache(
  ctx: TargetContext,
  bucket: string,
  o: Options,
  cacheArgs: string[],
): Promise<Row> {
  const lsvd = await serve(ctx, bucket, { wan: true, extra: cacheArgs });
  try {
    const t0 = performance.now();
    const warm = await runFio(sequential("read", o.sizeBytes), lsvd.device, WARMUP_TIMEOUT_MS);
    const warmS = (performance.now() - t0) / 1000;
    const held = await diskCacheFigures(lsvd);
    const heldShare = held.bytes! / o.sizeBytes;
    log(
      `warm-up: ${formatNumber(warm.bytesPerS / MiB)} MiB/s, ${warmS.toFixed(1)} s; disk cache holds ${
        (held.bytes! / MiB).toFixed(0)
      } MiB (${(100 * heldShare).toFixed(1)} % of the set)`,
    );
    const fio = await runFio(randRead(o), lsvd.device);
    const after = await diskCacheFigures(lsvd);
    const peakRssBytes = await procStatusBytes(lsvd.daemon.pid, "VmHWM");
    return {
      name: "(a) lsvd-rgw --cache-dir",
      what: "after one sequential 1 MiB read pass",
      fio,
      peakRssBytes,
      note: `warm-up ${warmS.toFixed(1)} s at ${formatNumber(warm.bytesPerS / MiB)} MiB/s left ${
        (held.bytes! / MiB).toFixed(0)
      } MiB (${(100 * heldShare).toFixed(1)} %) in the disk cache; measured run: ${hitsNote(held, after)}`,
    };
  } finally {
    await stopLsvd(lsvd);
  }
}

function count(n: number): string {
  return n.toLocaleString("en-US");
}

function hitsNote(before: Record<string, number>, after: Record<string, number>): string {
  const hits = after.hits! - before.hits!;
  const misses = after.misses! - before.misses!;
  return `${count(hits)} disk-cache hits, ${count(misses)} misses, ${count(after.dropped!)} dropped`;
}

/** (c): a fresh daemon on the same --cache-dir, measured from its first read for `seconds`. */
async function afterRestart(
  ctx: TargetContext,
  bucket: string,
  o: Options,
  cacheArgs: string[],
): Promise<Row> {
  const lsvd = await serve(ctx, bucket, { wan: true, extra: cacheArgs });
  try {
    const before = await diskCacheFigures(lsvd);
    const fio = await runFio(randRead(o), lsvd.device);
    const after = await diskCacheFigures(lsvd);
    const peakRssBytes = await procStatusBytes(lsvd.daemon.pid, "VmHWM");
    return {
      name: "(c) lsvd-rgw --cache-dir, restarted",
      what: `first ${o.seconds} s after a restart on the same --cache-dir`,
      fio,
      peakRssBytes,
      note: `start to "Device is now operational" ${formatNumber(lsvd.startMs)} ms with ${
        (before.bytes! / MiB).toFixed(0)
      } MiB kept; ${hitsNote(before, after)}`,
    };
  } finally {
    await stopLsvd(lsvd);
  }
}

/**
 * fio on the plain file: libaio as the other file runs, buffered (the disk cache is too). The first
 * row keeps the file in the page cache, as the disk cache's data file is (--invalidate=0); the cold
 * row lets fio drop the file's pages first (its default), so its reads reach the disk one at a time
 * (buffered libaio submits synchronously); the direct row reads the disk at the full depth.
 */
async function localFile(path: string, o: Options): Promise<Row[]> {
  const device: FioDevice = { kind: "file", path };
  const write = await fioOnFile(sequential("write", o.sizeBytes), device, false);
  log(`local file written at ${formatNumber(write.bytesPerS / MiB)} MiB/s`);
  const what = "fio libaio, buffered (not O_DIRECT), same disk as --cache-dir";
  const warm = await fioOnFile(randRead(o), device, false);
  log(`local file ${formatNumber(warm.iops)} IOPS`);
  const cold = await fioOnFile(randRead(o), device, true);
  log(`local file, page cache dropped ${formatNumber(cold.iops)} IOPS`);
  const direct = await fioOnFile(randRead(o), device, true, true);
  log(`local file, O_DIRECT ${formatNumber(direct.iops)} IOPS`);
  return [
    { name: "local-file", what: `${what}, in the page cache (fio --invalidate=0)`, fio: warm },
    { name: "local-file-cold", what: `${what}, page cache dropped at start (fio --invalidate=1)`, fio: cold },
    {
      name: "local-file-direct",
      what: "fio libaio, O_DIRECT (the disk itself at QD32), same file",
      fio: direct,
    },
  ];
}

async function fioOnFile(
  job: FioJob,
  device: FioDevice,
  invalidate: boolean,
  direct = false,
): Promise<FioResult> {
  const outputPath = await Deno.makeTempFile({ prefix: "lsvd-bench-fio-", suffix: ".json" });
  try {
    const args = fioArgs(job, device, outputPath).map((a) =>
      a === "--direct=1" ? `--direct=${direct ? 1 : 0}` : a
    );
    args.push(`--invalidate=${invalidate ? 1 : 0}`);
    const result = await run("fio", args, { timeoutMs: WARMUP_TIMEOUT_MS });
    if (result.code !== 0) throw new Error(`Cannot run fio job ${job.name}: ${result.stderr.slice(-2000)}`);
    return parseFioJson(job, await Deno.readTextFile(outputPath));
  } finally {
    await Deno.remove(outputPath).catch(() => {});
  }
}

/**
 * The same file through `nbdkit file` and fio's nbd engine (the engine of every lsvd row), read
 * from the page cache as (a) reads the disk cache's files: the cold and O_DIRECT rows before it left
 * the file's pages dropped, so it is read whole once first (before 2026-12-06 it was not, and its
 * first seconds read the disk).
 */
async function nbdkitFile(ctx: TargetContext, path: string, o: Options): Promise<Row> {
  const warm = await run("dd", [`if=${path}`, "of=/dev/null", "bs=1M"], { timeoutMs: WARMUP_TIMEOUT_MS });
  if (warm.code !== 0) throw new Error(`Cannot read ${path} into the page cache: ${warm.stderr}`);
  const socketPath = join(ctx.tmpDir, "nbdkit-file.sock");
  const daemon = await startDaemon("nbdkit", {
    args: ["--foreground", "--exit-with-parent", "--unix", socketPath, "file", path],
    label: "nbdkit file",
  });
  try {
    await waitForPath(socketPath, 60_000);
    const fio = await runFio(randRead(o), { kind: "nbd", socketPath, exportName: "" });
    const peakRssBytes = await procStatusBytes(daemon.pid, "VmHWM");
    return {
      name: "nbdkit-file",
      what: "the local file over NBD (nbdkit file, fio nbd engine), in the page cache",
      fio,
      peakRssBytes,
    };
  } finally {
    await daemon.stop(5_000);
  }
}

async function measureAll(ctx: TargetContext, backend: RunningBackend, o: Options): Promise<Row[]> {
  const bucket = await backend.newBucket();
  try {
    await fill(ctx, bucket, o);
    const cacheDir = join(ctx.tmpDir, "cache-dir");
    const cacheArgs = ["--cache-dir", cacheDir, "--cache-dir-size", String(cacheDirSizeBytes(o.sizeBytes))];
    const rows: Row[] = [];
    rows.push(await withoutDiskCache(ctx, bucket, o));
    log(`(b) ${formatNumber(rows.at(-1)!.fio.iops)} IOPS`);
    rows.push(await withDiskCache(ctx, bucket, o, cacheArgs));
    log(`(a) ${formatNumber(rows.at(-1)!.fio.iops)} IOPS`);
    rows.push(await afterRestart(ctx, bucket, o, cacheArgs));
    log(`(c) ${formatNumber(rows.at(-1)!.fio.iops)} IOPS`);
    const file = join(ctx.tmpDir, "local-file");
    rows.push(...await localFile(file, o));
    rows.push(await nbdkitFile(ctx, file, o));
    log(`nbdkit file ${formatNumber(rows.at(-1)!.fio.iops)} IOPS`);
    return rows;
  } finally {
    await backend.dropBucket(bucket).catch(() => {});
  }
}

interface Check {
  what: string;
  measured: number;
  bound: number;
}

export function checksOf(rows: Row[]): Check[] {
  const iops = (name: string) => rows.find((r) => r.name.split(" ")[0] === name)!.fio.iops;
  return [
    { what: "(a) ≥ 0.5 × local-file-direct", measured: iops("(a)"), bound: 0.5 * iops("local-file-direct") },
    { what: "(a) ≥ 0.5 × local-file", measured: iops("(a)"), bound: 0.5 * iops("local-file") },
    { what: "(c) ≥ 0.8 × (a)", measured: iops("(c)"), bound: 0.8 * iops("(a)") },
  ];
}

function memoryCacheOf(o: Options): string {
  return o.memoryCacheBytes === undefined
    ? "default memory cache"
    : `--cache-size ${o.memoryCacheBytes / MiB} MiB`;
}

function render(args: string[], o: Options, rows: Row[], load: { before: string; after: string }): string {
  const iops = (name: string) => rows.find((r) => r.name.split(" ")[0] === name)!.fio.iops;
  const a = iops("(a)");
  const command = `deno run -A bench/disk_cache.ts ${args.join(" ")}`.trim();
  const table = rows.map((r) =>
    `| ${r.name} | ${r.what} | ${formatNumber(r.fio.iops)} | ${formatNumber(r.fio.latencyP50Ms)} / ${
      formatNumber(r.fio.latencyP99Ms)
    } | ${r.peakRssBytes === undefined ? "" : (r.peakRssBytes / MiB).toFixed(0)} |`
  );
  const checks = checksOf(rows).map((c) =>
    `| ${c.what} | ${formatNumber(c.measured)} IOPS | ≥ ${formatNumber(c.bound)} IOPS | ${
      c.measured >= c.bound ? "PASS" : "MISS"
    } |`
  );
  return [
    `## Issue 23: disk cache, ${
      o.sizeBytes / MiB
    } MiB working set on Ceph RGW behind the ${o.delayMs} ms WAN ` +
    `delay, ${memoryCacheOf(o)} (${
      new Date().toISOString()
    }, load average ${load.before} before, ${load.after} after)`,
    "",
    `\`${command}\``,
    "",
    `4 KiB random reads, QD32, ${o.seconds} s per run, one run each, in this order: (b), (a), (c), local-file, local-file-cold, local-file-direct, nbdkit-file.`,
    "",
    "| run | what | IOPS | fio p50 / p99 ms | peak RSS MiB |",
    "| --- | ---- | ---: | ---------------: | -----------: |",
    ...table,
    "",
    `Headline (a) ÷ (b): **${
      formatNumber(a / iops("(b)"))
    } ×**. Also (a) ÷ nbdkit-file (the same reads of the ` +
    `local file through NBD and fio's nbd engine): ${formatNumber(a / iops("nbdkit-file"))} ×; (a) ÷ ` +
    `local-file-cold: ${formatNumber(a / iops("local-file-cold"))} ×; (a) ÷ local-file-direct: ${
      formatNumber(a / iops("local-file-direct"))
    } ×. Buffered libaio submits synchronously, ` +
    "so the local-file rows are one thread's page-cache (or disk) reads whatever the iodepth.",
    "",
    "| check | measured | bound | result |",
    "| ----- | -------: | ----: | ------ |",
    ...checks,
    "",
    ...rows.filter((r) => r.note !== undefined).map((r) => `- ${r.name}: ${r.note}`),
    "",
  ].join("\n");
}

/** Runs the comparison; prints (and with --write-results records) the table. Returns the rows. */
export async function main(args: string[]): Promise<Row[]> {
  const o = parseOptions(args);
  const before = await loadAverage();
  const tmpDir = await Deno.makeTempDir({ prefix: "lsvd-bench-diskcache-" });
  const backend = await startBackend(REPO_ROOT, {
    delayMs: o.delayMs,
    memoryBytes: 2 * o.sizeBytes + 2 ** 30,
  });
  let rows: Row[];
  try {
    let id = 0;
    const ctx: TargetContext = {
      repoRoot: REPO_ROOT,
      tmpDir,
      volumeBytes: o.sizeBytes,
      lsvdArgs: o.memoryCacheBytes === undefined ? [] : ["--cache-size", String(o.memoryCacheBytes)],
      s3: backend,
      nextId: () => ++id,
    };
    rows = await measureAll(ctx, backend, o);
  } finally {
    await backend.stop();
    await Deno.remove(tmpDir, { recursive: true }).catch(() => {});
  }
  const section = render(args, o, rows, { before, after: await loadAverage() });
  console.log(section);
  if (o.writeResults) await prependToResults(section);
  return rows;
}

if (import.meta.main) {
  try {
    await main(Deno.args);
  } catch (e) {
    console.error(`bench/disk_cache.ts: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
