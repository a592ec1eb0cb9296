/**
 * @module
 * The gauges `lsvd serve` exports that are read from the running volume and process at scrape
 * time (the store and NBD layers count their own events). The volume is read through a structural
 * view of `Volume.stats`, so this layer does not depend on the engine.
 */

import type { MetricsRegistry } from "./registry.ts";

/** What the gauges read from `Volume.stats` (+ size); newer fields are exported when present. */
export interface VolumeFigures {
  sizeBytes: number;
  stats: {
    extents: number;
    mapBytes: number;
    dirtyBytes: number;
    cacheBytes: number;
    lastSequence: number;
    durableThrough: number;
    cacheHits?: number;
    cacheMisses?: number;
    commits?: number;
    crcTableBytes?: number;
    damagedReads?: number;
    gcPasses?: number;
    gcDeletedBytes?: number;
    gcCopiedBytes?: number;
    journalPendingBytes?: number;
    journalBytes?: number;
    journalSyncs?: number;
  };
}

/** Registers the volume and process gauges; volume() is undefined until the volume is open. */
export function registerDaemonMetrics(
  registry: MetricsRegistry,
  volume: () => VolumeFigures | undefined,
): void {
  const stat: Stat = (read) => () => {
    const v = volume();
    return v === undefined ? undefined : read(v);
  };
  registry.gauge("lsvd_volume_size_bytes", "Size of the served volume", stat((v) => v.sizeBytes));
  registry.gauge(
    "lsvd_dirty_bytes",
    "Written bytes held in memory and not yet in the store (open and uploading objects)",
    stat((v) => v.stats.dirtyBytes),
  );
  registry.gauge("lsvd_map_bytes", "Memory held by the extent map", stat((v) => v.stats.mapBytes));
  registry.gauge("lsvd_map_extents", "Extents in the extent map", stat((v) => v.stats.extents));
  registerReadMetrics(registry, stat);
  registerWriteMetrics(registry, stat);
  registry.gauge(
    "lsvd_process_resident_bytes",
    "Resident memory of the lsvd process",
    () => Deno.memoryUsage().rss,
  );
  // Where the resident memory is: the JavaScript heap, and ArrayBuffers outside it (object bodies).
  registry.gauge("lsvd_process_heap_used_bytes", "V8 heap in use (JavaScript objects)", () => {
    return Deno.memoryUsage().heapUsed;
  });
  registry.gauge("lsvd_process_heap_total_bytes", "V8 heap reserved", () => Deno.memoryUsage().heapTotal);
  registry.gauge(
    "lsvd_process_external_bytes",
    "Memory V8 accounts outside its heap (ArrayBuffers: object bodies, caches)",
    () => Deno.memoryUsage().external,
  );
}

/** Reads one figure of the open volume, undefined before it is open. */
type Stat = (read: (v: VolumeFigures) => number | undefined) => () => number | undefined;

/** The read cache, CRC tables, damaged reads and the log's position. */
function registerReadMetrics(registry: MetricsRegistry, stat: Stat): void {
  registry.gauge(
    "lsvd_cache_bytes",
    "Bytes held by the read cache and the sector-CRC tables (both within --cache-size)",
    stat((v) => v.stats.cacheBytes),
  );
  registry.gauge(
    "lsvd_crc_table_bytes",
    "Bytes of sector-CRC tables kept for verifying reads (part of lsvd_cache_bytes)",
    stat((v) => v.stats.crcTableBytes),
  );
  registry.gauge(
    "lsvd_damaged_reads",
    "Fetches that failed their sector-CRC check twice since start (reads answered with EIO)",
    stat((v) => v.stats.damagedReads),
  );
  registry.gauge(
    "lsvd_log_last_sequence",
    "Number of the newest log object (sealed)",
    stat((v) => v.stats.lastSequence),
  );
  registry.gauge(
    "lsvd_log_durable_through",
    "Every log object up to this number is in the store",
    stat((v) => v.stats.durableThrough),
  );
  registry.gauge(
    "lsvd_cache_hit_ratio",
    "Share of read lookups answered by the read cache since start",
    stat((v) => {
      const { cacheHits, cacheMisses } = v.stats;
      if (cacheHits === undefined || cacheMisses === undefined) return undefined;
      return cacheHits + cacheMisses === 0 ? 0 : cacheHits / (cacheHits + cacheMisses);
    }),
  );
  registry.counterFrom(
    "lsvd_cache_hits_total",
    "Read lookups answered by the memory read cache",
    stat((v) => v.stats.cacheHits),
  );
  registry.counterFrom(
    "lsvd_cache_misses_total",
    "Read lookups the memory read cache missed (the store, or the disk cache, answered)",
    stat((v) => v.stats.cacheMisses),
  );
}

/** Commits, garbage collection and the write-back journal. */
function registerWriteMetrics(registry: MetricsRegistry, stat: Stat): void {
  registry.counterFrom(
    "lsvd_commits_total",
    "Objects sealed for FLUSH/FUA (group commits)",
    stat((v) => v.stats.commits),
  );
  registry.counterFrom(
    "lsvd_gc_passes_total",
    "Garbage-collection passes that deleted or copied something",
    stat((v) => v.stats.gcPasses),
  );
  registry.counterFrom(
    "lsvd_gc_deleted_bytes_total",
    "Bytes of log objects garbage collection deleted",
    stat((v) => v.stats.gcDeletedBytes),
  );
  registry.counterFrom(
    "lsvd_gc_copied_bytes_total",
    "Bytes of live data garbage collection copied to the head (write amplification)",
    stat((v) => v.stats.gcCopiedBytes),
  );
  registry.gauge(
    "lsvd_journal_pending_bytes",
    "Write-back journal bytes whose writes are not yet in the store (0 without --journal)",
    stat((v) => v.stats.journalPendingBytes),
  );
  registry.gauge(
    "lsvd_journal_bytes",
    "Bytes in the write-back journal's segment files",
    stat((v) => v.stats.journalBytes),
  );
  registry.counterFrom(
    "lsvd_journal_syncs_total",
    "fdatasync calls of the write-back journal (FLUSHes share them)",
    stat((v) => v.stats.journalSyncs),
  );
}

/** What the disk-cache series read (src/cache/disk_cache.ts), structurally. */
export interface DiskCacheFigures {
  slots: number;
  sizeBytes: number;
  counters: Readonly<
    { hits: number; misses: number; fills: number; evictions: number; dropped: number; ioErrors: number }
  >;
}

/** Registers the `--cache-dir` series; without a disk cache nothing is registered. */
export function registerDiskCacheMetrics(
  registry: MetricsRegistry,
  disk: DiskCacheFigures | undefined,
): void {
  if (disk === undefined) return;
  const c = () => disk.counters;
  registry.gauge(
    "lsvd_disk_cache_bytes",
    "Data bytes held by the --cache-dir disk cache",
    () => disk.sizeBytes,
  );
  registry.gauge(
    "lsvd_disk_cache_capacity_bytes",
    "Data bytes the --cache-dir disk cache can hold (its index adds 16 bytes a sector)",
    () => disk.slots * 4096,
  );
  registry.counterFrom("lsvd_disk_cache_hits_total", "Fetches answered by the disk cache", () => c().hits);
  registry.counterFrom(
    "lsvd_disk_cache_misses_total",
    "Fetches the disk cache could not answer (the store did)",
    () => c().misses,
  );
  registry.counterFrom("lsvd_disk_cache_fills_total", "Sectors written into the disk cache", () => c().fills);
  registry.counterFrom(
    "lsvd_disk_cache_evictions_total",
    "Sectors evicted from the disk cache to make room",
    () => c().evictions,
  );
  registry.counterFrom(
    "lsvd_disk_cache_dropped_total",
    "Disk-cache sectors that failed their CRC check (damaged, torn or stale) and were dropped",
    () => c().dropped,
  );
  registry.counterFrom(
    "lsvd_disk_cache_io_errors_total",
    "Disk-cache reads or writes that failed (a full disk, an I/O error)",
    () => c().ioErrors,
  );
}

/** What the follower gauges read (src/volume/follower.ts `Follower.stats`). */
export interface FollowFigures {
  appliedSequence: number;
  behindObjects: number;
  behindSeconds: number;
  polls: number;
  reloads: number;
  failedPolls: number;
}

/** Gauges of `serve --read-only --follow`: how far the follower is behind the writer's durable log. */
export function registerFollowMetrics(registry: MetricsRegistry, follow: () => FollowFigures): void {
  registry.gauge(
    "lsvd_follow_applied_sequence",
    "The newest log object this follower applied",
    () => follow().appliedSequence,
  );
  registry.gauge(
    "lsvd_follow_behind_objects",
    "Log objects the last poll listed beyond the newest applied one (after a gap, or still to read)",
    () => follow().behindObjects,
  );
  registry.gauge(
    "lsvd_follow_behind_seconds",
    "Every object the writer had stored without a gap this many seconds ago is applied",
    () => follow().behindSeconds,
  );
  registry.counterFrom("lsvd_follow_polls_total", "Polls of the log (one LIST each)", () => follow().polls);
  registry.counterFrom(
    "lsvd_follow_reloads_total",
    "Times the follower loaded the log anew (rollback, deleted object, lapsed pin)",
    () => follow().reloads,
  );
  registry.counterFrom(
    "lsvd_follow_failed_polls_total",
    "Polls that failed (the store did not answer); the last state is served meanwhile",
    () => follow().failedPolls,
  );
}
