/**
 * @module
 * The volume engine: a disk whose every byte lives in a log of objects.
 *
 *   write ─► OpenObject ─seal (size / timer / flush)─► in-flight objects ─PUT (many at once)─► store
 *   read  ─► OpenObject, then ExtentMap ─► in-flight object bodies, or ranged GETs to the store
 *
 * Durability is ordered: a FLUSH resolves only once every object up to the newest sealed one is in
 * the store, so after a crash recovery (which stops at the first gap) holds every flushed write.
 * Memory is bounded: dirty bytes (open + in flight) never exceed dirtyBytesMax; writers wait.
 */

import { assert } from "../util/assert.ts";
import { HEADER_BYTES, SECTOR_BYTES } from "../format/object.ts";
import {
  checkpointKey,
  checkpointPrefix,
  logKey,
  normalizePrefix,
  parseCheckpointKey,
} from "../format/keys.ts";
import { encodeCheckpoint } from "../format/checkpoint.ts";
import { isStoreError, listAll, type ObjectStore } from "../store/store.ts";
import { type Clock, systemClock, type Timer } from "../util/clock.ts";
import { type Logger, stderrLogger } from "../util/log.ts";
import type { AllocationExtent, BlockDevice, WriteOptions } from "./block_device.ts";
import { messageOf, VolumeError } from "./errors.ts";
import { ExtentMap, SECTOR_INDEX_MAX } from "./extent_map.ts";
import { OpenObject } from "./open_object.ts";
import { recover } from "./recovery.ts";
import { ReadCache } from "./read_cache.ts";
import { Fetcher } from "./fetcher.ts";
import { ReadAhead } from "./read_ahead.ts";
import { type RetryPolicy, withRetries } from "./retry.ts";

export interface VolumeOptions {
  store: ObjectStore;
  prefix?: string;
  /** Required when the log holds no size yet; larger than the recorded size grows the volume. */
  sizeBytes?: number;
  readOnly?: boolean;
  clock?: Clock;
  log?: Logger;
  /** Data bytes per object before it is sealed (default 4 MiB). */
  objectBytesMax?: number;
  /** Open + in-flight bytes before writers wait (default 256 MiB). */
  dirtyBytesMax?: number;
  /** A non-empty open object is sealed this long after its first write (default 1000 ms). */
  sealDelayMs?: number;
  /** Concurrent PUTs (default 32). */
  uploadsMax?: number;
  /** Attempts per PUT on transient errors before the volume fails (default 10). */
  uploadAttemptsMax?: number;
  /** Header reads in flight during recovery (default 64). */
  recoveryConcurrency?: number;
  /** Bytes of recently uploaded or read object data kept for reads (default 64 MiB, 0 disables). */
  cacheBytesMax?: number;
  /** Names the archive folder if recovery finds objects after a gap. */
  recoveryId?: string;
  /** Write a map checkpoint every this many objects, and at close (default 1000; 0 = never). */
  checkpointEveryObjects?: number;
  /** Largest read-ahead window for sequential readers (default 16 MiB, at most a quarter of the
   *  cache; 0 disables). */
  readAheadBytesMax?: number;
}

/** Bound on GETs in flight before read-ahead holds back (reads themselves are not limited here). */
const PREFETCH_GETS_MAX = 64;

/** Largest volume the u32 sector indexes can address: 16 TiB. */
export const VOLUME_BYTES_MAX = (SECTOR_INDEX_MAX + 1) * SECTOR_BYTES;

interface Waiter {
  sequence: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class Volume implements BlockDevice {
  readonly readOnly: boolean;
  #sizeBytes: number;
  #store: ObjectStore;
  #prefix: string;
  #clock: Clock;
  #log: Logger;
  #map: ExtentMap;
  #open: OpenObject;
  #objectBytesMax: number;
  #dirtyBytesMax: number;
  #sealDelayMs: number;
  #uploadsMax: number;
  #uploadAttemptsMax: number;
  #writerEpoch: number;
  #lastSequence: number;
  #durableThrough: number;
  #durableAhead = new Set<number>(); // uploaded, but an earlier one is not yet
  #inflight = new Map<number, Uint8Array>(); // sealed, not yet uploaded: sequence -> object bytes
  #inflightBytes = 0;
  #uploadQueue: number[] = [];
  #uploadsRunning = 0;
  #flushWaiters: Waiter[] = [];
  #spaceWaiters: { lengthBytes: number; resolve: () => void }[] = [];
  #reservedBytes = 0; // granted to woken writers that have not added their data yet
  #writersWaiting = 0; // writers between deciding to wait and adding their data
  #sealTimer: Timer | undefined;
  #failure: Error | undefined;
  #lastObjectCrc = 0;
  #closed = false;
  #cache: ReadCache;
  #fetcher: Fetcher;
  #readAhead: ReadAhead;
  #readRetry: RetryPolicy;
  #checkpointEvery: number;
  #checkpointedThrough: number;
  #checkpointing: Promise<void> | undefined;

  private constructor(options: VolumeOptions, state: Awaited<ReturnType<typeof recover>>, sizeBytes: number) {
    this.#store = options.store;
    this.#prefix = normalizePrefix(options.prefix ?? "");
    this.readOnly = options.readOnly ?? false;
    this.#clock = options.clock ?? systemClock;
    this.#log = options.log ?? stderrLogger;
    this.#objectBytesMax = options.objectBytesMax ?? 4 * 1024 * 1024;
    this.#dirtyBytesMax = options.dirtyBytesMax ?? 256 * 1024 * 1024;
    this.#sealDelayMs = options.sealDelayMs ?? 1000;
    this.#uploadsMax = options.uploadsMax ?? 32;
    this.#uploadAttemptsMax = options.uploadAttemptsMax ?? 10;
    this.#cache = new ReadCache(options.cacheBytesMax ?? 64 * 1024 * 1024);
    this.#map = state.map;
    this.#lastSequence = state.lastSequence;
    this.#durableThrough = state.lastSequence;
    this.#writerEpoch = state.writerEpoch + 1;
    this.#sizeBytes = sizeBytes;
    this.#open = new OpenObject(this.#objectBytesMax);
    this.#readRetry = { clock: this.#clock, attemptsMax: this.#uploadAttemptsMax };
    this.#fetcher = new Fetcher({
      store: this.#store,
      prefix: this.#prefix,
      retry: this.#readRetry,
      cache: this.#cache,
    });
    const cacheBytes = options.cacheBytesMax ?? 64 * 1024 * 1024;
    const aheadBytes = Math.min(options.readAheadBytesMax ?? 16 * 1024 * 1024, Math.floor(cacheBytes / 4));
    const aheadSectors = Math.floor(aheadBytes / SECTOR_BYTES);
    this.#readAhead = new ReadAhead({
      windowMinSectors: Math.min(aheadSectors, 256),
      windowMaxSectors: aheadSectors,
    });
    this.#checkpointEvery = options.checkpointEveryObjects ?? 1000;
    // Headers replayed past the newest checkpoint make the next checkpoint (at the latest at close) due.
    this.#checkpointedThrough = state.checkpointSequence;
    this.#lastObjectCrc = state.lastObjectCrc32;
  }

  /** Recovers the volume from the store; throws VolumeError with a user-facing message. */
  static async open(options: VolumeOptions): Promise<Volume> {
    checkOptions(options);
    const prefix = normalizePrefix(options.prefix ?? "");
    const readOnly = options.readOnly ?? false;
    const state = await recover(options.store, {
      prefix,
      log: options.log ?? stderrLogger,
      readOnly,
      concurrency: options.recoveryConcurrency ?? 64,
      recoveryId: options.recoveryId ?? `${Date.now().toString(36)}`,
      retry: {
        clock: options.clock ?? systemClock,
        attemptsMax: options.uploadAttemptsMax ?? 10,
        onRetry: (n, e) =>
          (options.log ?? stderrLogger)(`Retrying a read during recovery (attempt ${n}: ${messageOf(e)}).`),
      },
    });
    const recorded = state.volumeSizeBytes;
    const wanted = options.sizeBytes;
    if (recorded === undefined && wanted === undefined) {
      throw new VolumeError(
        "Cannot open the volume: it has no recorded size yet; give --size the first time",
      );
    }
    const sizeBytes = wanted ?? recorded!;
    if (wanted !== undefined && recorded !== undefined && wanted < recorded) {
      const end = mappedEndBytes(state.map);
      if (end > wanted) {
        throw new VolumeError(
          `Cannot shrink the volume from ${recorded} to ${wanted} bytes: data is written up to byte ${end}`,
        );
      }
    }
    const volume = new Volume(options, state, sizeBytes);
    if (sizeBytes !== recorded && !readOnly) {
      (options.log ?? stderrLogger)(
        recorded === undefined
          ? `Creating a volume of ${sizeBytes} bytes.`
          : `Resizing the volume from ${recorded} to ${sizeBytes} bytes.`,
      );
      await volume.#recordSize();
    }
    return volume;
  }

  get sizeBytes(): number {
    return this.#sizeBytes;
  }

  /** Extents in the map, for memory accounting. */
  get stats() {
    return {
      extents: this.#map.extentCount,
      denseRegions: this.#map.denseRegions,
      mapBytes: this.#map.memoryBytes,
      lastSequence: this.#lastSequence,
      durableThrough: this.#durableThrough,
      dirtyBytes: this.#dirtyBytes(),
      cacheBytes: this.#cache.sizeBytes,
    };
  }

  // ---- writes -------------------------------------------------------------------------------

  async write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.#checkWritable(offsetBytes, data.length);
    // The caller may reuse data once we return a promise; keep our own copy if we must wait.
    if (!this.#hasRoom(Math.min(data.length, this.#objectBytesMax)) || data.length > this.#objectBytesMax) {
      data = data.slice();
    }
    for (let done = 0; done < data.length;) {
      const piece = Math.min(data.length - done, this.#objectBytesMax);
      const sector = (offsetBytes + done) / SECTOR_BYTES;
      const waited = !this.#hasRoom(piece);
      if (waited) await this.#reserve(piece);
      if (!this.#open.canWrite(sector, piece / SECTOR_BYTES)) this.#seal();
      this.#open.write(sector, data.subarray(done, done + piece));
      if (waited) this.#granted(piece);
      this.#armTimer();
      done += piece;
    }
    if (options?.fua) await this.flush();
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    this.#checkWritable(offsetBytes, lengthBytes);
    const waited = !this.#hasRoom(0);
    if (waited) await this.#reserve(0);
    if (!this.#open.canZero()) this.#seal();
    this.#open.zero(offsetBytes / SECTOR_BYTES, lengthBytes / SECTOR_BYTES);
    if (waited) this.#granted(0);
    this.#armTimer();
    if (options?.fua) await this.flush();
  }

  trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    return this.writeZeroes(offsetBytes, lengthBytes, options);
  }

  flush(): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    this.#seal();
    const target = this.#lastSequence;
    if (this.#durableThrough >= target) return Promise.resolve();
    return new Promise((resolve, reject) => this.#flushWaiters.push({ sequence: target, resolve, reject }));
  }

  /** Flushes everything and stops timers; the volume accepts nothing afterwards. */
  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      // Writers still waiting for dirty space are granted as uploads finish: flush until none is left.
      while (!this.readOnly) {
        await this.flush();
        const idle = this.#open.isEmpty && this.#writersWaiting === 0;
        if (idle && this.#durableThrough === this.#lastSequence) break;
      }
      await this.#checkpointing;
      if (!this.readOnly && this.#checkpointEvery > 0 && this.#lastSequence > this.#checkpointedThrough) {
        this.#startCheckpoint(this.#lastSequence, this.#lastObjectCrc);
        await this.#checkpointing;
      }
    } finally {
      this.#closed = true;
      this.#sealTimer?.cancel();
      this.#sealTimer = undefined;
    }
  }

  /** Stops without flushing, as a crash would (for tests): pending uploads are abandoned. */
  abandon(): void {
    this.#closed = true;
    this.#sealTimer?.cancel();
    this.#fail(new VolumeError("Cannot continue: the volume was abandoned"));
  }

  #checkWritable(offsetBytes: number, lengthBytes: number): void {
    assert(!this.readOnly, "write to a read-only volume");
    assert(!this.#closed, "write after close");
    this.#checkRange(offsetBytes, lengthBytes);
    if (this.#failure) throw this.#failure;
  }

  #checkRange(offsetBytes: number, lengthBytes: number): void {
    assert(offsetBytes % SECTOR_BYTES === 0 && lengthBytes % SECTOR_BYTES === 0, "unaligned request");
    assert(
      offsetBytes >= 0 && lengthBytes > 0 && offsetBytes + lengthBytes <= this.#sizeBytes,
      "out of range",
    );
  }

  #dirtyBytes(): number {
    return this.#open.dataBytes + this.#inflightBytes + this.#reservedBytes;
  }

  /** True when lengthBytes more dirty data fits now and nobody queued before us. The caller must
   *  then add its data without awaiting, so the check and the use are one atomic step. */
  #hasRoom(lengthBytes: number): boolean {
    return this.#writersWaiting === 0 && this.#dirtyBytes() + lengthBytes <= this.#dirtyBytesMax;
  }

  /** Waits, first come first served, until lengthBytes are granted under the dirty limit. */
  async #reserve(lengthBytes: number): Promise<void> {
    if (this.#failure) throw this.#failure;
    this.#writersWaiting++;
    if (this.#inflight.size === 0) this.#seal(); // the open object alone is the backlog
    await new Promise<void>((resolve) => this.#spaceWaiters.push({ lengthBytes, resolve }));
    if (this.#failure) {
      this.#writersWaiting--;
      throw this.#failure;
    }
  }

  /** A writer that waited has added its data: its reservation becomes ordinary dirty bytes. */
  #granted(lengthBytes: number): void {
    this.#reservedBytes -= lengthBytes;
    this.#writersWaiting--;
  }

  #armTimer(): void {
    if (this.#sealTimer !== undefined) return;
    this.#sealTimer = this.#clock.setTimer(this.#sealDelayMs, () => {
      this.#sealTimer = undefined;
      this.#seal();
    });
  }

  /** Turns the open object into the next numbered object and starts its upload. */
  #seal(force = false): void {
    if (this.#open.isEmpty && !force) return;
    if (this.#failure) return;
    this.#sealTimer?.cancel();
    this.#sealTimer = undefined;
    const sequence = this.#lastSequence + 1;
    const sealed = this.#open.seal({
      sequence,
      writerEpoch: this.#writerEpoch,
      volumeSizeBytes: this.#sizeBytes,
    });
    this.#lastSequence = sequence;
    for (const r of sealed.runs) this.#map.set(r.startSector, r.lengthSectors, sequence, r.offsetSectors);
    for (const z of sealed.zeroRanges) this.#map.clear(z.startSector, z.lengthSectors);
    this.#inflight.set(sequence, sealed.bytes);
    this.#inflightBytes += sealed.bytes.length;
    this.#uploadQueue.push(sequence);
    this.#lastObjectCrc = objectCrcOf(sealed.bytes);
    this.#pumpUploads();
    const due = this.#checkpointEvery > 0 && sequence - this.#checkpointedThrough >= this.#checkpointEvery;
    if (due && this.#checkpointing === undefined) this.#startCheckpoint(sequence, this.#lastObjectCrc);
  }

  /**
   * Snapshots the map now (it reflects exactly objects 1..sequence at this instant), and stores it
   * once those objects are durable. Failures only cost restart time, so they are logged, not fatal.
   */
  #startCheckpoint(sequence: number, objectCrc32: number): void {
    // Encoded now, synchronously: the map reflects exactly objects 1..sequence at this instant.
    const bytes = encodeCheckpoint(
      { sequence, volumeSizeBytes: this.#sizeBytes, writerEpoch: this.#writerEpoch, objectCrc32 },
      this.#map.runs(),
      this.#map.extentCount,
    );
    const durable = this.#durableThrough >= sequence
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => this.#flushWaiters.push({ sequence, resolve, reject }));
    this.#checkpointing = durable
      .then(() => this.#writeCheckpoint(bytes, sequence))
      .catch((e) => this.#log(`Cannot write checkpoint ${sequence}: ${messageOf(e)}.`))
      .finally(() => (this.#checkpointing = undefined));
  }

  async #writeCheckpoint(bytes: Uint8Array, sequence: number): Promise<void> {
    const key = checkpointKey(this.#prefix, sequence);
    try {
      await withRetries(this.#readRetry, () => this.#store.put(key, bytes, { ifNoneMatch: true }));
    } catch (e) {
      if (!isStoreError(e, "PreconditionFailed")) throw e;
    }
    this.#checkpointedThrough = Math.max(this.#checkpointedThrough, sequence);
    const older: string[] = [];
    for await (const o of listAll(this.#store, { prefix: checkpointPrefix(this.#prefix) })) {
      const n = parseCheckpointKey(this.#prefix, o.key);
      if (n !== undefined && n < sequence) older.push(o.key);
    }
    for (const k of older.slice(0, -1)) await withRetries(this.#readRetry, () => this.#store.delete(k)); // keep two
  }

  async #recordSize(): Promise<void> {
    this.#seal(true);
    await this.flush();
  }

  #pumpUploads(): void {
    while (this.#uploadsRunning < this.#uploadsMax && this.#uploadQueue.length > 0) {
      const sequence = this.#uploadQueue.shift()!;
      this.#uploadsRunning++;
      this.#upload(sequence).finally(() => {
        this.#uploadsRunning--;
        this.#pumpUploads();
      });
    }
  }

  async #upload(sequence: number): Promise<void> {
    const bytes = this.#inflight.get(sequence);
    assert(bytes !== undefined);
    const key = logKey(this.#prefix, sequence);
    try {
      await withRetries({
        clock: this.#clock,
        attemptsMax: this.#uploadAttemptsMax,
        onRetry: (n, e) => this.#log(`Retrying upload of "${key}" (attempt ${n} failed: ${messageOf(e)}).`),
      }, () => {
        if (this.#failure) throw this.#failure; // not transient: a failed volume stops retrying
        return this.#store.put(key, bytes, { ifNoneMatch: true });
      });
    } catch (e) {
      if (this.#failure) return;
      const why = isStoreError(e, "PreconditionFailed")
        ? "it already exists; another writer is using this volume"
        : messageOf(e);
      return this.#fail(new VolumeError(`Cannot write object "${key}": ${why}`, { cause: e }));
    }
    this.#uploaded(sequence, bytes);
  }

  #uploaded(sequence: number, bytes: Uint8Array): void {
    this.#cache.addObject(sequence, bytes);
    this.#inflight.delete(sequence);
    this.#inflightBytes -= bytes.length;
    this.#durableAhead.add(sequence);
    while (this.#durableAhead.delete(this.#durableThrough + 1)) this.#durableThrough++;
    const still: Waiter[] = [];
    for (const w of this.#flushWaiters) {
      if (w.sequence <= this.#durableThrough) w.resolve();
      else still.push(w);
    }
    this.#flushWaiters = still;
    this.#wakeWriters();
  }

  /** Grants waiting writers their bytes in arrival order while they fit (all of them on failure). */
  #wakeWriters(): void {
    for (;;) {
      const head = this.#spaceWaiters[0];
      if (head === undefined) return;
      if (!this.#failure && this.#dirtyBytes() + head.lengthBytes > this.#dirtyBytesMax) return;
      this.#spaceWaiters.shift();
      if (!this.#failure) this.#reservedBytes += head.lengthBytes;
      head.resolve();
    }
  }

  #fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    if (!this.#closed) this.#log(`${error.message}. The volume stops accepting writes.`);
    for (const w of this.#flushWaiters) w.reject(error);
    this.#flushWaiters = [];
    this.#wakeWriters();
  }

  // ---- reads --------------------------------------------------------------------------------

  async read(offsetBytes: number, dest: Uint8Array): Promise<void> {
    this.#checkRange(offsetBytes, dest.length);
    if (this.#failure && this.#closed) throw this.#failure;
    const firstSector = offsetBytes / SECTOR_BYTES;
    const sectors = dest.length / SECTOR_BYTES;
    dest.fill(0);
    const remote: { sequence: number; offsetSectors: number; destSector: number; lengthSectors: number }[] =
      [];
    // Resolve every source synchronously so the answer is one consistent moment of the disk.
    this.#map.lookup(firstSector, sectors, (e) => {
      const at = (e.startSector - firstSector) * SECTOR_BYTES;
      const body = this.#inflight.get(e.sequence);
      if (body !== undefined) {
        const from = HEADER_BYTES + e.offsetSectors * SECTOR_BYTES;
        dest.set(body.subarray(from, from + e.lengthSectors * SECTOR_BYTES), at);
        return;
      }
      if (this.#cache.read(e.sequence, e.offsetSectors, e.lengthSectors, dest.subarray(at))) return;
      remote.push({
        sequence: e.sequence,
        offsetSectors: e.offsetSectors,
        destSector: e.startSector - firstSector,
        lengthSectors: e.lengthSectors,
      });
    });
    const overlay = this.#open.isEmpty ? [] : this.#overlayOpen(firstSector, sectors, dest);
    const ahead = this.#readAhead.observe(firstSector, sectors);
    if (ahead !== undefined) this.#prefetch(ahead.startSector, ahead.lengthSectors);
    if (remote.length === 0) return;
    await Promise.all(coalesce(remote).map((run) => this.#fetch(run, dest, overlay)));
  }

  /** Copies the open object's sectors into dest now; returns which dest sectors it decided. */
  #overlayOpen(firstSector: number, sectors: number, dest: Uint8Array): Uint8Array {
    const decided = new Uint8Array(sectors);
    for (let k = 0; k < sectors; k++) {
      const found = this.#open.lookup(firstSector + k);
      if (found === undefined) continue;
      decided[k] = 1;
      if (found === "zero") dest.fill(0, k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES);
      else dest.set(found, k * SECTOR_BYTES);
    }
    return decided;
  }

  async #fetch(run: FetchRun, dest: Uint8Array, decided: Uint8Array | never[]): Promise<void> {
    const body = await this.#fetcher.get(run.sequence, run.offsetSectors, run.lengthSectors);
    for (const piece of run.pieces) {
      const src = body.subarray(
        piece.bodySector * SECTOR_BYTES,
        (piece.bodySector + piece.lengthSectors) * SECTOR_BYTES,
      );
      if (decided.length === 0) {
        dest.set(src, piece.destSector * SECTOR_BYTES);
        continue;
      }
      for (let k = 0; k < piece.lengthSectors; k++) {
        if ((decided as Uint8Array)[piece.destSector + k]) continue;
        dest.set(
          src.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES),
          (piece.destSector + k) * SECTOR_BYTES,
        );
      }
    }
  }

  /** Fetches stored data of [start, start+length) into the cache; failures are left to real reads. */
  #prefetch(startSector: number, lengthSectors: number): void {
    const end = Math.min(startSector + lengthSectors, this.#sizeBytes / SECTOR_BYTES);
    if (end <= startSector || this.#fetcher.inFlight >= PREFETCH_GETS_MAX) return;
    const pieces: { sequence: number; offsetSectors: number; destSector: number; lengthSectors: number }[] =
      [];
    this.#map.lookup(startSector, end - startSector, (e) => {
      if (this.#inflight.has(e.sequence)) return;
      if (this.#cache.has(e.sequence, e.offsetSectors, e.lengthSectors)) return;
      pieces.push({ ...e, destSector: 0 });
    });
    for (const run of coalesce(pieces)) {
      this.#fetcher.get(run.sequence, run.offsetSectors, run.lengthSectors).catch(() => {});
    }
  }

  // ---- block status ---------------------------------------------------------------------------

  blockStatus(offsetBytes: number, lengthBytes: number): AllocationExtent[] {
    this.#checkRange(offsetBytes, lengthBytes);
    const a = offsetBytes / SECTOR_BYTES, b = a + lengthBytes / SECTOR_BYTES;
    let data: [number, number][] = [];
    let end = b;
    this.#map.lookup(a, b - a, (e) => {
      if (data.length >= 4096) {
        end = Math.min(end, e.startSector); // report a prefix rather than build a huge answer
        return;
      }
      if (e.startSector < end) data.push([e.startSector, e.startSector + e.lengthSectors]);
    });
    if (!this.#open.isEmpty) {
      const o = this.#open.overlay(a, end);
      data = unionRuns(subtractRuns(data, o.zero), o.data.map((s) => [s, s + 1] as [number, number]));
    }
    return toAllocation(data, a, end);
  }
}

/** The CRC-32 an object's trailer ends with (its last 8 bytes are crc, trailer length). */
function objectCrcOf(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset + bytes.length - 8, 4).getUint32(0);
}

interface FetchRun {
  sequence: number;
  offsetSectors: number;
  lengthSectors: number;
  pieces: { bodySector: number; destSector: number; lengthSectors: number }[];
}

/** Joins pieces that are adjacent inside one object into one ranged GET. */
function coalesce(
  pieces: { sequence: number; offsetSectors: number; destSector: number; lengthSectors: number }[],
): FetchRun[] {
  const sorted = [...pieces].sort((x, y) => x.sequence - y.sequence || x.offsetSectors - y.offsetSectors);
  const runs: FetchRun[] = [];
  for (const p of sorted) {
    const last = runs.at(-1);
    if (last && last.sequence === p.sequence && last.offsetSectors + last.lengthSectors === p.offsetSectors) {
      last.pieces.push({
        bodySector: last.lengthSectors,
        destSector: p.destSector,
        lengthSectors: p.lengthSectors,
      });
      last.lengthSectors += p.lengthSectors;
    } else {
      runs.push({
        sequence: p.sequence,
        offsetSectors: p.offsetSectors,
        lengthSectors: p.lengthSectors,
        pieces: [{ bodySector: 0, destSector: p.destSector, lengthSectors: p.lengthSectors }],
      });
    }
  }
  return runs;
}

function subtractRuns(runs: [number, number][], cut: [number, number][]): [number, number][] {
  let out = runs;
  for (const [ca, cb] of cut) {
    const next: [number, number][] = [];
    for (const [s, e] of out) {
      if (e <= ca || s >= cb) next.push([s, e]);
      else {
        if (s < ca) next.push([s, ca]);
        if (e > cb) next.push([cb, e]);
      }
    }
    out = next;
  }
  return out;
}

function unionRuns(a: [number, number][], b: [number, number][]): [number, number][] {
  const all = [...a, ...b].sort((x, y) => x[0] - y[0]);
  const out: [number, number][] = [];
  for (const [s, e] of all) {
    const last = out.at(-1);
    if (last && s <= last[1]) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}

function toAllocation(data: [number, number][], a: number, end: number): AllocationExtent[] {
  const out: AllocationExtent[] = [];
  const push = (lengthSectors: number, zero: boolean) => {
    if (lengthSectors <= 0) return;
    const last = out.at(-1);
    if (last && last.zero === zero) last.lengthBytes += lengthSectors * SECTOR_BYTES;
    else out.push({ lengthBytes: lengthSectors * SECTOR_BYTES, zero });
  };
  let at = a;
  for (const [s, e] of data) {
    push(s - at, true);
    push(e - s, false);
    at = e;
  }
  push(end - at, true);
  return out;
}

function mappedEndBytes(map: ExtentMap): number {
  let end = 0;
  for (const e of map.entries()) end = Math.max(end, (e.startSector + e.lengthSectors) * SECTOR_BYTES);
  return end;
}

function checkOptions(o: VolumeOptions): void {
  const size = o.sizeBytes;
  if (size !== undefined && (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR_BYTES !== 0)) {
    throw new VolumeError(`Cannot open the volume: size ${size} is not a positive multiple of 4096 bytes`);
  }
  if (size !== undefined && size > VOLUME_BYTES_MAX) {
    throw new VolumeError(`Cannot open the volume: size ${size} exceeds the 16 TiB maximum`);
  }
  const objectBytes = o.objectBytesMax ?? 4 * 1024 * 1024;
  if (objectBytes % SECTOR_BYTES !== 0 || objectBytes < SECTOR_BYTES || objectBytes > 256 * 1024 * 1024) {
    throw new VolumeError(
      `Cannot open the volume: object size ${objectBytes} must be 4 KiB to 256 MiB, 4 KiB aligned`,
    );
  }
  if ((o.dirtyBytesMax ?? 256 * 1024 * 1024) < 2 * objectBytes) {
    throw new VolumeError("Cannot open the volume: the dirty-data limit must be at least two objects");
  }
}
