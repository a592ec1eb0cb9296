/**
 * @module
 * Benchmark sizes. `tiny` keeps the smoke test under a couple of minutes, `small` (the default)
 * is a quick look that still exercises every code path, `full` (`--full`) is what RESULTS.md
 * should quote. Sustained writes are always at least four times lsvd's dirty-data limit, bursts
 * at most half of it, so the two targets measure different things at every size. At `small` the
 * sustained write is sixteen times the limit: at four (128 MiB) each target ran for about a second,
 * so start-up (JIT, first allocations) and the first fill of the dirty buffer at memory speed were a
 * large share of the figure, and rounds of nbdkit memory alone varied 15k–40k IOPS.
 */

const MiB = 1 << 20;
const GiB = 1 << 30;

export type ScaleName = "tiny" | "small" | "full";

export interface Scale {
  name: ScaleName;
  rounds: number;
  volumeBytes: number;
  /** Upper bound on each fio run, so slow peers cannot stall the run. */
  runtimeS: number;
  dirtyLimitBytes: number;
  sustainedWriteBytes: number;
  burstWriteBytes: number;
  seqWriteBytes: number;
  commitIos: number;
  /** Data written before each cold-read workload. */
  coldFillBytes: number;
  /** Region read by the warm random-read workload (fits lsvd's read cache). */
  warmRegionBytes: number;
  /** Bytes written by each memory fill (in two halves). */
  memoryFillBytes: number;
  restartObjects: number[];
  restartRounds: number;
  /** lsvd's read cache for the beyond-the-cache read, and the data written (and read) there. */
  beyondCacheBytes: number;
  beyondCacheFillBytes: number;
  /** pgbench: scale factor (10 = 1 M accounts, ~160 MB), seconds per run, client counts. */
  pgScale: number;
  pgSeconds: number;
  pgClients: number[];
}

export const SCALES: Record<ScaleName, Scale> = {
  tiny: {
    name: "tiny",
    rounds: 1,
    volumeBytes: 64 * MiB,
    runtimeS: 2,
    dirtyLimitBytes: 8 * MiB,
    sustainedWriteBytes: 32 * MiB,
    burstWriteBytes: 4 * MiB,
    seqWriteBytes: 32 * MiB,
    commitIos: 20,
    coldFillBytes: 8 * MiB,
    warmRegionBytes: 4 * MiB,
    memoryFillBytes: 16 * MiB,
    restartObjects: [50],
    restartRounds: 1,
    beyondCacheBytes: 4 * MiB,
    beyondCacheFillBytes: 32 * MiB,
    pgScale: 1,
    pgSeconds: 2,
    pgClients: [4, 16],
  },
  small: {
    name: "small",
    rounds: 3,
    volumeBytes: 512 * MiB,
    runtimeS: 4,
    dirtyLimitBytes: 32 * MiB,
    sustainedWriteBytes: 512 * MiB,
    burstWriteBytes: 24 * MiB,
    seqWriteBytes: 128 * MiB,
    commitIos: 100,
    coldFillBytes: 64 * MiB,
    warmRegionBytes: 16 * MiB,
    memoryFillBytes: 256 * MiB,
    restartObjects: [1000, 10000],
    restartRounds: 3,
    beyondCacheBytes: 16 * MiB,
    beyondCacheFillBytes: 128 * MiB,
    pgScale: 10,
    pgSeconds: 10,
    pgClients: [4, 16],
  },
  full: {
    name: "full",
    rounds: 3,
    volumeBytes: 8 * GiB,
    runtimeS: 20,
    dirtyLimitBytes: 256 * MiB,
    sustainedWriteBytes: 2 * GiB,
    burstWriteBytes: 128 * MiB,
    seqWriteBytes: 2 * GiB,
    commitIos: 500,
    coldFillBytes: 512 * MiB,
    warmRegionBytes: 32 * MiB,
    memoryFillBytes: 4 * GiB,
    restartObjects: [1000, 10000],
    restartRounds: 3,
    // lsvd's default read cache (64 MiB), as a user runs it.
    beyondCacheBytes: 64 * MiB,
    beyondCacheFillBytes: 512 * MiB,
    pgScale: 10,
    pgSeconds: 20,
    pgClients: [4, 16],
  },
};
