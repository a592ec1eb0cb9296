/**
 * @module
 * The write-back journal (`serve --journal DIR`, docs/design/write-back-journal.md): every write,
 * zero and trim is appended to a local segment file before it enters the log writer as today, and
 * a FLUSH is acknowledged once the journal is fdatasync'd (FLUSHes share syncs, a few overlap) and
 * the lease is valid, not once objects are in the store. Objects fill by size or are sealed by the
 * writer's timer (the journal delay) and upload in the background under the usual ordered
 * durability; a segment is deleted only when every object holding its records is durable.
 *
 *   write -> append record (number, bytes) -> LogWriter.write (dirty buffer, objects, uploads)
 *   FLUSH -> fdatasync the current segment (batched) -> lease valid? -> acknowledged
 *   applied write -> mark (journal bytes, object number) -> durable(object) -> delete old segments
 *
 * Order: a record's number is taken in the same synchronous step in which the write enters the
 * writer (which applies writes in issue order), so the journal's order is the log's order; that is
 * what makes replay correct. Bounds: the journal holds at most `bytesMax` (writes then wait, first
 * come first served, and the open object is sealed so uploads free space); memory holds only
 * records not yet written to the file, at most min(segment, 32 MiB) (writes wait beyond that).
 */

import { assert } from "../util/assert.ts";
import { LsvdError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import {
  encodeRecord,
  recordBytes,
  type RecordKind,
  type RecordSealer,
  sealedHeader,
} from "./journal_codec.ts";
import { type JournalFiles, segmentName } from "./journal_files.ts";
import { FifoBudget } from "../util/fifo_budget.ts";

/** Records appended but not yet written to the file, at most (memory beyond the dirty buffer). */
const UNWRITTEN_BYTES_MAX = 32 * 2 ** 20;

/** What the journal needs from the log writer. */
export interface JournalTarget {
  write(offsetBytes: number, data: Uint8Array): Promise<void>;
  writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void>;
  /** The object whose durability covers every write applied so far (the open one counts as next). */
  coveringSequence(): number;
  /** Resolves once objects 1..sequence are stored. */
  durable(sequence: number): Promise<void>;
  /** Seals the open object now so its upload starts (the journal is full). */
  sealNow(): void;
  readonly failure: Error | undefined;
}

export interface JournalOptions {
  files: JournalFiles;
  target: JournalTarget;
  /** Live segment bytes before writes wait for uploads. */
  bytesMax: number;
  /** A segment is closed once it holds this much (deleted only whole). */
  segmentBytes: number;
  /** The number of the first record this journal appends. */
  firstRecord: number;
  /** False while the lease is not valid: FLUSHes wait (the same rule as the writer's). */
  mayAcknowledge: () => boolean;
  log: Logger;
  /** An encrypted volume: writes are journaled as sealed records (their data encrypted). */
  sealer?: RecordSealer | undefined;
}

interface Segment {
  name: string;
  /** Journal byte position (bytes ever appended) where the segment ends; grows while current. */
  endPosition: number;
  startPosition: number;
  created: boolean;
}

interface Pending {
  segment: Segment;
  bytes: Uint8Array;
  endPosition: number;
}

interface Waiter {
  position: number;
  resolve: () => void;
  reject: (e: unknown) => void;
}

export class Journal {
  #o: JournalOptions;
  #segments: Segment[] = [];
  #nextRecord: number;
  #appended = 0; // journal byte positions: bytes appended, written to files, synced, durable in the store
  #written = 0;
  #synced = 0;
  #durable = 0;
  #removed = 0; // bytes of deleted segments
  #pending: Pending[] = [];
  #writing: Promise<void> | undefined;
  /** fdatasyncs in flight (at most files.concurrentSyncs), and the segment each runs on: reclaim leaves those. */
  #syncs = new Map<Promise<void>, Segment | undefined>();
  /** The furthest position a sync started so far covers (in flight or returned). */
  #syncStartedThrough = 0;
  #syncWanted = 0;
  #syncWaiters: Waiter[] = [];
  #leaseWaiters: Waiter[] = [];
  /** Writes whose records are not yet in the file (write() resolves once they are). */
  #fileWaiters: Waiter[] = [];
  /** Disk and memory bytes (fitsOnDisk, fitsInMemory): the one FIFO budget the writer uses too. */
  #space: FifoBudget;
  #unwrittenBytesMax: number;
  #marks: { position: number; sequence: number }[] = [];
  #reclaiming: Promise<void> = Promise.resolve();
  #failure: Error | undefined;
  #stopped = false;
  #counters = { syncs: 0, records: 0, bytesAppended: 0 };

  constructor(o: JournalOptions) {
    assert(o.segmentBytes > 0 && o.bytesMax >= o.segmentBytes, "journal bounds");
    this.#o = o;
    this.#nextRecord = o.firstRecord;
    this.#unwrittenBytesMax = Math.min(o.segmentBytes, UNWRITTEN_BYTES_MAX);
    this.#space = new FifoBudget((bytes, reserved) =>
      this.#fitsOnDisk(bytes, reserved) && this.#fitsInMemory(bytes, reserved)
    );
  }

  /** Journal bytes whose writes are not yet durable in the store. */
  get pendingBytes(): number {
    return this.#appended - this.#durable;
  }

  /** Acknowledgeable (synced) journal bytes not yet durable in the store. */
  get syncedPendingBytes(): number {
    return Math.max(0, this.#synced - this.#durable);
  }

  /** Bytes in segment files now. */
  get liveBytes(): number {
    return this.#appended - this.#removed;
  }

  get counters(): Readonly<{ syncs: number; records: number; bytesAppended: number }> {
    return this.#counters;
  }

  get description(): string {
    return this.#o.files.description;
  }

  // ---- writes ---------------------------------------------------------------------------------

  async write(offsetBytes: number, data: Uint8Array): Promise<void> {
    const bytes = recordBytes(this.#o.sealer === undefined ? "write" : "sealed", data.length);
    if (!this.#hasRoom(bytes)) {
      data = data.slice(); // the caller may reuse its buffer once we wait
      await this.#reserve(bytes);
      this.#granted(bytes);
    }
    const position = this.#append("write", offsetBytes, data.length, data);
    await this.#o.target.write(offsetBytes, data);
    this.#applied(position);
    await this.#inFile(position);
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number): Promise<void> {
    const bytes = recordBytes("zero", lengthBytes);
    if (!this.#hasRoom(bytes)) {
      await this.#reserve(bytes);
      this.#granted(bytes);
    }
    const position = this.#append("zero", offsetBytes, lengthBytes, new Uint8Array(0));
    await this.#o.target.writeZeroes(offsetBytes, lengthBytes);
    this.#applied(position);
    await this.#inFile(position);
  }

  /**
   * Resolves once the records up to `position` are written to the journal file (not yet synced): a
   * write is acknowledged only then, so a daemon killed at any moment leaves every write it
   * acknowledged in the file for the next start to replay (the kernel keeps a mounted filesystem
   * across that restart and never re-sends an acknowledged write). A power loss may still take
   * what no FLUSH synced, as with any disk's write cache.
   */
  #inFile(position: number): Promise<void> {
    const failure = this.#failure ?? this.#o.target.failure;
    if (failure) return Promise.reject(failure);
    if (this.#written >= position) return Promise.resolve();
    return new Promise((resolve, reject) => this.#fileWaiters.push({ position, resolve, reject }));
  }

  /** Acknowledges the writes whose records are now in the file. */
  #wakeWritten(): void {
    if (this.#fileWaiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.#fileWaiters) {
      if (w.position <= this.#written) w.resolve();
      else still.push(w);
    }
    this.#fileWaiters = still;
  }

  /** Resolves once every record appended before it is synced and the lease allows acknowledging. */
  flush(): Promise<void> {
    const failure = this.#failure ?? this.#o.target.failure;
    if (failure) return Promise.reject(failure);
    const position = this.#appended;
    return new Promise((resolve, reject) => {
      const waiter = { position, resolve, reject };
      if (this.#synced >= position) return this.#acknowledge(waiter);
      this.#syncWanted = Math.max(this.#syncWanted, position);
      this.#syncWaiters.push(waiter);
      this.#kick();
    });
  }

  /** The lease was renewed: FLUSHes held while it was not valid are acknowledged. */
  leaseRenewed(): void {
    const waiting = this.#leaseWaiters;
    this.#leaseWaiters = [];
    for (const w of waiting) this.#acknowledge(w);
  }

  /** The volume failed: FLUSHes waiting get its error; the files stay as they are. */
  fail(error: Error): void {
    if (this.#failure) return;
    this.#failure = error;
    for (const w of [...this.#syncWaiters, ...this.#leaseWaiters, ...this.#fileWaiters]) w.reject(error);
    this.#fileWaiters = [];
    this.#syncWaiters = [];
    this.#leaseWaiters = [];
    this.#space.wake(true);
  }

  #acknowledge(w: Waiter): void {
    const failure = this.#failure ?? this.#o.target.failure;
    if (failure) return w.reject(failure);
    if (this.#o.mayAcknowledge()) return w.resolve();
    this.#leaseWaiters.push(w);
  }

  #hasRoom(bytes: number): boolean {
    if (this.#failure) throw this.#failure;
    return this.#space.hasRoom(bytes);
  }

  /** A record fits on disk under bytesMax (an empty journal takes any one record). */
  #fitsOnDisk(bytes: number, reserved: number): boolean {
    const used = this.liveBytes + reserved;
    return used === 0 || used + bytes <= this.#o.bytesMax;
  }

  /** Records not yet written to the file stay under a bound (the local disk is normally faster). */
  #fitsInMemory(bytes: number, reserved: number): boolean {
    const queued = this.#appended - this.#written + reserved;
    return queued === 0 || queued + bytes <= this.#unwrittenBytesMax;
  }

  /** Waits, first come first served, until the journal has room; seals so uploads make some. */
  async #reserve(bytes: number): Promise<void> {
    if (!this.#fitsOnDisk(bytes, this.#space.reservedBytes)) {
      this.#closeCurrentSegment();
      this.#o.target.sealNow();
    }
    await this.#space.reserve(bytes);
  }

  /** A writer that waited appends now (same synchronous step as its append) or gives up. */
  #granted(bytes: number): void {
    const failed = this.#failure !== undefined;
    this.#space.granted(bytes, !failed);
    if (failed) throw this.#failure;
  }

  /** Resolves once no write waits for journal space (all are in the writer): before closing it. */
  drained(): Promise<void> {
    return this.#space.drained();
  }

  /** Grants waiting writers their bytes in arrival order while they fit. */
  #wakeSpace(): void {
    this.#space.wake(false);
  }

  /** Numbers and encodes a record and queues it for the file; returns its end position. */
  #append(kind: RecordKind, offsetBytes: number, lengthBytes: number, data: Uint8Array): number {
    const number = this.#nextRecord++;
    const sealer = this.#o.sealer;
    if (kind === "write" && sealer !== undefined) {
      kind = "sealed";
      data = sealer.sealRecord(sealedHeader(number, offsetBytes, lengthBytes), data);
    }
    const bytes = encodeRecord({ kind, number, offsetBytes, lengthBytes, data });
    let segment = this.#segments.at(-1);
    if (segment === undefined || segment.endPosition !== -1) {
      segment = { name: segmentName(number), startPosition: this.#appended, endPosition: -1, created: false };
      this.#segments.push(segment);
    }
    this.#appended += bytes.length;
    this.#pending.push({ segment, bytes, endPosition: this.#appended });
    this.#counters.records++;
    this.#counters.bytesAppended += bytes.length;
    if (this.#appended - segment.startPosition >= this.#o.segmentBytes) {
      segment.endPosition = this.#appended; // closed: the next record starts a new segment
    }
    this.#kick();
    return this.#appended;
  }

  /** The next record starts a new segment, so everything before it can be deleted once durable. */
  #closeCurrentSegment(): void {
    const current = this.#segments.at(-1);
    if (current !== undefined && current.endPosition === -1 && this.#appended > current.startPosition) {
      current.endPosition = this.#appended;
    }
  }

  // ---- two pumps: one writes pending records in order, one syncs what is written -------------
  //
  // A write's record reaches the file (and the write is acknowledged) while an fdatasync runs,
  // not after it: under concurrent commits each write otherwise waited a whole sync first. A FLUSH
  // whose position no sync in flight covers starts one at once, up to `files.concurrentSyncs` in
  // flight (the kernel overlaps fdatasyncs of one file as it does for nbdkit's threads; through
  // Deno's own async sync they were slower than one at a time, bench/RESULTS.md); past that bound,
  // FLUSHes that arrive meanwhile share the next (group commit). A sync covers `#written` as read
  // in the synchronous step in which it starts, in the last created segment; every earlier segment
  // was synced whole before that one was created, so every byte before that position is on disk
  // when it returns, whatever the writer appends meanwhile or whichever sync returns first.

  #kick(): void {
    if (this.#stopped || this.#failure !== undefined) return;
    if (this.#writing === undefined && this.#pending.length > 0) {
      this.#writing = this.#writePending().catch((e) => this.#pumpFailed(e)).finally(() => {
        this.#writing = undefined;
        this.#kick();
      });
    }
    // A sync waits for new bytes in the file: one started before them would not cover them.
    const syncsMax = this.#o.files.concurrentSyncs;
    while (
      this.#syncs.size < syncsMax && this.#syncWanted > this.#syncStartedThrough &&
      this.#written > this.#syncStartedThrough
    ) {
      const through = this.#written;
      const segment = this.#segments.findLast((s) => s.created);
      this.#syncStartedThrough = through;
      const sync: Promise<void> = this.#syncWritten(through, segment)
        .catch((e) => this.#pumpFailed(e))
        .finally(() => {
          this.#syncs.delete(sync);
          this.#kick();
        });
      this.#syncs.set(sync, segment);
    }
  }

  /** Writes pending records to their segments in order; wakes the writes now in the file. */
  async #writePending(): Promise<void> {
    const files = this.#o.files;
    while (this.#pending.length > 0 && !this.#stopped && this.#failure === undefined) {
      const batch = this.#pending;
      this.#pending = [];
      for (let i = 0; i < batch.length;) {
        const segment = batch[i]!.segment;
        let j = i;
        while (j < batch.length && batch[j]!.segment === segment) j++;
        if (!segment.created) {
          // Every earlier segment is whole and synced before a later one gets a byte.
          const previous = this.#segments[this.#segments.indexOf(segment) - 1];
          if (previous !== undefined && previous.created) await files.sync(previous.name);
          await files.create(segment.name);
          segment.created = true;
        }
        await files.append(segment.name, concat(batch.slice(i, j).map((p) => p.bytes)));
        this.#written = batch[j - 1]!.endPosition;
        this.#wakeWritten();
        this.#wakeSpace();
        this.#kick(); // a FLUSH waiting for these bytes starts its sync now
        i = j;
      }
    }
  }

  /** One fdatasync of what is written through `through` (in `current`); acknowledges the FLUSHes it covers. */
  async #syncWritten(through: number, current: Segment | undefined): Promise<void> {
    if (current !== undefined) await this.#o.files.sync(current.name);
    if (this.#stopped) return;
    this.#counters.syncs++;
    this.#synced = Math.max(this.#synced, through);
    const still: Waiter[] = [];
    for (const w of this.#syncWaiters) {
      if (w.position <= this.#synced) this.#acknowledge(w);
      else still.push(w);
    }
    this.#syncWaiters = still;
    this.#reclaim();
  }

  #pumpFailed(e: unknown): void {
    if (this.#stopped) return;
    const error = new LsvdError(
      "unavailable",
      `Cannot write the journal in ${this.#o.files.description}: ${
        e instanceof Error ? e.message : String(e)
      }`,
      { cause: e },
    );
    this.#o.log(`${error.message}. Writes and FLUSHes fail from now on.`);
    this.fail(error);
  }

  // ---- reclaim: a segment goes once every object holding its records is durable ----------------

  /** A write (ending at journal position `position`) is in the writer: note which object covers it. */
  #applied(position: number): void {
    const sequence = this.#o.target.coveringSequence();
    const last = this.#marks.at(-1);
    if (last !== undefined && last.sequence >= sequence) {
      last.position = Math.max(last.position, position);
      return;
    }
    this.#marks.push({ position, sequence });
    this.#o.target.durable(sequence).then(() => this.#durableThrough(sequence), () => {});
  }

  #durableThrough(sequence: number): void {
    while (this.#marks.length > 0 && this.#marks[0]!.sequence <= sequence) {
      this.#durable = Math.max(this.#durable, this.#marks.shift()!.position);
    }
    this.#reclaim();
  }

  /** Deletes closed, written segments wholly durable in the store, oldest first. */
  #reclaim(): void {
    this.#reclaiming = this.#reclaiming.then(async () => {
      for (;;) {
        const s = this.#segments[0];
        if (s === undefined || s.endPosition === -1 || !s.created || this.#stopped) return;
        if ([...this.#syncs.values()].includes(s)) return; // #syncWritten reclaims again once it returns
        if (s.endPosition > this.#durable || s.endPosition > this.#written) return;
        await this.#o.files.remove(s.name);
        this.#segments.shift();
        this.#removed = s.endPosition;
        this.#wakeSpace();
      }
    }).catch((e) => this.#o.log(`Cannot delete a journal segment: ${e instanceof Error ? e.message : e}.`));
  }

  // ---- end ---------------------------------------------------------------------------------------

  /**
   * After the writer stored everything (its close() returned): deletes every segment and lets the
   * directory go. A journal whose writer failed keeps its files.
   */
  async close(): Promise<void> {
    while (this.#writing !== undefined || this.#syncs.size > 0) {
      await Promise.all([this.#writing, ...this.#syncs.keys()]);
    }
    await this.#reclaiming;
    this.#stopped = true;
    if (this.#failure === undefined && this.#o.target.failure === undefined) {
      this.#durable = this.#appended;
      for (const s of this.#segments) if (s.created) await this.#o.files.remove(s.name);
      this.#segments = [];
      this.#removed = this.#appended;
    }
    await this.#o.files.unlock();
  }

  /** Stops writing at once (a fenced or abandoned volume): the files stay for the next start. */
  stop(): void {
    this.#stopped = true;
    void this.#o.files.unlock().catch(() => {});
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
