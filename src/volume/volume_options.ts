/**
 * @module
 * The volume's options and their defaults, resolved and checked once: every other module of the
 * engine receives a `ResolvedVolumeOptions` with no optional tuning left in it.
 */

import type { ObjectStore } from "../store/store.ts";
import { retrying, RetryingStore } from "../store/retry.ts";
import { StoreHealth } from "../store/health.ts";
import { OBJECT_DATA_BYTES_MAX, VOLUME_BYTES_MAX } from "../util/constants.ts";
import { sectorSizeProblem } from "../util/sizes.ts";
import { type Clock, systemClock } from "../util/clock.ts";
import { LsvdError } from "../util/errors.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import { normalizePrefix } from "../format/keys.ts";
import { DEFAULT_GC_THRESHOLDS, type GcThresholds } from "../log/gc.ts";
import { LEASE_DURATION_MS_DEFAULT, type LeaseHolder, type LeaseMode } from "../log/lease.ts";
import type { JournalFiles } from "../journal/journal_files.ts";
import type { DiskCache } from "../cache/disk_cache.ts";
import type { VolumeSecret } from "../crypto/sector_cipher.ts";
import type { VolumePeek } from "../log/recorded_size.ts";

/** A local write-back journal (docs/design/write-back-journal.md): FLUSH = journal fdatasync. */
export interface JournalConfig {
  files: JournalFiles;
  /** A partly filled object is sealed this long after its first write (replaces sealDelayMs). */
  delayMs: number;
  /** Segment bytes on disk before writes wait for uploads. */
  bytesMax: number;
  /** A segment is closed (and later deleted whole) at this size. */
  segmentBytes: number;
  /** Drop whatever the journal holds instead of replaying it. */
  discard: boolean;
}

/** "each": every FLUSH seals its own object (lsvd <= 0.1). "group": FLUSHes arriving while commit
 *  objects are in flight join the next one (group commit). */
export type FlushPolicy = "each" | "group";

export interface VolumeOptions {
  store: ObjectStore;
  prefix?: string;
  /** Required when the log holds no size yet; larger than the recorded size grows the volume. */
  sizeBytes?: number;
  /** Where sizeBytes came from, named when it is refused: "--size" (default) or an environment variable. */
  sizeSource?: string;
  readOnly?: boolean;
  /** A size below the recorded one is refused unless this is set (never below written data). */
  allowShrink?: boolean;
  /** Serve the state after this object (read-only only). */
  atSequence?: number;
  clock?: Clock;
  log?: Logger;
  /** Data bytes per object before it is sealed (default DEFAULT_OBJECT_BYTES, 4 MiB). */
  objectBytesMax?: number;
  /** Open + in-flight bytes before writers wait (default DEFAULT_DIRTY_BYTES, 256 MiB). */
  dirtyBytesMax?: number;
  /** A non-empty open object is sealed this long after its first write (default DEFAULT_SEAL_DELAY_MS). */
  sealDelayMs?: number;
  /** Concurrent PUTs (default DEFAULT_UPLOADS, 32); also how far uploads may run ahead of the durable log. */
  uploadsMax?: number;
  /** Attempts per store call on transient errors (default Infinity: wait out an outage of any length;
   *  only a permanent error or a fence fails the volume). */
  uploadAttemptsMax?: number;
  /** Shared outage tracker: one line when the store goes away, one when it is back (default: a new one). */
  health?: StoreHealth;
  /** Checked while loading: true stops recovery early (a signal arrived) with an LsvdError "closed". */
  stopRequested?: () => boolean;
  /** Header reads in flight during recovery (default 64). */
  recoveryConcurrency?: number;
  /** Bytes of recently uploaded or read object data kept for reads (default DEFAULT_CACHE_BYTES, 64 MiB; 0 disables). */
  cacheBytesMax?: number;
  /** Names the archive folder if recovery finds objects after a gap. */
  recoveryId?: string;
  /** Write a map checkpoint every this many objects, and at close (default 1000; 0 = never). */
  checkpointEveryObjects?: number;
  /** Largest read-ahead window for sequential readers (default 16 MiB, at most a quarter of the
   *  cache; 0 disables). */
  readAheadBytesMax?: number;
  /** Default DEFAULT_FLUSH_POLICY ("group"). */
  flushPolicy?: FlushPolicy;
  /** Group commit: commit objects (sealed by a FLUSH) uploading at once before FLUSHes wait (default 2). */
  commitsInFlightMax?: number;
  /** Group commit: at most this many commit objects per second (default unlimited). */
  commitsPerSecondMax?: number;
  /** Check every fetched range against its object's CRC table (default true; false only for the
   *  benchmark's verification-off comparison). */
  verifyReads?: boolean;
  /** Garbage collection keeps every point sealed within this long exact (default DEFAULT_RETENTION_MS, 24 h). */
  retentionMs?: number;
  /** Run a garbage-collection pass this often in the background (default 0: only when asked). */
  gcIntervalMs?: number;
  /** Garbage-collection thresholds (src/log/gc.ts DEFAULT_GC_THRESHOLDS). */
  gcThresholds?: Partial<GcThresholds>;
  /**
   * One writer per volume (docs/design/fencing.md): take the lease, claim a fresh epoch and fence
   * the previous writer before writing. false (`--no-fencing`) does none of it. Default true.
   */
  fencing?: boolean;
  /** When another writer holds the lease: refuse (default), take over, or stand by until it lapses. */
  leaseMode?: LeaseMode;
  /** How long one lease renewal lasts (default 30 s; renewed every third of it). */
  leaseDurationMs?: number;
  /** Who this writer is in the lease (tests run several in one process); default this host and pid. */
  leaseHolder?: LeaseHolder;
  /** Acknowledge FLUSHes from a local journal (default none: a FLUSH waits for the store). */
  journal?: JournalConfig;
  /**
   * Take the volume although its lease records a write-back journal this start does not use
   * (`--abandon-journal`): the acknowledged writes only that journal holds are lost. Default false.
   */
  abandonJournal?: boolean;
  /**
   * Acknowledge a write only once it is stored (as if every write carried FUA), for a kernel device
   * served without a journal: a filesystem that stays mounted across a daemon crash cannot lose a
   * write it saw acknowledged (docs/design/surviving-restarts.md). Ignored with a journal, which
   * acknowledges a write once its record is in the journal file. Default false.
   */
  writeThrough?: boolean;
  /** `serve --cache-dir`: a persistent local cache of verified object data behind the read cache
   *  (src/cache/disk_cache.ts); the caller opens and closes it. */
  diskCache?: DiskCache;
  /**
   * The key of an encrypted volume (docs/design/encryption.md): required to open one, refused for
   * a plain one; a new volume opened with a key is created encrypted.
   */
  encryptionKey?: VolumeSecret;
  /**
   * The caller's glance at the prefix (refuseBeforeWriting's answer, taken before its own first
   * writes, e.g. serve's probes): opening judges and uses it instead of glancing again. Omitted:
   * opening glances itself where it needs to.
   */
  peek?: VolumePeek;
}

export type ResolvedVolumeOptions =
  & Required<
    Omit<
      VolumeOptions,
      | "sizeBytes"
      | "atSequence"
      | "commitsPerSecondMax"
      | "gcThresholds"
      | "leaseHolder"
      | "journal"
      | "diskCache"
      | "encryptionKey"
      | "peek"
    >
  >
  & {
    gcThresholds: GcThresholds;
    leaseHolder: LeaseHolder | undefined;
    sizeBytes: number | undefined;
    atSequence: number | undefined;
    commitsPerSecondMax: number | undefined;
    journal: JournalConfig | undefined;
    diskCache: DiskCache | undefined;
    encryptionKey: VolumeSecret | undefined;
    peek: VolumePeek | undefined;
  };

/*
 * The engine's defaults, owned here: `lsvd serve` scales the memory-bound ones to the machine
 * (src/cli/memory_defaults.ts caps them at these figures) and prints the others from these constants.
 */
export const DEFAULT_OBJECT_BYTES = 4 * 1024 * 1024;
export const DEFAULT_DIRTY_BYTES = 256 * 1024 * 1024;
export const DEFAULT_CACHE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_UPLOADS = 32;
export const DEFAULT_SEAL_DELAY_MS = 1000;
export const DEFAULT_FLUSH_POLICY: FlushPolicy = "group";
export const DEFAULT_VERIFY_READS = true;
/** Every point of the last day can be rolled back to, exported or served (docs/design/gc-and-retention.md). */
export const DEFAULT_RETENTION_MS = 24 * 60 * 60 * 1000;

/** Fills defaults and checks every value; throws LsvdError("invalid") with one clear line. */
export function resolveVolumeOptions(o: VolumeOptions): ResolvedVolumeOptions {
  const r: ResolvedVolumeOptions = {
    store: o.store,
    prefix: normalizePrefix(o.prefix ?? ""),
    sizeBytes: o.sizeBytes,
    sizeSource: o.sizeSource ?? "--size",
    readOnly: o.readOnly ?? false,
    allowShrink: o.allowShrink ?? false,
    atSequence: o.atSequence,
    clock: o.clock ?? systemClock,
    log: o.log ?? stderrLogger,
    objectBytesMax: o.objectBytesMax ?? DEFAULT_OBJECT_BYTES,
    dirtyBytesMax: o.dirtyBytesMax ?? DEFAULT_DIRTY_BYTES,
    sealDelayMs: o.journal?.delayMs ?? o.sealDelayMs ?? DEFAULT_SEAL_DELAY_MS,
    uploadsMax: o.uploadsMax ?? DEFAULT_UPLOADS,
    uploadAttemptsMax: o.uploadAttemptsMax ?? Infinity,
    health: o.health ?? new StoreHealth({ clock: o.clock ?? systemClock, log: o.log ?? stderrLogger }),
    stopRequested: o.stopRequested ?? (() => false),
    recoveryConcurrency: o.recoveryConcurrency ?? 64,
    cacheBytesMax: o.cacheBytesMax ?? DEFAULT_CACHE_BYTES,
    recoveryId: o.recoveryId ?? Date.now().toString(36),
    checkpointEveryObjects: o.checkpointEveryObjects ?? 1000,
    readAheadBytesMax: o.readAheadBytesMax ?? 16 * 1024 * 1024,
    flushPolicy: o.flushPolicy ?? DEFAULT_FLUSH_POLICY,
    commitsInFlightMax: o.commitsInFlightMax ?? 2,
    commitsPerSecondMax: o.commitsPerSecondMax,
    verifyReads: o.verifyReads ?? DEFAULT_VERIFY_READS,
    retentionMs: o.retentionMs ?? DEFAULT_RETENTION_MS,
    gcIntervalMs: o.gcIntervalMs ?? 0,
    gcThresholds: { ...DEFAULT_GC_THRESHOLDS, ...o.gcThresholds },
    fencing: o.fencing ?? true,
    leaseMode: o.leaseMode ?? "refuse",
    leaseDurationMs: o.leaseDurationMs ?? LEASE_DURATION_MS_DEFAULT,
    leaseHolder: o.leaseHolder,
    journal: o.journal,
    abandonJournal: o.abandonJournal ?? false,
    writeThrough: o.writeThrough ?? false,
    diskCache: o.diskCache,
    encryptionKey: o.encryptionKey,
    peek: o.peek,
  };
  if (!(r.retentionMs >= 0) || !Number.isFinite(r.retentionMs)) {
    throw invalid("the retention must be 0 or more");
  }
  if (!(r.gcIntervalMs >= 0)) throw invalid("the garbage-collection interval must be 0 or more");
  const sizeProblem = r.sizeBytes === undefined
    ? undefined
    : sectorSizeProblem(r.sizeBytes, VOLUME_BYTES_MAX);
  if (sizeProblem !== undefined) throw invalid(`the size: ${sizeProblem}`);
  const objectBytes = r.objectBytesMax;
  const objectProblem = sectorSizeProblem(objectBytes, OBJECT_DATA_BYTES_MAX);
  if (objectProblem !== undefined) throw invalid(`the object size: ${objectProblem}`);
  if (r.dirtyBytesMax < 2 * objectBytes) throw invalid("the dirty-data limit must be at least two objects");
  if (r.atSequence !== undefined && !r.readOnly) throw invalid("a past state can only be served read-only");
  const j = r.journal;
  if (j !== undefined && r.readOnly) throw invalid("a read-only volume has no journal");
  if (j !== undefined && !(j.segmentBytes > 0 && j.bytesMax >= j.segmentBytes && j.delayMs > 0)) {
    throw invalid("the journal needs a positive delay and a size of at least one segment");
  }
  if (!(r.commitsInFlightMax >= 1)) throw invalid("at least one commit object must be allowed in flight");
  if (r.commitsPerSecondMax !== undefined && !(r.commitsPerSecondMax > 0)) {
    throw invalid("the commit rate must be positive");
  }
  return r;
}

/**
 * The volume's store with its one retry policy (every call waits out an outage; `abort` ends the
 * wait: a closed, stopped or fenced volume). Each part that needs its own abort makes its own, over
 * the same inner store (docs/design/retries.md).
 */
export function volumeStore(o: ResolvedVolumeOptions, abort?: () => Error | undefined): RetryingStore {
  return retrying(o.store, {
    clock: o.clock,
    attemptsMax: o.uploadAttemptsMax,
    health: o.health,
    ...(abort === undefined ? {} : { abort }),
  });
}

function invalid(why: string): LsvdError {
  return new LsvdError("invalid", `Cannot open the volume: ${why}`);
}
