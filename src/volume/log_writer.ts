/**
 * @module
 * The log writer: the write half of the volume.
 *
 *   write -> OpenObject -seal (size / timer / FLUSH)-> in-flight objects -PUT create-only-> store
 *                           | applyObject (the one map rule, shared with recovery)
 *                           v durableThrough: every object 1..N is stored -> FLUSHes <= N resolve
 *
 * Durability is ordered: a FLUSH resolves only once every object up to the one holding its writes
 * is stored, so recovery (which stops at the first gap) holds every flushed write. Group commit:
 * while commit objects (sealed for a FLUSH) are uploading, later FLUSHes wait to join the next one
 * instead of each sealing its own; a FLUSH never waits for more than the commits ahead of it.
 * Uploads never run more than `uploadsMax` numbers ahead of the durable log (a new writer can then
 * close an old writer's whole window). Memory is bounded by the dirty budget.
 */

import { assert } from "../util/assert.ts";
import { SECTOR_BYTES } from "../util/constants.ts";
import { logKey } from "../format/keys.ts";
import { dataBytesOf, decodeHeader, decodeTrailer, HEADER_BYTES, trailerBytesOf } from "../format/object.ts";
import { type Timer, withinMs } from "../util/clock.ts";
import { isLsvdError, LsvdError, messageOf } from "../util/errors.ts";
import { applyObject } from "../log/apply.ts";
import { encodeMapCheckpoint, objectCrcOf, storeCheckpoint } from "../log/checkpoints.ts";
import { putLogObject } from "../log/object_writer.ts";
import { EncryptedBodies } from "./encrypted_bodies.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";
import type { WriteOptions } from "./block_device.ts";
import { FifoBudget } from "../util/fifo_budget.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { OpenObject, type SealedObject } from "./open_object.ts";
import type { ObjectSizes } from "./object_sizes.ts";
import { buildCopyObject, type CopyPiece, type SealedCopy } from "./copy_object.ts";
import type { ReadCache } from "./read_cache.ts";
import { type ResolvedVolumeOptions, volumeStore } from "./volume_options.ts";
import type { RetryingStore } from "../store/retry.ts";

/** Between "Still flushing" lines while closing. */
const CLOSE_PROGRESS_MS = 5000;
/**
 * How long close() tries the shutdown checkpoint once every write is stored. A checkpoint only
 * shortens the next start, so a store that does not answer costs a bounded wait, never the exit.
 */
export const CLOSE_CHECKPOINT_MS = 10_000;

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

interface Waiter {
  sequence: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/** Where the writer starts: the state recovery left. */
export interface WriterStart {
  lastSequence: number;
  writerEpoch: number;
  sizeBytes: number;
  checkpointedThrough: number;
  lastObjectCrc32: number;
  /** Sizes of stored objects, which the writer extends as it uploads (reads use them). */
  objectSizes: ObjectSizes;
  /** False while the writer's lease is not valid: FLUSHes then wait (fencing.md). Default always. */
  mayAcknowledge?: () => boolean;
  /** Told once when the writer fails (serve exits when another writer fenced it). */
  onFail?: (error: Error) => void;
  /** An encrypted volume's data key: objects are stored encrypted (docs/design/encryption.md). */
  cipher?: SectorCipher | undefined;
}

export class LogWriter {
  #o: ResolvedVolumeOptions;
  #map: ExtentMap;
  #cache: ReadCache;
  #objectSizes: ObjectSizes;
  #open: OpenObject;
  #budget: FifoBudget;
  #sizeBytes: number;
  #writerEpoch: number;
  #lastSequence: number;
  #durableThrough: number;
  #durableAhead = new Set<number>(); // uploaded, but an earlier one is not yet
  #inflight = new Map<number, Uint8Array>(); // sealed, not yet stored: sequence -> object bytes
  #sealedBodies = new Map<number, Uint8Array>(); // encrypted volume: sequence -> the bytes to store
  #sealedBytes = 0; // their bytes: memory the dirty limit counts too
  #encrypted: EncryptedBodies | undefined;
  #cipher: SectorCipher | undefined;
  #inflightBytes = 0;
  #uploadQueue: number[] = [];
  #uploadsRunning = 0;
  #flushWaiters: Waiter[] = [];
  /** close(): waits for durability alone (acknowledging nothing, so the lease's validity is moot). */
  #storedWaiters: Waiter[] = [];
  /** Set by close() once every write is stored. */
  #allStored = false;
  /** Ends a shutdown checkpoint's retries once close() stopped waiting for it. */
  #checkpointAbandoned: LsvdError | undefined;
  #commits = new Set<number>(); // commit objects not yet durable
  #commitWanted = 0; // highest sequence a waiting FLUSH needs sealed (group commit)
  #commitTimer: Timer | undefined;
  #lastCommitMs = -Infinity;
  #sealTimer: Timer | undefined;
  #failure: Error | undefined;
  #lastObjectCrc: number;
  #closed = false;
  /** Uploads wait out an outage; a failed (fenced) volume ends the wait. */
  #store: RetryingStore;
  /** Checkpoints also end when close() gives up on them (a checkpoint is optional). */
  #checkpointStore: RetryingStore;
  #checkpointedThrough: number;
  #checkpointing: Promise<void> | undefined;
  #counters = { objectsUploaded: 0, bytesUploaded: 0, commits: 0 };
  #mayAcknowledge: () => boolean;
  #onFail: ((error: Error) => void) | undefined;

  constructor(o: ResolvedVolumeOptions, map: ExtentMap, cache: ReadCache, start: WriterStart) {
    this.#o = o;
    this.#map = map;
    this.#cache = cache;
    this.#objectSizes = start.objectSizes;
    this.#open = new OpenObject(o.objectBytesMax);
    this.#budget = FifoBudget.bytes(
      o.dirtyBytesMax,
      () => this.#open.dataBytes + this.#inflightBytes + this.#sealedBytes,
    );
    this.#sizeBytes = start.sizeBytes;
    this.#writerEpoch = start.writerEpoch;
    this.#lastSequence = start.lastSequence;
    this.#durableThrough = start.lastSequence;
    this.#checkpointedThrough = start.checkpointedThrough;
    this.#lastObjectCrc = start.lastObjectCrc32;
    this.#store = volumeStore(o, () => this.#failure);
    this.#checkpointStore = volumeStore(o, () => this.#failure ?? this.#checkpointAbandoned);
    this.#mayAcknowledge = start.mayAcknowledge ?? (() => true);
    this.#onFail = start.onFail;
    this.#cipher = start.cipher;
    this.#encrypted = start.cipher === undefined
      ? undefined
      : new EncryptedBodies(start.cipher, o.objectBytesMax);
  }

  get sizeBytes(): number {
    return this.#sizeBytes;
  }
  get lastSequence(): number {
    return this.#lastSequence;
  }
  get durableThrough(): number {
    return this.#durableThrough;
  }
  get writerEpoch(): number {
    return this.#writerEpoch;
  }
  /** An encrypted volume's keys (GC decrypts what it copies with them); undefined for a plain one. */
  get cipher(): SectorCipher | undefined {
    return this.#cipher;
  }
  get failure(): Error | undefined {
    return this.#failure;
  }
  get closed(): boolean {
    return this.#closed;
  }
  get open(): OpenObject {
    return this.#open;
  }
  get dirtyBytes(): number {
    return this.#open.dataBytes + this.#inflightBytes + this.#budget.reservedBytes;
  }
  get counters(): Readonly<{ objectsUploaded: number; bytesUploaded: number; commits: number }> {
    return this.#counters;
  }

  /** The body of a sealed object still uploading (reads are served from it). */
  inflightBody(sequence: number): Uint8Array | undefined {
    return this.#inflight.get(sequence);
  }

  // ---- writes -------------------------------------------------------------------------------

  write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    try {
      return this.startWrite(offsetBytes, data, options) ?? Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * The same write, done at once when it waits for nothing (no FUA, room in the dirty budget for
   * all of it, one object's worth at most): then undefined, with the data copied into the open
   * object; else write()'s promise. Throws where write() would reject.
   */
  startWrite(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> | undefined {
    const atOnce = options?.fua !== true && data.length <= this.#o.objectBytesMax &&
      this.#budget.hasRoom(data.length);
    if (!atOnce) return this.#writeWaiting(offsetBytes, data, options);
    this.#checkWritable();
    const sector = offsetBytes / SECTOR_BYTES;
    if (!this.#open.canWrite(sector, data.length / SECTOR_BYTES)) this.#seal();
    this.#open.write(sector, data);
    this.#armTimer();
    return undefined;
  }

  /** A write that may wait: for dirty space (first come first served), or for its FUA flush. */
  async #writeWaiting(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.#checkWritable();
    const objectBytes = this.#o.objectBytesMax;
    // The caller may reuse data once we return a promise; keep our own copy if we must wait.
    if (!this.#budget.hasRoom(Math.min(data.length, objectBytes)) || data.length > objectBytes) {
      data = data.slice();
    }
    for (let done = 0; done < data.length;) {
      const piece = Math.min(data.length - done, objectBytes);
      const sector = (offsetBytes + done) / SECTOR_BYTES;
      const waited = !this.#budget.hasRoom(piece);
      if (waited) await this.#reserve(piece);
      if (!this.#open.canWrite(sector, piece / SECTOR_BYTES)) this.#seal();
      this.#open.write(sector, data.subarray(done, done + piece));
      if (waited) this.#budget.granted(piece);
      this.#armTimer();
      done += piece;
    }
    if (options?.fua) await this.flush();
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    this.#checkWritable();
    const waited = !this.#budget.hasRoom(0);
    if (waited) await this.#reserve(0);
    if (!this.#open.canZero()) this.#seal();
    this.#open.zero(offsetBytes / SECTOR_BYTES, lengthBytes / SECTOR_BYTES);
    if (waited) this.#budget.granted(0);
    this.#armTimer();
    if (options?.fua) await this.flush();
  }

  /**
   * Resolves once every write that completed before this call is stored. "each": seal now.
   * "group": seal now unless commitsInFlightMax commit objects are uploading (or the commit rate
   * is spent); then the writes join the next commit, sealed as soon as one lands.
   */
  flush(): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    let target = this.#lastSequence;
    if (!this.#open.isEmpty) {
      target = this.#lastSequence + 1; // the next seal, whatever triggers it, holds these writes
      this.#commitWanted = Math.max(this.#commitWanted, target);
      this.#maybeCommit();
    }
    if (this.#durableThrough >= target && this.#mayAcknowledge()) return Promise.resolve();
    return new Promise((resolve, reject) => this.#flushWaiters.push({ sequence: target, resolve, reject }));
  }

  /** The lease was renewed: FLUSHes held back while it was not valid may resolve now. */
  leaseRenewed(): void {
    this.#resolveWaiters();
  }

  /** Seals an object with no entries whose trailer records the size (creating/resizing a volume). */
  async recordSize(sizeBytes: number): Promise<void> {
    this.#sizeBytes = sizeBytes;
    this.#seal(true);
    await this.flush();
  }

  /**
   * Stores every write, then writes a checkpoint (for at most CLOSE_CHECKPOINT_MS) and stops
   * timers; accepts nothing afterwards. Resolves with whether the checkpoint was given up (the
   * store did not answer in time; every write is stored all the same).
   */
  async close(): Promise<{ checkpointGivenUp: boolean }> {
    if (this.#closed) return { checkpointGivenUp: false };
    try {
      const progress = this.#closeProgress();
      try {
        // Writers still waiting for dirty space are granted as uploads finish: store until none is left.
        for (;;) {
          await this.#stored(this.#sealForClose());
          const idle = this.#open.isEmpty && this.#budget.writersWaiting === 0;
          if (idle && this.#durableThrough === this.#lastSequence) break;
        }
      } finally {
        progress.cancel();
      }
      this.#allStored = true;
      const written = await withinMs(this.#o.clock, CLOSE_CHECKPOINT_MS, this.#closingCheckpoint());
      if (!written) {
        this.#checkpointAbandoned = new LsvdError("closed", "Cannot write the checkpoint: the volume closed");
      }
      return { checkpointGivenUp: !written };
    } finally {
      this.#stop();
    }
  }

  /** True once close() stored every write (what is left is the optional checkpoint and lease). */
  get allStored(): boolean {
    return this.#allStored;
  }

  /** Seals what is open (as a FLUSH would) and returns the object that must be stored for it. */
  #sealForClose(): number {
    if (this.#open.isEmpty) return this.#lastSequence;
    const target = this.#lastSequence + 1; // the next seal, whatever triggers it, holds these writes
    this.#commitWanted = Math.max(this.#commitWanted, target);
    this.#maybeCommit();
    return target;
  }

  /** Resolves once objects up to `sequence` are stored, whether or not the lease is valid now. */
  #stored(sequence: number): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#durableThrough >= sequence) return Promise.resolve();
    return new Promise((resolve, reject) => this.#storedWaiters.push({ sequence, resolve, reject }));
  }

  async #closingCheckpoint(): Promise<void> {
    await this.#checkpointing;
    if (this.#o.checkpointEveryObjects > 0 && this.#lastSequence > this.#checkpointedThrough) {
      this.#startCheckpoint(this.#lastSequence, this.#lastObjectCrc);
      await this.#checkpointing;
    }
  }

  /** While close() waits: a line every 5 s with what is left to store and the rate. */
  #closeProgress(): Timer {
    const clock = this.#o.clock;
    const startMs = clock.nowMs();
    const startBytes = this.#counters.bytesUploaded;
    let timer: Timer;
    const tick = () => {
      const left = this.#inflightBytes + this.#open.dataBytes;
      const objects = this.#lastSequence - this.#durableThrough + (this.#open.isEmpty ? 0 : 1);
      const rate = (this.#counters.bytesUploaded - startBytes) /
        Math.max(1e-3, (clock.nowMs() - startMs) / 1000);
      const unreachable = this.#o.health.unreachable ? "; object storage is unreachable, still retrying" : "";
      this.#o.log(
        `Still flushing: ${mib(left)} MiB in ${objects} objects left to store, ${
          mib(rate)
        } MiB/s${unreachable}.`,
      );
      timer = clock.setTimer(CLOSE_PROGRESS_MS, tick);
    };
    timer = clock.setTimer(CLOSE_PROGRESS_MS, tick);
    return { cancel: () => timer.cancel() };
  }

  /** What close() has not stored yet (for a shutdown deadline's last line). */
  get unflushed(): { bytes: number; objects: number; firstSequence: number } {
    return {
      bytes: this.#inflightBytes + this.#open.dataBytes,
      objects: this.#lastSequence - this.#durableThrough + (this.#open.isEmpty ? 0 : 1),
      firstSequence: this.#durableThrough + 1,
    };
  }

  /** Stops without flushing, as a crash would (tests): pending uploads are abandoned. */
  abandon(): void {
    this.#stop();
    this.fail(new LsvdError("closed", "Cannot continue: the volume was abandoned"));
  }

  /** Fails the volume: writes and flushes get `error` from now on. */
  fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    // A fenced writer's owner says so once, naming the new holder (serve's last line); any other
    // failure is news here.
    if (!this.#closed && !isLsvdError(error, "fenced")) {
      this.#o.log(`${error.message}. The volume stops accepting writes.`);
    }
    for (const w of [...this.#flushWaiters, ...this.#storedWaiters]) w.reject(error);
    this.#flushWaiters = [];
    this.#storedWaiters = [];
    this.#budget.wake(true);
    this.#onFail?.(error);
  }

  #stop(): void {
    this.#closed = true;
    this.#sealTimer?.cancel();
    this.#sealTimer = undefined;
    this.#commitTimer?.cancel();
    this.#commitTimer = undefined;
  }

  #checkWritable(): void {
    assert(!this.#o.readOnly, "write to a read-only volume");
    assert(!this.#closed, "write after close");
    if (this.#failure) throw this.#failure;
  }

  async #reserve(lengthBytes: number): Promise<void> {
    if (this.#failure) throw this.#failure;
    if (this.#inflight.size === 0) this.#seal(); // the open object alone is the backlog
    await this.#budget.reserve(lengthBytes);
    if (this.#failure) {
      this.#budget.granted(lengthBytes, false);
      throw this.#failure;
    }
  }

  #armTimer(): void {
    if (this.#sealTimer !== undefined) return;
    this.#sealTimer = this.#o.clock.setTimer(this.#o.sealDelayMs, () => {
      this.#sealTimer = undefined;
      this.#seal();
    });
  }

  /** Group commit: seals for waiting FLUSHes when the policy allows, else leaves it to #uploaded. */
  #maybeCommit(): void {
    if (this.#commitWanted <= this.#lastSequence || this.#failure) return;
    const o = this.#o;
    if (o.flushPolicy === "group") {
      if (this.#commits.size >= o.commitsInFlightMax) return;
      if (o.commitsPerSecondMax !== undefined) {
        const dueMs = this.#lastCommitMs + 1000 / o.commitsPerSecondMax;
        const waitMs = dueMs - o.clock.nowMs();
        if (waitMs > 0) {
          this.#commitTimer ??= o.clock.setTimer(waitMs, () => {
            this.#commitTimer = undefined;
            this.#maybeCommit();
          });
          return;
        }
      }
    }
    this.#lastCommitMs = o.clock.nowMs();
    this.#counters.commits++;
    this.#seal(false, true);
  }

  /** Turns the open object into the next numbered object and queues its upload. */
  #seal(force = false, commit = false): void {
    if (this.#open.isEmpty && !force) return;
    if (this.#failure) return;
    this.#sealTimer?.cancel();
    this.#sealTimer = undefined;
    const sequence = this.#lastSequence + 1;
    const sealed = this.#open.seal(this.#sealMeta(sequence));
    this.#enqueue(sequence, sealed, commit);
  }

  #sealMeta(sequence: number) {
    return {
      sequence,
      writerEpoch: this.#writerEpoch,
      volumeSizeBytes: this.#sizeBytes,
      sealTimeMs: this.#o.clock.wallMs(),
    };
  }

  // ---- copies (garbage collection) ----------------------------------------------------------

  /**
   * Seals a copied object from live data GC read back: only the sectors the map still points at
   * their source are included (src/volume/copy_object.ts), so a copy never hides a newer write.
   * Client writes still open are sealed first, so flushes waiting for them are not answered by
   * the copy. Returns what was sealed, or undefined when nothing was still current.
   */
  appendCopy(pieces: readonly CopyPiece[]): SealedCopy & { sequence: number } | undefined {
    if (this.#closed) throw new LsvdError("closed", "Cannot copy live data: the volume is closed");
    this.#checkWritable();
    if (!this.#open.isEmpty) this.#seal(false, this.#commitWanted > this.#lastSequence);
    const sequence = this.#lastSequence + 1;
    const sealed = buildCopyObject(this.#map, pieces, this.#sealMeta(sequence));
    if (sealed === undefined) return undefined;
    this.#enqueue(sequence, sealed, false);
    return { ...sealed, sequence };
  }

  /** Resolves once object `sequence` and every one before it are stored. */
  durable(sequence: number): Promise<void> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#durableThrough >= sequence) return Promise.resolve();
    return new Promise((resolve, reject) => this.#flushWaiters.push({ sequence, resolve, reject }));
  }

  /** Numbers the sealed object, applies it to the map (the one rule recovery uses) and queues its upload. */
  #enqueue(sequence: number, sealed: SealedObject & { origins?: number[] }, commit: boolean): void {
    assert(sequence === this.#lastSequence + 1);
    this.#lastSequence = sequence;
    applyObject(this.#map, sequence, sealed);
    this.#inflight.set(sequence, sealed.bytes);
    this.#inflightBytes += sealed.bytes.length;
    this.#uploadQueue.push(sequence);
    if (commit || this.#commitWanted >= sequence) this.#commits.add(sequence);
    // Encrypted before it leaves the machine; reads of it while in flight use the plaintext.
    const stored = this.#encrypted === undefined ? sealed.bytes : this.#encrypted.encrypt(sealed.bytes);
    if (stored !== sealed.bytes) {
      this.#sealedBodies.set(sequence, stored);
      this.#sealedBytes += stored.length;
    }
    this.#lastObjectCrc = objectCrcOf(stored);
    this.#pumpUploads();
    const every = this.#o.checkpointEveryObjects;
    const due = every > 0 && sequence - this.#checkpointedThrough >= every;
    if (due && this.#checkpointing === undefined) this.#startCheckpoint(sequence, this.#lastObjectCrc);
  }

  /** Starts uploads while slots are free and the next number is within the window. */
  #pumpUploads(): void {
    while (this.#uploadsRunning < this.#o.uploadsMax && this.#uploadQueue.length > 0) {
      // The window: nothing more than uploadsMax numbers ahead of the durable log is ever in the store.
      if (this.#uploadQueue[0]! > this.#durableThrough + this.#o.uploadsMax) return;
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
    const key = logKey(this.#o.prefix, sequence);
    let retried = false;
    const store = this.#store.withPolicy({ ...this.#store.policy, onRetry: () => (retried = true) });
    const stored = this.#sealedBodies.get(sequence) ?? bytes;
    try {
      // Retried until the store is back; a failed (fenced) volume ends the wait through abort.
      await putLogObject(store, { key, bytes: stored });
    } catch (e) {
      if (this.#failure) return;
      if (isLsvdError(e, "fenced")) return this.fail(e);
      return this.fail(
        new LsvdError("unavailable", `Cannot write object "${key}": ${messageOf(e)}`, { cause: e }),
      );
    }
    this.#uploaded(sequence, bytes);
    this.#keepOnDisk(key, sequence, stored);
    // Stored, and no longer served from memory (the cache copied what it keeps): nothing holds the
    // body now, unless an earlier attempt was abandoned at its deadline with the body still queued.
    if (!retried) {
      this.#open.recycle(bytes);
      if (stored !== bytes) this.#encrypted?.recycle(stored);
    }
    // Idle: the buffers a burst left resident go until the next write (OpenObject.releaseIdle).
    if (this.#inflight.size === 0 && this.#open.isEmpty) {
      this.#open.releaseIdle();
      this.#encrypted?.releaseSpares();
    }
  }

  /**
   * `--cache-dir` on a remote store: a stored object's data, as stored (sealed when encrypted), goes
   * to the disk cache too, so reading it back once the memory cache let it go, or after a restart,
   * costs no data GET (issue 23; read back, it is checked against the object's stored CRC table like
   * any cached sector). Not for a directory store, whose objects are local files already
   * (DiskCache.keepsUploads, set by serve for a bucket).
   */
  #keepOnDisk(key: string, sequence: number, stored: Uint8Array): void {
    const disk = this.#o.diskCache;
    if (disk === undefined || !disk.keepsUploads) return;
    // Where it pays: a 4 MiB object costs the one thread ~1 ms to write, 6-12 ms when the kernel
    // throttles dirty pages (bench/RESULTS.md), so only while the writer has little queued; a
    // stream of writes that keeps uploads busy skips it.
    if (this.#inflightBytes + this.#open.dataBytes > this.#o.dirtyBytesMax / 4) return;
    const entries = decodeHeader(stored.subarray(0, HEADER_BYTES));
    const dataBytes = dataBytesOf(entries);
    if (dataBytes === 0) return;
    const trailer = decodeTrailer(stored.subarray(stored.length - trailerBytesOf(entries, stored.length)));
    disk.add(key, sequence, 0, stored.subarray(HEADER_BYTES, HEADER_BYTES + dataBytes), trailer.sectorCrcs);
  }

  #uploaded(sequence: number, bytes: Uint8Array): void {
    this.#cache.addObject(sequence, bytes); // copies what it keeps
    const storedBytes = (this.#sealedBodies.get(sequence) ?? bytes).length;
    this.#objectSizes.set(sequence, storedBytes);
    this.#inflight.delete(sequence);
    if (this.#sealedBodies.delete(sequence)) this.#sealedBytes -= storedBytes;
    this.#inflightBytes -= bytes.length;
    this.#counters.objectsUploaded++;
    this.#counters.bytesUploaded += storedBytes;
    this.#durableAhead.add(sequence);
    while (this.#durableAhead.delete(this.#durableThrough + 1)) {
      this.#durableThrough++;
      this.#commits.delete(this.#durableThrough);
    }
    if (this.#storedWaiters.length > 0) {
      const still: Waiter[] = [];
      for (const w of this.#storedWaiters) w.sequence <= this.#durableThrough ? w.resolve() : still.push(w);
      this.#storedWaiters = still;
    }
    this.#resolveWaiters();
    this.#budget.wake(false);
    this.#maybeCommit();
    this.#pumpUploads();
  }

  /** Resolves the FLUSHes (and checkpoints) now durable, while the lease allows acknowledging. */
  #resolveWaiters(): void {
    if (this.#failure || !this.#mayAcknowledge()) return;
    const still: Waiter[] = [];
    for (const w of this.#flushWaiters) {
      if (w.sequence <= this.#durableThrough) w.resolve();
      else still.push(w);
    }
    this.#flushWaiters = still;
  }

  // ---- checkpoints --------------------------------------------------------------------------

  /**
   * Encodes the map now (it reflects exactly objects 1..sequence at this instant) and stores it
   * once those objects are durable. Failures only cost restart time: logged, not fatal.
   */
  #startCheckpoint(sequence: number, objectCrc32: number): void {
    const bytes = encodeMapCheckpoint(this.#map, {
      sequence,
      volumeSizeBytes: this.#sizeBytes,
      writerEpoch: this.#writerEpoch,
      objectCrc32,
    });
    const durable = this.#durableThrough >= sequence
      ? Promise.resolve()
      : new Promise<void>((resolve, reject) => this.#flushWaiters.push({ sequence, resolve, reject }));
    this.#checkpointing = durable
      .then(() => this.#writeCheckpoint(bytes, sequence))
      .catch((e) => {
        if (e !== this.#checkpointAbandoned) {
          this.#o.log(`Cannot write checkpoint ${sequence}: ${messageOf(e)}.`);
        }
      })
      .finally(() => (this.#checkpointing = undefined));
  }

  async #writeCheckpoint(bytes: Uint8Array, sequence: number): Promise<void> {
    // Retried while the store is away, until close() gives up on it (a checkpoint is optional).
    await storeCheckpoint(this.#checkpointStore, this.#o.prefix, { sequence, bytes });
    this.#checkpointedThrough = Math.max(this.#checkpointedThrough, sequence);
  }
}
