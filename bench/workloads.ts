/**
 * @module
 * The workloads of issue 5, each as: how to prepare the data (fill, restart for a cold read),
 * the fio job that is measured, the figure taken from it, and how the raw-store baseline
 * (`raw_store.ts`) measures the backend limit for the same workload.
 */

import type { FioJob, FioResult } from "./fio.ts";
import type { RawResult } from "./raw_store.ts";
import type { Scale } from "./scale.ts";
import { LSVD_CONNECTIONS, LSVD_UPLOADS } from "./targets.ts";

const KiB = 1024;
const MiB = 1 << 20;
/** What lsvd's objects carry by default; raw PUTs and GETs of the bandwidth baselines use it. */
export const OBJECT_BYTES = 4 * MiB;
/** A sealed object holding one 4 KiB write: 12 KiB header, the data, a 48-byte trailer. */
export const SEALED_SMALL_OBJECT_BYTES = 12 * KiB + 4 * KiB + 48;
/** The queue depth of the cold random read, and lsvd's S3 connections: Little's law uses the smaller. */
export const COLD_READ_QD = 128;

export type Unit = "IOPS" | "MiB/s" | "ms";

export interface RawSpec {
  /** raw_store.ts arguments besides the store location. */
  args: string[];
  wan: boolean;
  /** The baseline figure in the workload's unit, and named extras. */
  metrics(r: RawResult): Record<string, number>;
}

export interface Workload {
  name: string;
  title: string;
  unit: Unit;
  higherIsBetter: boolean;
  /** Measured through the WAN delay proxy, after a restart (cold). */
  coldWan: boolean;
  fill?(s: Scale): FioJob;
  warmup?(s: Scale): FioJob;
  job(s: Scale): FioJob;
  metric(r: FioResult): number;
  rawS3?(s: Scale): RawSpec;
  rawDir?(s: Scale): RawSpec;
  /** Extra `lsvd serve` options for this workload only. */
  lsvdArgs?(s: Scale): string[];
}

const iops = (r: FioResult) => r.iops;
const mibPerS = (r: FioResult) => r.bytesPerS / MiB;

function seqFill(bytes: number): FioJob {
  return { name: "fill", rw: "write", blockSizeBytes: MiB, iodepth: 8, sizeBytes: bytes, endFsync: true };
}

function putSpec(count: number, objectBytes: number, concurrency: number, unit: Unit): RawSpec {
  return {
    args: [
      "--mode",
      "put",
      "--count",
      String(count),
      "--object-bytes",
      String(objectBytes),
      "--concurrency",
      String(concurrency),
    ],
    wan: false,
    metrics: (r) => ({
      value: unit === "IOPS" ? r.bytesPerS / (4 * KiB) : unit === "MiB/s" ? r.bytesPerS / MiB : r.p50Ms,
    }),
  };
}

function bandwidthPuts(bytes: number): RawSpec {
  return putSpec(Math.max(8, Math.ceil(bytes / OBJECT_BYTES)), OBJECT_BYTES, LSVD_UPLOADS, "IOPS");
}

export const randWrite: Workload = {
  name: "randwrite-4k",
  title: "4 KiB random write, QD32, sustained (ends with FLUSH)",
  unit: "IOPS",
  higherIsBetter: true,
  coldWan: false,
  job: (s) => ({
    name: "randwrite-4k",
    rw: "randwrite",
    blockSizeBytes: 4 * KiB,
    iodepth: 32,
    sizeBytes: s.volumeBytes,
    ioSizeBytes: s.sustainedWriteBytes,
    // The final FLUSH counts only if fio gets to it: lsvd at the bound finishes well inside this.
    runtimeS: s.runtimeS * 4,
    endFsync: true,
  }),
  metric: iops,
  // The store's raw write bandwidth ÷ 4 KiB, in IOPS.
  rawS3: (s) => bandwidthPuts(s.sustainedWriteBytes),
  rawDir: (s) => bandwidthPuts(s.sustainedWriteBytes),
};

export const randWriteBurst: Workload = {
  name: "randwrite-4k-burst",
  title: "4 KiB random write, QD32, burst within the dirty limit (no FLUSH)",
  unit: "IOPS",
  higherIsBetter: true,
  coldWan: false,
  // A short flushed write first, so the measured burst does not include warming up (JIT, pools).
  warmup: (s) => ({
    name: "warmup",
    rw: "randwrite",
    blockSizeBytes: 4 * KiB,
    iodepth: 32,
    sizeBytes: s.volumeBytes,
    ioSizeBytes: s.burstWriteBytes / 2,
    runtimeS: s.runtimeS,
    endFsync: true,
  }),
  job: (s) => ({
    name: "randwrite-4k-burst",
    rw: "randwrite",
    blockSizeBytes: 4 * KiB,
    iodepth: 32,
    sizeBytes: s.volumeBytes,
    ioSizeBytes: s.burstWriteBytes,
    runtimeS: s.runtimeS,
  }),
  metric: iops,
};

export const seqWrite: Workload = {
  name: "seqwrite-1m",
  title: "1 MiB sequential write, QD8 (ends with FLUSH)",
  unit: "MiB/s",
  higherIsBetter: true,
  coldWan: false,
  job: (s) => ({
    name: "seqwrite-1m",
    rw: "write",
    blockSizeBytes: MiB,
    iodepth: 8,
    sizeBytes: s.seqWriteBytes,
    runtimeS: s.runtimeS,
    endFsync: true,
  }),
  metric: mibPerS,
  rawS3: (s) =>
    putSpec(Math.max(8, Math.ceil(s.seqWriteBytes / OBJECT_BYTES)), OBJECT_BYTES, LSVD_UPLOADS, "MiB/s"),
};

export const commit: Workload = {
  name: "commit-4k-qd1",
  title: "4 KiB write + FLUSH, QD1: commit latency p50 (write + flush)",
  unit: "ms",
  higherIsBetter: false,
  coldWan: false,
  job: (s) => ({
    name: "commit-4k-qd1",
    rw: "randwrite",
    blockSizeBytes: 4 * KiB,
    iodepth: 1,
    sizeBytes: s.volumeBytes,
    ioSizeBytes: s.commitIos * 4 * KiB,
    runtimeS: s.runtimeS,
    fsyncEvery: 1,
  }),
  metric: (r) => r.latencyP50Ms + (r.syncP50Ms ?? NaN),
  // One PUT round trip of a sealed object holding one 4 KiB write.
  rawS3: (s) => putSpec(s.commitIos, SEALED_SMALL_OBJECT_BYTES, 1, "ms"),
  rawDir: (s) => putSpec(s.commitIos, SEALED_SMALL_OBJECT_BYTES, 1, "ms"),
};

export const randReadCold: Workload = {
  name: "randread-4k-cold-wan",
  title: "4 KiB random read, cold, QD128, WAN",
  unit: "IOPS",
  higherIsBetter: true,
  coldWan: true,
  fill: (s) => seqFill(s.coldFillBytes),
  job: (s) => ({
    name: "randread-4k-cold-wan",
    rw: "randread",
    blockSizeBytes: 4 * KiB,
    iodepth: COLD_READ_QD,
    sizeBytes: s.coldFillBytes,
    ioSizeBytes: s.coldFillBytes / 2,
    runtimeS: s.runtimeS,
  }),
  metric: iops,
  rawS3: (s) => ({
    args: [
      "--mode",
      "get",
      "--objects",
      String(Math.max(1, s.coldFillBytes / OBJECT_BYTES)),
      "--object-bytes",
      String(OBJECT_BYTES),
      "--range-bytes",
      String(4 * KiB),
      "--count",
      String(Math.min(s.coldFillBytes / (8 * KiB), 1500 * s.runtimeS)),
      "--concurrency",
      String(LSVD_CONNECTIONS),
      "--probe",
      "20",
    ],
    wan: true,
    metrics: (r) => ({
      value: r.opsPerS,
      getP50Ms: r.probeP50Ms ?? NaN,
      // Little's law: requests in flight ÷ per-request latency.
      littleBound: (Math.min(COLD_READ_QD, LSVD_CONNECTIONS) * 1000) / (r.probeP50Ms ?? NaN),
    }),
  }),
};

export const randReadWarm: Workload = {
  name: "randread-4k-warm",
  title: "4 KiB random read, warm (data read once before), QD32",
  unit: "IOPS",
  higherIsBetter: true,
  coldWan: false,
  fill: (s) => seqFill(s.warmRegionBytes),
  warmup: (s) => ({
    name: "warmup",
    rw: "read",
    blockSizeBytes: 64 * KiB,
    iodepth: 8,
    sizeBytes: s.warmRegionBytes,
    runtimeS: s.runtimeS * 4,
  }),
  job: (s) => ({
    name: "randread-4k-warm",
    rw: "randread",
    blockSizeBytes: 4 * KiB,
    iodepth: 32,
    sizeBytes: s.warmRegionBytes,
    ioSizeBytes: s.warmRegionBytes * 8,
    runtimeS: s.runtimeS,
  }),
  metric: iops,
};

export const randReadBeyondCache: Workload = {
  name: "randread-4k-beyond-cache",
  title: "4 KiB random read, QD32, of data written moments ago but no longer in lsvd's read cache",
  unit: "IOPS",
  higherIsBetter: true,
  coldWan: false,
  // Eight times the read cache, written and flushed just before: on the directory store the OS page
  // cache still holds it, so this measures lsvd's own read path beyond its cache.
  lsvdArgs: (s) => ["--cache-size", String(s.beyondCacheBytes)],
  fill: (s) => seqFill(s.beyondCacheFillBytes),
  job: (s) => ({
    name: "randread-4k-beyond-cache",
    rw: "randread",
    blockSizeBytes: 4 * KiB,
    iodepth: 32,
    sizeBytes: s.beyondCacheFillBytes,
    ioSizeBytes: s.beyondCacheFillBytes,
    runtimeS: s.runtimeS,
  }),
  metric: iops,
};

/**
 * The disk cache's case (issue 23, run only when named): a working set 8 × the read cache, read
 * through the WAN after a restart, once as a warm-up pass and then measured. Without --cache-dir
 * every read of the measured pass is a GET; with it, the warm-up pass filled the disk cache.
 */
export const randReadBeyondCacheWan: Workload = {
  name: "randread-4k-beyond-cache-wan",
  title: "4 KiB random read, QD32, WAN, of a working set 8 × the read cache, after one warm-up pass",
  unit: "IOPS",
  higherIsBetter: true,
  coldWan: true,
  lsvdArgs: (s) => ["--cache-size", String(s.beyondCacheBytes)],
  fill: (s) => seqFill(s.beyondCacheFillBytes),
  // The whole set once (no runtime cap: at the WAN's latency it outlasts the measured run).
  warmup: (s) => ({ ...randReadBeyondCacheWanJob(s), name: "warmup", runtimeS: 600 }),
  job: (s) => randReadBeyondCacheWanJob(s),
  metric: iops,
};

function randReadBeyondCacheWanJob(s: Scale): FioJob {
  return {
    name: "randread-4k-beyond-cache-wan",
    rw: "randread",
    blockSizeBytes: 4 * KiB,
    iodepth: 32,
    sizeBytes: s.beyondCacheFillBytes,
    ioSizeBytes: s.beyondCacheFillBytes,
    runtimeS: s.runtimeS,
  };
}

export const seqReadCold: Workload = {
  name: "seqread-1m-cold-wan",
  title: "1 MiB sequential read, cold, QD8, WAN",
  unit: "MiB/s",
  higherIsBetter: true,
  coldWan: true,
  fill: (s) => seqFill(s.coldFillBytes),
  job: (s) => ({
    name: "seqread-1m-cold-wan",
    rw: "read",
    blockSizeBytes: MiB,
    iodepth: 8,
    sizeBytes: s.coldFillBytes,
    runtimeS: s.runtimeS,
  }),
  metric: mibPerS,
  rawS3: (s) => {
    const objects = Math.max(2, s.coldFillBytes / OBJECT_BYTES);
    return {
      args: [
        "--mode",
        "get",
        "--objects",
        String(objects),
        "--object-bytes",
        String(OBJECT_BYTES),
        "--range-bytes",
        String(OBJECT_BYTES),
        "--count",
        String(objects),
        "--concurrency",
        String(LSVD_UPLOADS),
      ],
      wan: true,
      metrics: (r) => ({ value: r.bytesPerS / MiB }),
    };
  },
};

export const WORKLOADS: readonly Workload[] = [
  randWrite,
  randWriteBurst,
  seqWrite,
  commit,
  randReadCold,
  randReadWarm,
  randReadBeyondCache,
  seqReadCold,
  randReadBeyondCacheWan,
];
