/**
 * @module
 * Engine defaults that scale with the memory lsvd may use, so the daemon fits the small VM it is
 * injected into (Fly's guidance: 512 MiB, "the lsvd daemon will need some of it") as well as a
 * large server. The one rule is tuningDefaults(); flags and LSVD_* variables override each figure.
 *
 * Why these fractions: the daemon idles at about 70 MiB RSS, and a write burst adds roughly the
 * dirty limit plus the read cache on top. With dirty = total/16 and cache = total/32, a 512 MiB
 * machine gets 32 MiB + 16 MiB, keeping the peak near 128 MiB; at 4 GiB and more the defaults are
 * the figures the benchmarks were tuned with (256 MiB dirty, 64 MiB cache, 32 uploads).
 */

import {
  DEFAULT_CACHE_BYTES,
  DEFAULT_DIRTY_BYTES,
  DEFAULT_OBJECT_BYTES,
  DEFAULT_UPLOADS,
} from "../volume/volume_options.ts";

const MiB = 1024 * 1024;
/** A machine with enough memory gets the engine's own defaults (volume_options.ts owns the figures). */
const DIRTY_BYTES_CAP = DEFAULT_DIRTY_BYTES;
const CACHE_BYTES_CAP = DEFAULT_CACHE_BYTES;
const UPLOADS_CAP = DEFAULT_UPLOADS;

export interface TuningDefaults {
  objectBytes: number;
  dirtyBytes: number;
  cacheBytes: number;
  uploads: number;
}

/**
 * Defaults for a machine (or container) with memoryBytes: dirty = min(256M, memory/16), at least
 * two objects (one filling, one uploading); cache = min(64M, memory/32); uploads so that the
 * objects in flight plus the one filling fit in the dirty limit, at most 32.
 */
export function tuningDefaults(memoryBytes: number, objectBytes = DEFAULT_OBJECT_BYTES): TuningDefaults {
  const dirtyBytes = Math.max(2 * objectBytes, floorTo(Math.min(DIRTY_BYTES_CAP, memoryBytes / 16), MiB));
  const cacheBytes = floorTo(Math.min(CACHE_BYTES_CAP, memoryBytes / 32), MiB);
  const uploads = Math.max(1, Math.min(UPLOADS_CAP, Math.floor(dirtyBytes / objectBytes) - 1));
  return { objectBytes, dirtyBytes, cacheBytes, uploads };
}

/**
 * Each NBD connection's input buffer (ConnectionLimits.inputBufferBytes) for a dirty limit: a
 * thirty-second of it, whole MiB from 1 to 4 (4 from a 2 GiB machine up). A stream of WRITEs makes
 * it all resident, while one read of a socket returns at most what the socket holds, mostly far less
 * than 1 MiB. In the 512 MiB machine's write burst (nbdcopy, two connections) 1 MiB instead of 4
 * took 6-7 MiB off the peak (bench/RESULTS.md, "Issue 23: memory on a bucket, a real margin").
 */
export function nbdInputBufferBytes(dirtyBytes: number): number {
  return Math.min(4 * MiB, Math.max(MiB, floorTo(dirtyBytes / 32, MiB)));
}

function floorTo(n: number, unit: number): number {
  return Math.floor(n / unit) * unit;
}

/** Reads a file's text, undefined when it is missing or unreadable. */
export type ReadText = (path: string) => string | undefined;

const readTextQuietly: ReadText = (path) => {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
};

/**
 * Memory lsvd may use: the tightest cgroup limit that applies (v2 `memory.max`, v1
 * `memory.limit_in_bytes`, at the root of the mount and at this process's own cgroup path),
 * else the machine's RAM. "max" or an absurdly large number means no limit.
 */
export function availableMemoryBytes(
  read: ReadText = readTextQuietly,
  systemBytes: () => number = () => Deno.systemMemoryInfo().total,
): number {
  const own = (read("/proc/self/cgroup") ?? "").split("\n");
  const v2Path = own.find((l) => l.startsWith("0::"))?.slice(3) ?? "";
  const v1Path = own.map((l) => l.split(":")).find((f) => f[1]?.split(",").includes("memory"))?.[2] ?? "";
  const candidates = [
    "/sys/fs/cgroup/memory.max",
    `/sys/fs/cgroup${v2Path.replace(/\/$/, "")}/memory.max`,
    "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    `/sys/fs/cgroup/memory${v1Path.replace(/\/$/, "")}/memory.limit_in_bytes`,
  ];
  const system = systemBytes();
  let limit = system;
  for (const path of candidates) {
    const text = read(path)?.trim();
    if (text === undefined || !/^\d+$/.test(text)) continue; // "max", missing
    const bytes = Number(text);
    if (bytes > 0 && bytes < limit) limit = bytes;
  }
  return limit;
}
