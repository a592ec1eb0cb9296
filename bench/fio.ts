/**
 * @module
 * Runs one fio job against a target (an NBD export through fio's nbd engine, or a file on a FUSE
 * mount) and reads its `--output-format=json` report. A job that reports an error, or that
 * completes no I/O, throws: a benchmark that silently measured nothing is worse than none.
 */

import { run } from "./process.ts";

export type FioDevice =
  | { kind: "nbd"; socketPath: string; exportName: string }
  /** Any libnbd URI, e.g. nbd://HOST:PORT/NAME or nbds://... (bench/tls.ts). */
  | { kind: "uri"; uri: string }
  | { kind: "file"; path: string };

export interface FioJob {
  name: string;
  rw: "randwrite" | "write" | "randread" | "read";
  blockSizeBytes: number;
  iodepth: number;
  /** The region of the device the job touches, from offsetBytes. */
  sizeBytes: number;
  offsetBytes?: number;
  /** Bytes to transfer; defaults to sizeBytes. */
  ioSizeBytes?: number;
  /** Upper bound on the run; fio stops at whichever of ioSize and runtime comes first. */
  runtimeS?: number;
  /** Flush (NBD FLUSH / fsync) after every N writes. */
  fsyncEvery?: number;
  /** Flush once at the end, counted in the run time. */
  endFsync?: boolean;
  /** false: random offsets drawn with replacement (fio --norandommap), so a pass leaves some blocks
   *  unwritten and others written twice, as a real overwrite workload does. */
  randomMap?: boolean;
}

export interface FioResult {
  iops: number;
  bytesPerS: number;
  ios: number;
  runtimeMs: number;
  /** Completion latency p50 of the data direction, ms. */
  latencyP50Ms: number;
  latencyP99Ms: number;
  /** Flush latency p50 when the job flushed, ms. */
  syncP50Ms: number | undefined;
  /** False when fio stopped at its runtime cap before every write was done (and its final FLUSH). */
  complete: boolean;
}

export function fioArgs(job: FioJob, device: FioDevice, outputPath: string): string[] {
  const args = [
    `--name=${job.name}`,
    `--rw=${job.rw}`,
    `--bs=${job.blockSizeBytes}`,
    `--iodepth=${job.iodepth}`,
    `--size=${job.sizeBytes}`,
    `--offset=${job.offsetBytes ?? 0}`,
    `--io_size=${job.ioSizeBytes ?? job.sizeBytes}`,
    "--randrepeat=0",
    "--group_reporting=1",
    "--output-format=json",
    `--output=${outputPath}`,
  ];
  if (job.runtimeS !== undefined) args.push(`--runtime=${job.runtimeS}`);
  if (job.fsyncEvery !== undefined) args.push(`--fsync=${job.fsyncEvery}`);
  if (job.endFsync === true) args.push("--end_fsync=1");
  if (job.randomMap === false) args.push("--norandommap");
  if (device.kind === "nbd") {
    const uri = `nbd+unix:///${encodeURIComponent(device.exportName)}?socket=${device.socketPath}`;
    args.push("--ioengine=nbd", `--uri=${uri}`);
  } else if (device.kind === "uri") {
    args.push("--ioengine=nbd", `--uri=${device.uri}`);
  } else {
    args.push("--ioengine=libaio", "--direct=1", `--filename=${device.path}`);
  }
  return args;
}

export async function runFio(job: FioJob, device: FioDevice, timeoutMs = 600_000): Promise<FioResult> {
  const outputPath = await Deno.makeTempFile({ prefix: "lsvd-bench-fio-", suffix: ".json" });
  try {
    const result = await run("fio", fioArgs(job, device, outputPath), { timeoutMs });
    const text = await Deno.readTextFile(outputPath);
    if (result.code !== 0) {
      const said = `${result.stdout}\n${result.stderr}`.split("\n").filter((l) => /err|fio:/i.test(l));
      throw new Error(
        `Cannot run fio job ${job.name}: exit code ${result.code}\n${said.join("\n").slice(-2000)}`,
      );
    }
    return parseFioJson(job, text);
  } finally {
    await Deno.remove(outputPath).catch(() => {});
  }
}

interface FioDirection {
  iops: number;
  bw_bytes: number;
  total_ios: number;
  clat_ns: { percentile?: Record<string, number> };
}

/** Extracts the figures of the job's data direction; the JSON may follow stray text lines. */
export function parseFioJson(job: FioJob, text: string): FioResult {
  const start = text.indexOf("{");
  if (start < 0) throw new Error(`Cannot parse fio output of ${job.name}: no JSON\n${text.slice(0, 500)}`);
  const report = JSON.parse(text.slice(start));
  const j = report.jobs?.[0];
  if (j === undefined) throw new Error(`Cannot parse fio output of ${job.name}: no jobs`);
  if (j.error !== 0) throw new Error(`Cannot run fio job ${job.name}: fio reported error ${j.error}`);
  const dir: FioDirection = job.rw.endsWith("write") ? j.write : j.read;
  if (!(dir.total_ios > 0)) throw new Error(`Cannot run fio job ${job.name}: it completed no I/O`);
  const pct = dir.clat_ns.percentile ?? {};
  const syncPct = j.sync?.lat_ns?.percentile as Record<string, number> | undefined;
  const syncP50 = syncPct?.["50.000000"];
  return {
    iops: dir.iops,
    bytesPerS: dir.bw_bytes,
    ios: dir.total_ios,
    runtimeMs: j.job_runtime,
    latencyP50Ms: (pct["50.000000"] ?? NaN) / 1e6,
    latencyP99Ms: (pct["99.000000"] ?? NaN) / 1e6,
    syncP50Ms: j.sync?.total_ios > 0 && syncP50 !== undefined ? syncP50 / 1e6 : undefined,
    complete: dir.total_ios >= Math.floor((job.ioSizeBytes ?? job.sizeBytes) / job.blockSizeBytes),
  };
}
