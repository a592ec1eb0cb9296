/**
 * @module
 * The volume: a disk whose every byte lives in a log of objects. This module joins the parts that
 * serve it, built from what open_volume.ts opened (lease -> load -> fence -> journal -> repair -> size):
 *
 *   write / trim / flush -> LogWriter (open object, seal, uploads, durability, checkpoints)
 *   read                 -> ReadPath (open object, in-flight bodies, cache, Fetcher GETs)
 *   block status         -> blockStatus (map + open object)
 *
 * The extent map is shared: the writer updates it at seal time through the same applyObject
 * recovery uses. A read-only volume has no writer and never modifies the bucket.
 */

import { assert } from "../util/assert.ts";
import { SECTOR_BYTES, VOLUME_BYTES_MAX } from "../util/constants.ts";
import { isLsvdError, LsvdError, messageOf } from "../util/errors.ts";
import { isStoreError } from "../store/store.ts";
import type { RetryingStore } from "../store/retry.ts";
import type { LeaseHolder, LeaseKeeper } from "../log/lease.ts";
import { listLogState, volumeExists } from "../log/log_state.ts";
import { type LoadedLog, loadLog } from "../log/load.ts";
import { applyObject } from "../log/apply.ts";
import { positionOf, type TailPosition, type TailStep } from "../log/tail.ts";
import { ensureFormatRecord } from "../log/format_record.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";
import type { CipherFor } from "../log/volume_encryption.ts";
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
import { ReadAhead } from "./read_ahead.ts";
import { ReadCache } from "./read_cache.ts";
import { ReadPath } from "./read_path.ts";
import type { Journal } from "../journal/journal.ts";
import type { ScannedJournal } from "../journal/journal_replay.ts";
import { startJournal } from "./journal_start.ts";
import { type OpenedVolume, openVolumeLog } from "./open_volume.ts";
import {
  type ResolvedVolumeOptions,
  resolveVolumeOptions,
  type VolumeOptions,
  volumeStore,
} from "./volume_options.ts";

export type { FlushPolicy, VolumeOptions } from "./volume_options.ts";
export { VOLUME_BYTES_MAX };
export { refuseBeforeWriting } from "./open_volume.ts";

/** How long a shutdown that stored every write tries to release the lease when the store does not answer. */
export const SHUTDOWN_OPTIONAL_MS = CLOSE_CHECKPOINT_MS;
/** The options of every write under writeThrough. */
const WRITE_THROUGH: WriteOptions = Object.freeze({ fua: true });

export class Volume implements BlockDevice {
  readonly readOnly: boolean;
  #o: ResolvedVolumeOptions;
  #map!: ExtentMap;
  #lineage!: Lineage;
  #sizeBytes: number;
  #writer: LogWriter | undefined;
  #cache!: ReadCache;
  #tables!: CrcTables;
  #fetcher!: Fetcher;
  #objectSizes!: ObjectSizes;
  #reads!: ReadPath;
  /** The store for reads (and GC): retried until the store answers or the volume closes. */
  #readStore: RetryingStore;
  #closed = false;
  #lastSequence!: number;
  /** Read-only: where following the log stands (src/log/tail.ts). */
  #followed: TailPosition;
  /** Read-only followers: loads the log anew when a read finds its object deleted. */
  #onGone: ((why: string) => Promise<void>) | undefined;
  #gc: GcRunner | undefined;
  #gcTimer: Timer | undefined;
  #keeper: LeaseKeeper | undefined;
  #failed: Promise<Error>;
  #reportFailure: (error: Error) => void = () => {};
  #journal: Journal | undefined;
  #journalReplayed = 0;
  #mayAcknowledge: () => boolean = () => true;
  /** An encrypted volume's keys (undefined for a plain volume). */
  #cipher: SectorCipher | undefined;
  /** The key of each object read (a clone's ancestors' have their own); undefined for a plain volume. */
  #cipherFor: CipherFor | undefined;

  private constructor(opened: OpenedVolume) {
    const { o, loaded, sizeBytes } = opened;
    this.#failed = new Promise((resolve) => (this.#reportFailure = resolve));
    this.#keeper = opened.keeper;
    this.#cipher = opened.cipher;
    this.#cipherFor = opened.cipherFor;
    this.#o = o;
    this.readOnly = o.readOnly;
    this.#sizeBytes = sizeBytes;
    const keeper = opened.keeper;
    this.#mayAcknowledge = () => {
      if (keeper === undefined || keeper.isValid()) return true;
      keeper.renewSoon();
      return false;
    };
    // Reads wait out an outage too; closing the volume ends the wait.
    this.#readStore = volumeStore(
      o,
      () => this.#closed ? new LsvdError("closed", "Cannot read: the volume is closed") : undefined,
    );
    this.#followed = positionOf(loaded);
    this.#buildReadSide(loaded);
    if (!o.readOnly) this.#writer = this.#buildWriter(loaded, opened.epoch);
    if (this.#writer !== undefined) this.#gc = buildGc(o, this.#readStore, this.#writer, loaded.map, keeper);
  }

  /**
   * The map, object sizes, cache, CRC tables, fetcher and read path of `loaded`. Built again when a
   * follower loads the log anew (a rollback may have given numbers new bytes: nothing cached stays).
   */
  #buildReadSide(loaded: LoadedLog): void {
    const o = this.#o;
    this.#map = loaded.map;
    this.#lineage = loaded.lineage;
    this.#lastSequence = loaded.lastSequence;
    // CRC tables take up to a sixteenth of the cache limit: a 4 MiB object's is 4 KiB, so that
    // keeps the tables of 64 times more data than the cache itself holds. An encrypted volume always
    // verifies, and its tables carry the GCM tags too (20 KiB a 4 MiB object): a quarter keeps
    // about as many (51 times the cache), so a fragmented log does not refetch them 5 times as often.
    const tableBytesMax = o.verifyReads || this.#cipher !== undefined
      ? Math.floor(o.cacheBytesMax / (this.#cipher === undefined ? 16 : 4))
      : 0;
    this.#tables = new CrcTables(tableBytesMax);
    this.#cache = new ReadCache(o.cacheBytesMax - tableBytesMax);
    this.#objectSizes = objectSizesOf(loaded);
    const reads = loaded.lineage.readStore(this.#readStore); // a parent in another bucket: src/log/lineage_store.ts
    this.#fetcher = new Fetcher({
      store: reads,
      keyOf: (sequence) => loaded.lineage.keyOf(sequence),
      cache: this.#cache,
      tables: new CrcTableLoader({ store: reads, tables: this.#tables }),
      sizes: this.#objectSizes,
      verify: o.verifyReads,
      log: o.log,
      ...(o.diskCache === undefined ? {} : { disk: o.diskCache }),
      ...(this.#cipherFor === undefined ? {} : { cipherFor: this.#cipherFor }),
    });
    this.#reads = this.#buildReadPath(loaded.map);
  }

  /** The writer: seals, uploads and checkpoints; its failure fails the journal and whenFailed(). */
  #buildWriter(loaded: LoadedLog, epoch: number): LogWriter {
    return new LogWriter(this.#o, loaded.map, this.#cache, {
      lastSequence: loaded.lastSequence,
      writerEpoch: epoch,
      sizeBytes: this.#sizeBytes,
      checkpointedThrough: loaded.checkpointSequence,
      lastObjectCrc32: loaded.lastObjectCrc32,
      objectSizes: this.#objectSizes,
      mayAcknowledge: this.#mayAcknowledge,
      cipher: this.#cipher,
      onFail: (e) => {
        this.#journal?.fail(e);
        this.#reportFailure(e);
      },
    });
  }

  /** The read path: open object, in-flight bodies, cache, read-ahead, Fetcher GETs. */
  #buildReadPath(map: ExtentMap): ReadPath {
    const o = this.#o;
    const aheadBytes = Math.min(o.readAheadBytesMax, Math.floor(o.cacheBytesMax / 4));
    const aheadSectors = Math.floor(aheadBytes / SECTOR_BYTES);
    const readAhead = new ReadAhead({
      windowMinSectors: Math.min(aheadSectors, 256),
      windowMaxSectors: aheadSectors,
    });
    return new ReadPath({
      map,
      cache: this.#cache,
      fetcher: this.#fetcher,
      readAhead,
      open: () => this.#writer?.open,
      inflightBody: (sequence) => this.#writer?.inflightBody(sequence),
      sizeSectors: () => this.#sizeBytes / SECTOR_BYTES,
      prefetchBytesMax: Math.floor(o.cacheBytesMax / 2),
    });
  }

  /**
   * Recovers the volume from the store (open_volume.ts: lease, load, fence, journal, repair, size);
   * throws LsvdError with a user-facing message.
   */
  static async open(options: VolumeOptions): Promise<Volume> {
    const opened = await openVolumeLog(resolveVolumeOptions(options));
    let volume: Volume | undefined;
    try {
      volume = new Volume(opened);
      const built = volume;
      opened.leaseEvents.onLost = (e) => built.#leaseLost(e);
      opened.leaseEvents.onRenewed = () => built.#leaseRenewed();
      if (opened.keeper?.lost !== undefined) throw opened.keeper.lost;
      if (!opened.o.readOnly) await volume.#startWriting(opened);
      return volume;
    } catch (e) {
      volume?.abandon();
      await opened.giveBack();
      throw e;
    }
  }

  /** A writer's last steps: the format record, the size if new or changed, the journal, GC. */
  async #startWriting(opened: OpenedVolume): Promise<void> {
    const { o, store, state, loaded, sizeBytes } = opened;
    await ensureFormatRecord(store, o.prefix, state.format, o.clock.wallMs());
    const recorded = loaded.volumeSizeBytes;
    if (sizeBytes !== recorded || !volumeExists(state)) {
      o.log(
        recorded === undefined
          ? `Creating a volume of ${sizeBytes} bytes.`
          : `Resizing the volume from ${recorded} to ${sizeBytes} bytes.`,
      );
      await this.#writer!.recordSize(sizeBytes);
    }
    if (o.journal !== undefined) await this.#startJournal(opened.scanned!);
    this.#scheduleGc();
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
        sealer: this.#cipher,
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

  /** Read-only: the newest object applied, with its epoch and CRC (what the next poll lists from). */
  get followPosition(): TailPosition {
    return { ...this.#followed };
  }

  /**
   * Read-only followers: applies new objects of the log (a tail step, in order, gap-free) with the
   * rule recovery uses, in one synchronous run, so a read sees the state before or after them and
   * never one in between. Returns the number applied.
   */
  applyFollowed(objects: TailStep["objects"]): number {
    assert(this.readOnly, "following needs a read-only volume");
    for (const { object, summary } of objects) {
      assert(object.sequence === this.#followed.sequence + 1, "a followed object out of order");
      this.#objectSizes.set(object.sequence, object.sizeBytes);
      applyObject(this.#map, object.sequence, {
        entries: summary.entries,
        zeroRanges: summary.zeroRanges,
        origins: summary.trailer?.origins,
      });
      const epoch = summary.trailer?.writerEpoch ?? this.#followed.epoch;
      this.#followed = { sequence: object.sequence, epoch, crc32: summary.trailer?.crc32 ?? 0, own: true };
      this.#lastSequence = object.sequence;
      const size = summary.trailer?.volumeSizeBytes;
      if (size !== undefined && size !== this.#sizeBytes && size !== this.#seenSizeBytes) {
        this.#seenSizeBytes = size;
        this.#o.log(
          `The writer resized the volume to ${size} bytes; this daemon keeps serving ${this.#sizeBytes} ` +
            "(an NBD export's size is fixed per connection: restart it to serve the new size).",
        );
      }
    }
    return objects.length;
  }

  #seenSizeBytes: number | undefined;

  /** Read-only followers: loads the log anew (a rollback, a lapsed pin); nothing cached is kept. */
  async reloadFollowed(): Promise<void> {
    assert(this.readOnly, "following needs a read-only volume");
    const o = this.#o;
    const state = await listLogState(this.#readStore, o.prefix);
    const loaded = await loadLog(this.#readStore, state, {
      concurrency: o.recoveryConcurrency,
      log: o.log,
    });
    this.#followed = positionOf(loaded);
    o.diskCache?.forgetChecks(); // its entries are checked against the new log's tables again
    this.#buildReadSide(loaded);
  }

  /** Read-only followers: what a read that finds its object deleted awaits before it is retried once. */
  set onObjectGone(handler: ((why: string) => Promise<void>) | undefined) {
    this.#onGone = handler;
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
      /** The open object's staging and spare bodies: what the writer holds beyond the dirty bytes. */
      writeBufferBytes: w?.open.bufferBytes ?? 0,
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
    if (this.#journal === undefined) return writer.write(offsetBytes, data, this.#writeOptions(options));
    const written = this.#journal.write(offsetBytes, data);
    return options?.fua ? written.then(() => this.flush()) : written;
  }

  /** The same write, done at once (undefined) when the writer needs no wait; with a journal, write()'s. */
  startWrite(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> | undefined {
    if (this.#journal !== undefined) return this.write(offsetBytes, data, options);
    this.#checkRange(offsetBytes, data.length);
    return this.#writable().startWrite(offsetBytes, data, this.#writeOptions(options));
  }

  /** Without a journal, writeThrough makes every write FUA: acknowledged once stored. */
  #writeOptions(options: WriteOptions | undefined): WriteOptions | undefined {
    return this.#o.writeThrough ? WRITE_THROUGH : options;
  }

  writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    this.#checkRange(offsetBytes, lengthBytes);
    const writer = this.#writable();
    if (this.#journal === undefined) {
      return writer.writeZeroes(offsetBytes, lengthBytes, this.#writeOptions(options));
    }
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
    const started = this.#reads.start(offsetBytes, dest);
    const onGone = this.#onGone;
    if (started === undefined || onGone === undefined) return started;
    // A follower's map may name an object garbage collection deleted (its pin lapsed, or a read
    // outlived the point its pin held): load the log anew and read again, never serve zeros or EIO.
    return started.catch(async (e) => {
      const gone = goneObject(e);
      if (gone === undefined) throw e;
      await onGone(gone);
      const again = this.#reads.start(offsetBytes, dest);
      if (again !== undefined) await again;
    });
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

/** The sizes of the objects a read may need: the loaded log's gap-free part and the lineage's. */
function objectSizesOf(loaded: LoadedLog): ObjectSizes {
  const objectSizes = new ObjectSizes();
  for (const obj of loaded.state.objects.slice(0, loaded.state.gapFreeCount)) {
    objectSizes.set(obj.sequence, obj.sizeBytes);
  }
  for (const [sequence, sizeBytes] of loaded.lineage.sizes) objectSizes.set(sequence, sizeBytes);
  return objectSizes;
}

/** The GC runner; only the lease holder deletes: a pass checks the lease right before its record and deletes. */
function buildGc(
  o: ResolvedVolumeOptions,
  store: RetryingStore,
  writer: LogWriter,
  head: ExtentMap,
  keeper: LeaseKeeper | undefined,
): GcRunner {
  return new GcRunner({
    store,
    prefix: o.prefix,
    clock: o.clock,
    log: o.log,
    writer,
    head,
    retentionMs: o.retentionMs,
    thresholds: o.gcThresholds,
    concurrency: 4,
    objectBytesMax: o.objectBytesMax,
    mayDelete: () => keeper === undefined || keeper.isValid(),
  });
}

/** The message of a read failure caused by a deleted object (store NotFound), else undefined. */
function goneObject(e: unknown): string | undefined {
  for (let c: unknown = e; c instanceof Error; c = c.cause) {
    if (isStoreError(c, "NotFound")) return messageOf(e);
  }
  return undefined;
}
