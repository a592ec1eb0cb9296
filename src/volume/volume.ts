/**
 * @module
 * The volume: a disk whose every byte lives in a log of objects. This module opens one (list →
 * load → repair → size) and joins the parts that serve it:
 *
 *   write / trim / flush ─► LogWriter (open object, seal, uploads, durability, checkpoints)
 *   read                 ─► ReadPath (open object, in-flight bodies, cache, Fetcher GETs)
 *   block status         ─► blockStatus (map + open object)
 *
 * The extent map is shared: the writer updates it at seal time through the same applyObject
 * recovery uses. A read-only volume has no writer and never modifies the bucket.
 */

import { assert } from "../util/assert.ts";
import { SECTOR_BYTES, VOLUME_BYTES_MAX } from "../util/constants.ts";
import { LsvdError, messageOf } from "../util/errors.ts";
import {
  type AcquiredLease,
  acquireLease,
  claimEpoch,
  fencedError,
  type LeaseHolder,
  LeaseKeeper,
} from "../log/lease.ts";
import { closeWindow, readWriterEpoch } from "../log/fence.ts";
import { logKey } from "../format/keys.ts";
import type { LogState } from "../log/log_state.ts";
import type { RetryPolicy } from "../store/retry.ts";
import { Progress, stderrTerminal } from "../util/progress.ts";
import { listLogState, volumeExists } from "../log/log_state.ts";
import { type LoadedLog, loadLog } from "../log/load.ts";
import { repairLog } from "../log/repair.ts";
import { peekVolume, recordedSizeBytes } from "../log/recorded_size.ts";
import { ensureFormatRecord } from "../log/format_record.ts";
import type { AllocationExtent, BlockDevice, WriteOptions } from "./block_device.ts";
import { blockStatus } from "./block_status.ts";
import { copyFromParents } from "./flatten.ts";
import type { Lineage } from "../log/parent.ts";
import { type ExtentMap } from "../map/extent_map.ts";
import { CrcTableLoader, CrcTables } from "./crc_tables.ts";
import { Fetcher } from "./fetcher.ts";
import { ObjectSizes } from "./object_sizes.ts";
import { CLOSE_CHECKPOINT_MS, LogWriter } from "./log_writer.ts";
import { type GcPassResult, GcRunner } from "./gc_runner.ts";
import { type Timer, withinMs } from "../util/clock.ts";
import { isLsvdError } from "../util/errors.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { ReadAhead } from "./read_ahead.ts";
import { ReadCache } from "./read_cache.ts";
import { ReadPath } from "./read_path.ts";
import type { Journal } from "./journal.ts";
import { checkJournalVolume, type ScannedJournal } from "./journal_replay.ts";
import { adoptJournal, prepareJournal, startJournal } from "./journal_start.ts";
import { withRetries } from "../store/retry.ts";
import {
  type ResolvedVolumeOptions,
  resolveVolumeOptions,
  type VolumeOptions,
  volumeRetry,
} from "./volume_options.ts";

export type { FlushPolicy, VolumeOptions } from "./volume_options.ts";
export { VOLUME_BYTES_MAX };

/** How long a shutdown that stored every write tries to release the lease when the store does not answer. */
export const SHUTDOWN_OPTIONAL_MS = CLOSE_CHECKPOINT_MS;

export class Volume implements BlockDevice {
  readonly readOnly: boolean;
  #o: ResolvedVolumeOptions;
  #map: ExtentMap;
  #lineage: Lineage;
  #sizeBytes: number;
  #writer: LogWriter | undefined;
  #cache: ReadCache;
  #tables: CrcTables;
  #fetcher: Fetcher;
  #objectSizes: ObjectSizes;
  #reads: ReadPath;
  #closed = false;
  #lastSequence: number;
  #gc: GcRunner | undefined;
  #gcTimer: Timer | undefined;
  #keeper: LeaseKeeper | undefined;
  #failed: Promise<Error>;
  #reportFailure: (error: Error) => void = () => {};
  #journal: Journal | undefined;
  #journalReplayed = 0;
  #mayAcknowledge: () => boolean = () => true;

  private constructor(
    o: ResolvedVolumeOptions,
    loaded: LoadedLog,
    sizeBytes: number,
    writer: { epoch: number; keeper: LeaseKeeper | undefined },
  ) {
    this.#failed = new Promise((resolve) => (this.#reportFailure = resolve));
    this.#keeper = writer.keeper;
    this.#o = o;
    this.readOnly = o.readOnly;
    this.#map = loaded.map;
    this.#lineage = loaded.lineage;
    this.#sizeBytes = sizeBytes;
    this.#lastSequence = loaded.lastSequence;
    // CRC tables take up to a sixteenth of the cache limit: a 4 MiB object's is 4 KiB, so that
    // keeps the tables of 64 times more data than the cache itself holds.
    const tableBytesMax = o.verifyReads ? Math.floor(o.cacheBytesMax / 16) : 0;
    this.#tables = new CrcTables(tableBytesMax);
    this.#cache = new ReadCache(o.cacheBytesMax - tableBytesMax);
    const objectSizes = new ObjectSizes();
    for (const obj of loaded.state.objects.slice(0, loaded.state.gapFreeCount)) {
      objectSizes.set(obj.sequence, obj.sizeBytes);
    }
    for (const [sequence, sizeBytes] of loaded.lineage.sizes) objectSizes.set(sequence, sizeBytes);
    this.#objectSizes = objectSizes;
    this.#mayAcknowledge = () => {
      const keeper = writer.keeper;
      if (keeper === undefined || keeper.isValid()) return true;
      keeper.renewSoon();
      return false;
    };
    if (!o.readOnly) {
      this.#writer = new LogWriter(o, loaded.map, this.#cache, {
        lastSequence: loaded.lastSequence,
        writerEpoch: writer.epoch,
        sizeBytes,
        checkpointedThrough: loaded.checkpointSequence,
        lastObjectCrc32: loaded.lastObjectCrc32,
        objectSizes,
        mayAcknowledge: this.#mayAcknowledge,
        onFail: (e) => {
          this.#journal?.fail(e);
          this.#reportFailure(e);
        },
      });
    }
    // Reads wait out an outage too; closing the volume ends the wait.
    const retry = volumeRetry(
      o,
      () => this.#closed ? new LsvdError("closed", "Cannot read: the volume is closed") : undefined,
    );
    if (this.#writer !== undefined) {
      this.#gc = new GcRunner({
        store: o.store,
        prefix: o.prefix,
        clock: o.clock,
        log: o.log,
        retry,
        writer: this.#writer,
        head: loaded.map,
        retentionMs: o.retentionMs,
        thresholds: o.gcThresholds,
        concurrency: 4,
        objectBytesMax: o.objectBytesMax,
        // Only the lease holder deletes: a pass checks the lease right before its record and deletes.
        mayDelete: () => writer.keeper === undefined || writer.keeper.isValid(),
      });
    }
    const fetcher = this.#fetcher = new Fetcher({
      store: o.store,
      keyOf: (sequence) => loaded.lineage.keyOf(sequence),
      retry,
      cache: this.#cache,
      tables: new CrcTableLoader({ store: o.store, retry, tables: this.#tables }),
      sizes: objectSizes,
      verify: o.verifyReads,
      log: o.log,
      ...(o.diskCache === undefined ? {} : { disk: o.diskCache }),
    });
    const aheadBytes = Math.min(o.readAheadBytesMax, Math.floor(o.cacheBytesMax / 4));
    const aheadSectors = Math.floor(aheadBytes / SECTOR_BYTES);
    const readAhead = new ReadAhead({
      windowMinSectors: Math.min(aheadSectors, 256),
      windowMaxSectors: aheadSectors,
    });
    this.#reads = new ReadPath({
      map: loaded.map,
      cache: this.#cache,
      fetcher,
      readAhead,
      open: () => this.#writer?.open,
      inflightBody: (sequence) => this.#writer?.inflightBody(sequence),
      sizeSectors: () => this.#sizeBytes / SECTOR_BYTES,
    });
  }

  /**
   * Recovers the volume from the store; throws LsvdError with a user-facing message. A writer first
   * takes the lease and, unless the previous writer released it cleanly, fences that writer
   * (docs/design/fencing.md) before it replays or archives anything.
   */
  static async open(options: VolumeOptions): Promise<Volume> {
    const o = resolveVolumeOptions(options);
    const stopped = () =>
      o.stopRequested()
        ? new LsvdError("closed", "Recovery stopped: a signal asked lsvd to stop")
        : undefined;
    const retry = volumeRetry(o, stopped);
    if (!o.readOnly && o.sizeBytes !== undefined && !o.allowShrink) {
      // Before the lease: a refused shrink leaves the bucket exactly as it found it.
      const recorded = await recordedSizeBytes(o.store, o.prefix, retry);
      if (recorded !== undefined && o.sizeBytes < recorded) throw shrinkRefused(o, recorded, o.sizeBytes);
    }
    // Before the lease: a writer without --size on a prefix without a log writes nothing.
    if (!o.readOnly && o.sizeBytes === undefined) await refuseBeforeWriting(o, retry);
    // Before the store is touched: a journal in use or damaged leaves the bucket as it was.
    const scanned = o.journal === undefined ? undefined : await prepareJournal(o.journal, o.log);
    if (scanned !== undefined) {
      try {
        // Before its id goes into this volume's lease: another volume's journal is refused first.
        checkJournalVolume(o.journal!.files, scanned, {
          store: o.store.description,
          prefix: o.prefix,
          volumeCreatedAt: undefined,
        });
      } catch (e) {
        await o.journal!.files.unlock();
        throw e;
      }
    }
    const acquired = !o.readOnly && o.fencing
      ? await acquireLease(o.store, o.prefix, {
        clock: o.clock,
        log: o.log,
        retry,
        mode: o.leaseMode,
        durationMs: o.leaseDurationMs,
        windowObjects: o.uploadsMax,
        ...(o.leaseHolder === undefined ? {} : { holder: o.leaseHolder }),
        // Recorded before anything is acknowledged from the journal, so there is no moment when
        // acknowledged writes exist only there and the bucket does not say so.
        ...(scanned === undefined ? {} : { journal: { dir: o.journal!.files.description, id: scanned.id } }),
        abandonJournal: o.abandonJournal,
      }).catch(async (e) => {
        await o.journal?.files.unlock();
        throw e;
      })
      : undefined;
    let volume: Volume | undefined;
    const keeper = acquired === undefined ? undefined : new LeaseKeeper(o.store, o.prefix, acquired, {
      clock: o.clock,
      log: o.log,
      onLost: (e) => volume !== undefined && volume.#leaseLost(e),
      onRenewed: () => volume !== undefined && volume.#leaseRenewed(),
    });
    let wroteLog = false; // from the fence on, giving the lease back must not skip the next fence
    try {
      o.log(`Starting recovery from ${o.store.description}.`);
      let { state, loaded } = await loadVolume(o, retry, stopped);
      if (o.readOnly && !volumeExists(state)) throw noVolume(o);
      let epoch = loaded.writerEpoch + 1;
      // Checked before the fence or any repair: a refused start leaves the bucket as it found it.
      const wantedBytes = checkSize(o, loaded);
      let found = o.journal === undefined ? undefined : await logEnd(o, retry, loaded);
      if (acquired !== undefined && keeper !== undefined) {
        const sizeBytes = loaded.volumeSizeBytes ?? wantedBytes; // fence objects keep the recorded size
        wroteLog = true;
        const taken = await takeOver(o, retry, { acquired, keeper, loaded, sizeBytes });
        epoch = taken.epoch;
        if (taken.fenced) ({ state, loaded } = await loadVolume(o, retry, stopped));
        if (
          found !== undefined && taken.leftSequence !== undefined && taken.leftSequence !== found.lastSequence
        ) {
          found = { lastSequence: taken.leftSequence, lastEpoch: taken.leftEpoch! };
        }
        await checkNoNewerWriter(o, retry, loaded, epoch);
        if (keeper.lost !== undefined) throw keeper.lost;
      }
      if (o.journal !== undefined && scanned !== undefined && found !== undefined) {
        await adoptJournal(o.journal, scanned, {
          ...found,
          store: o.store.description,
          prefix: o.prefix,
          volumeCreatedAt: state.format?.createdAt,
          writerEpoch: epoch,
        });
      }
      if (o.readOnly) {
        const first = loaded.beyond[0];
        if (first !== undefined && o.atSequence === undefined) {
          o.log(
            `Ignoring ${loaded.beyond.length} objects after the recovery point (read-only, left in place; first is "${first.key}").`,
          );
        }
      }
      const sizeBytes = checkSize(o, loaded); // again: the fence may have accepted more of the log
      if (!o.readOnly) {
        // Repair deletes without conditions: only while the lease is provably still ours.
        if (keeper !== undefined && loaded.beyond.length > 0) await keeper.confirm();
        await repairLog(o.store, loaded, { recoveryId: o.recoveryId, retry, log: o.log });
      }
      const fromCheckpoint = loaded.checkpointSequence === 0
        ? ""
        : ` after checkpoint ${loaded.checkpointSequence}`;
      o.log(`Recovery complete (processed ${loaded.replayed} objects${fromCheckpoint}).`);
      volume = new Volume(o, loaded, sizeBytes, { epoch, keeper });
      if (keeper?.lost !== undefined) throw keeper.lost;
      if (!o.readOnly) {
        await withRetries(retry, () => ensureFormatRecord(o.store, o.prefix, state.format, o.clock.wallMs()));
        const recorded = loaded.volumeSizeBytes;
        if (sizeBytes !== recorded || !volumeExists(state)) {
          o.log(
            recorded === undefined
              ? `Creating a volume of ${sizeBytes} bytes.`
              : `Resizing the volume from ${recorded} to ${sizeBytes} bytes.`,
          );
          await volume.#writer!.recordSize(sizeBytes);
        }
        if (o.journal !== undefined) await volume.#startJournal(scanned!);
        volume.#scheduleGc();
      }
      return volume;
    } catch (e) {
      volume?.abandon();
      await o.journal?.files.unlock();
      if (keeper !== undefined) {
        await (wroteLog ? keeper.lapse() : keeper.release()).catch(() => keeper.stop());
      }
      throw e;
    }
  }

  async #startJournal(scanned: ScannedJournal): Promise<void> {
    ({ journal: this.#journal, replayed: this.#journalReplayed } = await startJournal(
      this.#o.journal!,
      scanned,
      {
        writer: this.#writer!,
        sizeBytes: this.#sizeBytes,
        mayAcknowledge: this.#mayAcknowledge,
        log: this.#o.log,
      },
    ));
  }

  /** The lease was lost: the writer fails with kind "fenced" (LeaseKeeper.onLost). */
  #leaseLost(error: Error): void {
    this.#writer?.fail(error);
  }

  /** The lease was renewed: FLUSHes held back while it was not valid may resolve. */
  #leaseRenewed(): void {
    this.#writer?.leaseRenewed();
    this.#journal?.leaseRenewed();
  }

  /**
   * Resolves with the error the writer failed with: kind "fenced" when another writer took the
   * volume over (serve then exits non-zero). Never resolves for a volume that keeps working.
   */
  whenFailed(): Promise<Error> {
    return this.#failed;
  }

  get sizeBytes(): number {
    return this.#sizeBytes;
  }

  /** Figures for metrics and memory accounting. */
  get stats() {
    const w = this.#writer;
    return {
      extents: this.#map.extentCount,
      denseRegions: this.#map.denseRegions,
      mapBytes: this.#map.memoryBytes,
      lastSequence: w?.lastSequence ?? this.#lastSequence,
      durableThrough: w?.durableThrough ?? this.#lastSequence,
      /** The epoch this writer's objects carry (0 read-only). */
      writerEpoch: w?.writerEpoch ?? 0,
      dirtyBytes: w?.dirtyBytes ?? 0,
      cacheBytes: this.#cache.sizeBytes + this.#tables.sizeBytes,
      crcTableBytes: this.#tables.sizeBytes,
      objectSizeBytes: this.#objectSizes.memoryBytes,
      crcTableGets: this.#fetcher.counters.tableGets,
      damagedReads: this.#fetcher.counters.damaged,
      objectsUploaded: w?.counters.objectsUploaded ?? 0,
      bytesUploaded: w?.counters.bytesUploaded ?? 0,
      commits: w?.counters.commits ?? 0,
      gcPasses: this.#gc?.counters.passes ?? 0,
      gcDeletedBytes: this.#gc?.counters.deletedBytes ?? 0,
      gcCopiedBytes: this.#gc?.counters.copiedBytes ?? 0,
      /** Journal bytes whose writes are not yet in the store (0 without --journal). */
      journalPendingBytes: this.#journal?.pendingBytes ?? 0,
      /** Acknowledged (synced) journal bytes not yet in the store: what only the journal holds. */
      journalSyncedPendingBytes: this.#journal?.syncedPendingBytes ?? 0,
      journalBytes: this.#journal?.liveBytes ?? 0,
      journalSyncs: this.#journal?.counters.syncs ?? 0,
      /** Journal records replayed when this volume opened. */
      journalReplayedRecords: this.#journalReplayed,
      reads: this.#reads.counters.reads,
      cacheHits: this.#reads.counters.cacheHits,
      cacheMisses: this.#reads.counters.cacheMisses,
    };
  }

  write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.#checkRange(offsetBytes, data.length);
    const writer = this.#writable();
    if (this.#journal === undefined) return writer.write(offsetBytes, data, options);
    const written = this.#journal.write(offsetBytes, data);
    return options?.fua ? written.then(() => this.flush()) : written;
  }

  /** The same write, done at once (undefined) when the writer needs no wait; with a journal, write()'s. */
  startWrite(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> | undefined {
    if (this.#journal !== undefined) return this.write(offsetBytes, data, options);
    this.#checkRange(offsetBytes, data.length);
    return this.#writable().startWrite(offsetBytes, data, options);
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    this.#checkRange(offsetBytes, lengthBytes);
    const writer = this.#writable();
    if (this.#journal === undefined) return writer.writeZeroes(offsetBytes, lengthBytes, options);
    const written = this.#journal.writeZeroes(offsetBytes, lengthBytes);
    return options?.fua ? written.then(() => this.flush()) : written;
  }

  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    return this.writeZeroes(offsetBytes, lengthBytes, options);
  }

  /** Without a journal: every write before it is in the store. With one: in the synced journal. */
  flush(): Promise<void> {
    return this.#journal?.flush() ?? this.#writer?.flush() ?? Promise.resolve();
  }

  /** The journal directory and what only it holds (acknowledged, not yet stored), if there is one. */
  get journalPending(): { description: string; bytes: number } | undefined {
    const j = this.#journal;
    return j === undefined ? undefined : { description: j.description, bytes: j.syncedPendingBytes };
  }

  /** Runs one garbage-collection pass now (the writer only; src/volume/gc_runner.ts). */
  collectGarbage(): Promise<GcPassResult> {
    assert(this.#gc !== undefined, "garbage collection on a read-only volume");
    return this.#gc.runPass();
  }

  /** Background passes every gcIntervalMs; a failed pass is logged and retried at the next one. */
  #scheduleGc(): void {
    if (this.#o.gcIntervalMs === 0 || this.#closed) return;
    this.#gcTimer = this.#o.clock.setTimer(this.#o.gcIntervalMs, () => {
      this.#gcTimer = undefined;
      if (this.#closed || this.#writer?.failure !== undefined) return;
      this.collectGarbage()
        .catch((e) => {
          if (!isLsvdError(e) && !isStoreError(e)) throw e;
          this.#o.log(`Garbage collection pass failed: ${messageOf(e)}; retrying later.`);
        })
        .finally(() => this.#scheduleGc());
    });
  }

  /**
   * Stores every write, then (each for at most SHUTDOWN_OPTIONAL_MS when the store does not answer)
   * writes a checkpoint and marks the lease released, dropping the journal it records once the
   * journal is empty; stops timers. The volume accepts nothing afterwards. Those last two only save
   * the next start work, so a store that went away after the last write delays the exit by a
   * bounded time and one line, never for ever.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#gcTimer?.cancel();
    await this.#gc?.stop();
    try {
      await this.#journal?.drained(); // writes waiting for journal space enter the writer first
      const closed = await this.#writer?.close();
      await this.#journal?.close();
      const keeper = this.#keeper;
      if (keeper === undefined) return;
      const journal = this.#journal === undefined
        ? ""
        : ` (the lease still names journal ${this.#journal.description}, ` +
          "now empty: start with it, or with --abandon-journal, which loses nothing)";
      if (closed?.checkpointGivenUp) {
        keeper.giveUp(); // the store did not answer for the checkpoint: do not wait for it again
        this.#o.log(
          `Stopped without the shutdown checkpoint and without releasing the lease: object storage did not answer within ` +
            `${
              CLOSE_CHECKPOINT_MS / 1000
            } s. Every write is stored; the next start reads more of the log and fences ` +
            `this daemon's upload window first${journal}.`,
        );
        return;
      }
      const release = keeper.release({ journalEmpty: (this.#journal?.liveBytes ?? 0) === 0 });
      const released = await withinMs(this.#o.clock, SHUTDOWN_OPTIONAL_MS, release).catch((e) => {
        if (isStoreError(e, "Transient")) return false; // its attempts ran out before the time did
        throw e;
      });
      if (!released) {
        keeper.giveUp();
        release.catch(() => {});
        this.#o.log(
          `Stopped without releasing the lease: object storage did not answer within ${
            SHUTDOWN_OPTIONAL_MS / 1000
          } s. ` +
            `Every write is stored; the next start fences this daemon's upload window first${journal}.`,
        );
      }
    } finally {
      this.#closed = true;
      this.#keeper?.stop();
    }
  }

  /** Who this writer is in the lease (undefined read-only or without fencing). */
  get leaseHolder(): LeaseHolder | undefined {
    return this.#keeper?.lease.holder;
  }

  /** True once close() stored every write (a shutdown deadline then loses nothing). */
  get allStored(): boolean {
    return this.#writer === undefined || this.#writer.allStored;
  }

  /** What close() has not stored yet, for a shutdown deadline's last line. */
  get unflushed(): { bytes: number; objects: number; firstSequence: number } {
    return this.#writer?.unflushed ?? { bytes: 0, objects: 0, firstSequence: this.#lastSequence + 1 };
  }

  /** Stops without flushing, as a crash would (for tests): pending uploads are abandoned. */
  abandon(): void {
    this.#closed = true;
    this.#gcTimer?.cancel();
    void this.#gc?.stop();
    this.#keeper?.stop();
    this.#writer?.abandon();
    this.#journal?.stop();
  }

  read(offsetBytes: number, dest: Uint8Array): Promise<void> {
    this.#checkRange(offsetBytes, dest.length);
    try {
      return this.startRead(offsetBytes, dest) ?? Promise.resolve();
    } catch (e) {
      return Promise.reject(e); // as an async read did: what goes wrong while reading rejects
    }
  }

  startRead(offsetBytes: number, dest: Uint8Array): Promise<void> | undefined {
    this.#checkRange(offsetBytes, dest.length);
    const failure = this.#writer?.failure;
    // A fenced writer's map may be stale: another writer owns the disk now.
    if (failure !== undefined && (this.#closed || this.#writer!.closed || isLsvdError(failure, "fenced"))) {
      return Promise.reject(failure);
    }
    return this.#reads.start(offsetBytes, dest);
  }

  blockStatus(offsetBytes: number, lengthBytes: number): AllocationExtent[] {
    this.#checkRange(offsetBytes, lengthBytes);
    return blockStatus(this.#map, this.#writer?.open, offsetBytes, lengthBytes);
  }

  #writable(): LogWriter {
    assert(this.#writer !== undefined, "write to a read-only volume");
    return this.#writer;
  }

  /** What this volume reads of its parents (a clone: src/log/parent.ts), for info and flatten. */
  get parentBytes(): number {
    return this.#lineage.bytesFromAncestors(this.#map);
  }

  /**
   * Copies everything the map reads from parents into this volume's log (src/volume/flatten.ts)
   * and returns the last object of the log, durable: the point from which the clone reads nothing
   * of its parents. The caller records it (src/log/clone.ts).
   */
  async copyFromParents(onProgress?: (doneBytes: number, totalBytes: number) => void): Promise<number> {
    const writer = this.#writable();
    await copyFromParents({
      map: this.#map,
      writer,
      fetcher: this.#fetcher,
      through: this.#lineage.through,
      sizeSectors: this.#sizeBytes / SECTOR_BYTES,
      objectBytesMax: this.#o.objectBytesMax,
      ...(onProgress === undefined ? {} : { onProgress }),
    });
    if (this.parentBytes !== 0) {
      throw new LsvdError("invalid", "Cannot flatten: data read from the parent changed while it was copied");
    }
    // A clone that never wrote and copied nothing records its size in an object of its own.
    if (writer.lastSequence <= this.#lineage.through) await writer.recordSize(this.#sizeBytes);
    await writer.flush();
    return writer.lastSequence;
  }

  #checkRange(offsetBytes: number, lengthBytes: number): void {
    assert(offsetBytes % SECTOR_BYTES === 0 && lengthBytes % SECTOR_BYTES === 0, "unaligned request");
    assert(
      offsetBytes >= 0 && lengthBytes > 0 && offsetBytes + lengthBytes <= this.#sizeBytes,
      "out of range",
    );
  }
}

/** Lists and loads the log (never modifying it), with a progress line for long replays. */
async function loadVolume(
  o: ResolvedVolumeOptions,
  retry: RetryPolicy,
  stopped: () => LsvdError | undefined,
): Promise<{ state: LogState; loaded: LoadedLog }> {
  const state = await listLogState(o.store, o.prefix, retry);
  const progress = new Progress({
    what: "Replaying the log",
    unit: "objects",
    total: 0,
    clock: o.clock,
    log: o.log,
    terminal: stderrTerminal(),
  });
  const loaded = await loadLog(o.store, state, {
    concurrency: o.recoveryConcurrency,
    retry,
    log: o.log,
    onProgress: (done, total) => {
      if (done === 1) progress.setTotal(total);
      progress.update(done);
      const stop = stopped();
      if (stop !== undefined) throw stop;
    },
    ...(o.atSequence === undefined ? {} : { atSequence: o.atSequence }),
  });
  progress.finish();
  return { state, loaded };
}

/**
 * After taking the lease: makes our epoch higher than every epoch in the log (logs written before
 * epoch keys existed) and, unless the previous writer released the lease, closes its upload window.
 * Returns our epoch and whether the log changed (then it is loaded again).
 */
async function takeOver(
  o: ResolvedVolumeOptions,
  retry: RetryPolicy,
  t: { acquired: AcquiredLease; keeper: LeaseKeeper; loaded: LoadedLog; sizeBytes: number },
): Promise<{ epoch: number; fenced: boolean; leftSequence?: number; leftEpoch?: number }> {
  const { acquired, keeper, loaded } = t;
  const last = loaded.lastSequence;
  const lastEpoch = await lastEpochOf(o, retry, loaded);
  let epoch = acquired.stored.lease.epoch;
  if (lastEpoch >= epoch) {
    epoch = await claimEpoch(o.store, o.prefix, {
      atLeast: lastEpoch,
      holder: acquired.stored.lease.holder,
      retry,
    });
  }
  const previous = acquired.previous;
  const fence = previous === undefined ? loaded.state.objects.length > 0 : !previous.released;
  let left: { leftSequence: number; leftEpoch: number } | undefined;
  if (fence) {
    const closed = await closeWindow(o.store, {
      prefix: o.prefix,
      epoch,
      afterSequence: last,
      afterEpoch: lastEpoch,
      windowObjects: Math.max(1, acquired.stored.lease.windowObjects),
      volumeSizeBytes: t.sizeBytes,
      sealTimeMs: o.clock.wallMs(),
      recoveryId: o.recoveryId,
      retry,
      log: o.log,
    });
    left = { leftSequence: closed.fenceSequence - 1, leftEpoch: closed.leftEpoch };
  }
  if (fence || epoch !== acquired.stored.lease.epoch) {
    await keeper.update({ epoch, windowObjects: o.uploadsMax });
  }
  return { epoch, fenced: fence, ...left };
}

/** The loaded log's last object and its epoch (what a journal's owner check compares). */
async function logEnd(
  o: ResolvedVolumeOptions,
  retry: RetryPolicy,
  loaded: LoadedLog,
): Promise<{ lastSequence: number; lastEpoch: number }> {
  return { lastSequence: loaded.lastSequence, lastEpoch: await lastEpochOf(o, retry, loaded) };
}

/** The writer epoch of the loaded log's last object (logs never lower it along the way). */
async function lastEpochOf(o: ResolvedVolumeOptions, retry: RetryPolicy, loaded: LoadedLog): Promise<number> {
  const last = loaded.lastSequence;
  // A clone that wrote nothing yet has no object of its own: its epochs start afresh.
  if (last === 0 || last <= loaded.lineage.through) return 0;
  return loaded.lastTrailer?.writerEpoch ??
    await epochOrZero(o, retry, { key: logKey(o.prefix, last), sequence: last });
}

/** An object's writer epoch; 0 when its trailer is damaged (that fails its reads later, not the start). */
function epochOrZero(
  o: ResolvedVolumeOptions,
  retry: RetryPolicy,
  object: { key: string; sequence: number },
): Promise<number> {
  return withRetries(retry, () => readWriterEpoch(o.store, object.key, object.sequence)).catch((e) => {
    if (isLsvdError(e, "data") || isStoreError(e, "NotFound")) return 0;
    throw e;
  });
}

/**
 * Before a writer writes or archives anything: the log it loaded must hold no object of a newer
 * writer. One that fenced us while we were still starting may have placed objects past our fence
 * (our uploads would then land after its objects) or after a gap we would archive.
 */
async function checkNoNewerWriter(
  o: ResolvedVolumeOptions,
  retry: RetryPolicy,
  loaded: LoadedLog,
  epoch: number,
): Promise<void> {
  const found = [await lastEpochOf(o, retry, loaded)];
  for (const b of loaded.beyond) found.push(await epochOrZero(o, retry, b));
  const newest = Math.max(...found);
  if (newest > epoch) {
    throw fencedError(
      `Cannot open the volume for writing: the log holds objects of writer epoch ${newest}, newer than ours (${epoch}); ` +
        "another writer took the volume over while this one was starting",
    );
  }
}

/**
 * The size to serve: the recorded one, or a new/grown one. Shrinking needs allowShrink (a filesystem
 * may still claim the space where nothing is written yet) and never goes below written data.
 */
function checkSize(o: ResolvedVolumeOptions, loaded: LoadedLog): number {
  const recorded = loaded.volumeSizeBytes;
  const wanted = o.readOnly ? recorded ?? o.sizeBytes : o.sizeBytes ?? recorded;
  if (wanted === undefined) throw noRecordedSize();
  if (!o.readOnly && recorded !== undefined && wanted < recorded) {
    if (!o.allowShrink) throw shrinkRefused(o, recorded, wanted);
    const end = mappedEndBytes(loaded.map);
    if (end > wanted) {
      throw new LsvdError(
        "invalid",
        `Cannot shrink the volume from ${recorded} to ${wanted} bytes: data is written up to byte ${end}`,
      );
    }
  }
  return wanted;
}

/**
 * The refusals a glance at the prefix settles (peekVolume), made before anything is written (the
 * start-up probes, the lease, an epoch), so a start that cannot succeed leaves the store as it was:
 * read-only on a prefix without a volume, and a writer without a size on a prefix without a log.
 */
export async function refuseBeforeWriting(
  o: { store: ObjectStore; prefix: string; readOnly: boolean; sizeBytes?: number | undefined },
  retry: RetryPolicy,
): Promise<void> {
  if (!o.readOnly && o.sizeBytes !== undefined) return;
  const peek = await peekVolume(o.store, o.prefix, retry);
  if (o.readOnly && !peek.exists) throw noVolume(o);
  if (!o.readOnly && !peek.hasLog) throw noRecordedSize();
}

function noVolume(o: { store: ObjectStore; prefix: string }): LsvdError {
  return new LsvdError(
    "invalid",
    `Cannot open the volume: ${o.store.description} holds no volume under prefix "${o.prefix}"`,
  );
}

function noRecordedSize(): LsvdError {
  return new LsvdError(
    "invalid",
    "Cannot open the volume: it has no recorded size yet; give --size the first time",
  );
}

function shrinkRefused(o: ResolvedVolumeOptions, recorded: number, wanted: number): LsvdError {
  const where = `${o.prefix === "" ? "" : `prefix ${o.prefix} of `}${o.store.description}`;
  const source = o.sizeSource;
  // A size from the environment is easy to forget: an env file written once keeps pinning it.
  const fromEnvironment = source.startsWith("--")
    ? ""
    : `; the size comes from the environment variable ${source} (an env file, e.g. from lsvd setup): ` +
      "remove it there to serve the recorded size";
  return new LsvdError(
    "invalid",
    `Cannot shrink the volume in ${where} from ${recorded} to ${wanted} bytes (${source}) without --allow-shrink: ` +
      `a filesystem on it may still use the space${fromEnvironment}`,
  );
}

function mappedEndBytes(map: ExtentMap): number {
  let end = 0;
  for (const e of map.entries()) end = Math.max(end, (e.startSector + e.lengthSectors) * SECTOR_BYTES);
  return end;
}
