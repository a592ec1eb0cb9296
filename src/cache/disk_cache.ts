/**
 * @module
 * A persistent local disk cache of verified object data (`serve --cache-dir DIR --cache-dir-size
 * SIZE`, docs/design/disk-cache.md). DIR holds four files (cache_dir.ts names them, creates the
 * first two and checks DIR before they are opened):
 *
 *   lsvd-cache.lock   the daemon using DIR, as a lease names its holder (created exclusively; one
 *                     this machine cannot prove gone refuses)
 *   lsvd-cache.id     which volume the entries belong to (store description + prefix)
 *   lsvd-cache.data   slots × 4 KiB: one cached data sector per slot
 *   lsvd-cache.slots  slots × 16 bytes: per slot u32 sequence+1 (0 = empty), u32 sector offset in
 *                     the object, u32 CRC-32 of the object key (a clone's parents live under
 *                     other prefixes), u32 CRC-32 of the sector's bytes, big-endian
 *                     (lsvd-cache.index, the older layout without the sector CRC, is dropped)
 *
 * An entry is only ever looked up by the (object, sector) the current extent map names, and only
 * served when its bytes' CRC-32 equals the slot's own, and the slot's CRC has been found equal to the
 * object's CURRENT CRC table (the table the fetcher verifies store reads with) once in this run:
 * at the fill (bytes just verified against that table, or this run's own upload) or at the first
 * read after a start. The first catches a torn or damaged slot and a truncated file; the second an
 * entry left from an object number a rollback or takeover reused with other data (numbers are
 * reused only between runs; a follower that loads the log anew calls forgetChecks()). So a hit needs
 * the object's table only once per run, not kept in memory for as long as its sectors are cached.
 * A failing slot is dropped and the caller fetches from the store. Eviction is CLOCK over slots.
 * Memory: 28 bytes of typed arrays per slot, all allocated at open (diskCacheMemoryBytes; 7 MiB
 * per GiB of SIZE, docs/design/disk-cache.md). I/O is synchronous: a local disk answers in microseconds, like the
 * directory store's readNow (docs/design/read-path.md).
 */

import { crc32 } from "../format/crc32.ts";
import { SlotTable, slotTableBytes } from "./slot_table.ts";
import { preadFully, pwriteFully } from "../util/positional_io.ts";
import * as fs from "node:fs";
import { SECTOR_BYTES } from "../util/constants.ts";
import { assert } from "../util/assert.ts";
import { LsvdError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import {
  checkIdentity,
  checkRoom,
  DATA_FILE,
  dropOldIndex,
  ID_FILE,
  INDEX_FILE,
  LOCK_FILE,
  openPrivate,
  takeLock,
} from "./cache_dir.ts";

export const INDEX_RECORD_BYTES = 16;
/** Bytes one slot costs on disk (data + index record). */
export const SLOT_DISK_BYTES = SECTOR_BYTES + INDEX_RECORD_BYTES;
/** Kept out of SIZE for the lock and id files (each well under a sector). */
const SMALL_FILES_BYTES = 2 * SECTOR_BYTES;
/** Sector offsets in an object stay below this (keys are sequence × 2^22 + offset). */
const OFFSET_LIMIT = 2 ** 22;
const SEQUENCE_LIMIT = 2 ** 31;
/** Index records read at a time when opening (1 MiB). */
const LOAD_CHUNK_RECORDS = 65536;
const EMPTY = -1;
const ENCODER = new TextEncoder();
/** Object keys whose CRC-32 is remembered: 4,096 objects are 16 GiB of 4 MiB objects, ~0.4 MiB. */
const KEY_CRCS_MAX = 4096;

export interface DiskCacheCounters {
  hits: number;
  misses: number;
  /** Sectors written into the cache. */
  fills: number;
  evictions: number;
  /** Slots that failed their CRC check (damage, a torn fill, a reused object number) and were dropped. */
  dropped: number;
  /** Writes or reads that failed (a full disk, an I/O error); the slot is dropped. */
  ioErrors: number;
}

/** Slots a cache of sizeBytes on disk holds: data + index records + the two small files fit in it. */
function slotsFor(sizeBytes: number): number {
  return Math.floor((sizeBytes - SMALL_FILES_BYTES) / SLOT_DISK_BYTES);
}

/**
 * Bytes of typed arrays per slot, allocated at open: key f64, key CRC u32, sector CRC u32, checked
 * u8, CLOCK bit u8, free stack i32 (the slot table comes on top: slotTableBytes).
 */
const SLOT_ARRAY_BYTES = 8 + 4 + 4 + 1 + 1 + 4;

/** The memory the index of a cache of sizeBytes takes, all of it allocated at open. */
export function diskCacheMemoryBytes(sizeBytes: number): number {
  const slots = Math.max(0, slotsFor(sizeBytes));
  return slots * SLOT_ARRAY_BYTES + slotTableBytes(slots);
}

export class DiskCache {
  readonly dir: string;
  readonly slots: number;
  /**
   * The writer also keeps what it uploads here (a remote store: reading it back would be a GET). A
   * local directory store's objects are local files already, so nothing is copied for it.
   */
  readonly keepsUploads: boolean;
  #data: number; // node:fs descriptors: pread/pwrite, no seek (util/positional_io.ts)
  #index: number;
  #lockPath: string;
  #log: Logger;
  #slotKey: Float64Array; // the key (sequence × 2^22 + offset) a slot holds, EMPTY if none
  #keys: SlotTable; // key -> slot, over #slotKey
  #slotKeyCrc: Uint32Array;
  #slotCrc: Uint32Array; // CRC-32 of the slot's bytes as filled
  #checked: Uint8Array; // 1 once the slot's CRC matched its object's current table in this run
  #referenced: Uint8Array;
  #free: Int32Array; // a stack of empty slots, used before CLOCK evicts anything
  #freeCount = 0;
  #hand = 0;
  #record = new Uint8Array(INDEX_RECORD_BYTES);
  #keyCrcs = new Map<string, number>();
  #counters: DiskCacheCounters = { hits: 0, misses: 0, fills: 0, evictions: 0, dropped: 0, ioErrors: 0 };
  #closed = false;
  #damageReported = false;

  private constructor(
    dir: string,
    slots: number,
    files: { data: number; index: number; lockPath: string },
    log: Logger,
    keepsUploads: boolean,
  ) {
    this.dir = dir;
    this.keepsUploads = keepsUploads;
    this.slots = slots;
    this.#data = files.data;
    this.#index = files.index;
    this.#lockPath = files.lockPath;
    this.#log = log;
    this.#slotKey = new Float64Array(slots).fill(EMPTY);
    this.#keys = new SlotTable(this.#slotKey);
    this.#slotKeyCrc = new Uint32Array(slots);
    this.#slotCrc = new Uint32Array(slots);
    this.#checked = new Uint8Array(slots);
    this.#referenced = new Uint8Array(slots);
    this.#free = new Int32Array(slots);
  }

  /**
   * Opens (or creates) the cache in `dir` for the volume named by `identity`, keeping at most
   * `sizeBytes` on disk. Throws LsvdError "invalid" with one line when DIR is not usable, is used
   * by another live daemon, or holds another volume's cache.
   */
  static open(
    o: {
      dir: string;
      sizeBytes: number;
      identity: string;
      log: Logger;
      keepsUploads?: boolean;
    },
  ): DiskCache {
    const slots = slotsFor(o.sizeBytes);
    if (slots < 1) {
      throw new LsvdError("invalid", `Cannot use --cache-dir-size ${o.sizeBytes}: at least 16 KiB is needed`);
    }
    const where = `cache directory "${o.dir}"`;
    try {
      // The disk's data is for the daemon's user only, as the NBD socket is (0600).
      Deno.mkdirSync(o.dir, { recursive: true, mode: 0o700 });
    } catch (e) {
      const file = e instanceof Deno.errors.AlreadyExists;
      throw new LsvdError(
        "invalid",
        `Cannot use ${where}: ${file ? "it is a file, not a directory" : messageOf(e)}`,
      );
    }
    const lockPath = `${o.dir}/${LOCK_FILE}`;
    takeLock(lockPath, where);
    const fds: number[] = [];
    try {
      checkIdentity(`${o.dir}/${ID_FILE}`, o.identity, where);
      dropOldIndex(o.dir, o.log);
      checkRoom(o.dir, o.sizeBytes, where);
      const data = openPrivate(`${o.dir}/${DATA_FILE}`, fds);
      const index = openPrivate(`${o.dir}/${INDEX_FILE}`, fds);
      // A smaller SIZE than last time: the slots past the new end go (the files shrink to fit).
      if (fs.fstatSync(data).size > slots * SECTOR_BYTES) fs.ftruncateSync(data, slots * SECTOR_BYTES);
      if (fs.fstatSync(index).size > slots * INDEX_RECORD_BYTES) {
        fs.ftruncateSync(index, slots * INDEX_RECORD_BYTES);
      }
      const cache = new DiskCache(o.dir, slots, { data, index, lockPath }, o.log, o.keepsUploads ?? false);
      cache.#load();
      return cache;
    } catch (e) {
      for (const fd of fds) fs.closeSync(fd);
      Deno.removeSync(lockPath);
      if (e instanceof LsvdError) throw e;
      throw new LsvdError("invalid", `Cannot use ${where}: ${messageOf(e)}`);
    }
  }

  get counters(): Readonly<DiskCacheCounters> {
    return this.#counters;
  }

  /** Sectors held. */
  get sectors(): number {
    return this.#keys.size;
  }

  get sizeBytes(): number {
    return this.#keys.size * SECTOR_BYTES;
  }

  /**
   * Fills dest with sectors [offset, offset + dest.length/4096) of object `sequence` (key `key`)
   * when every one is held, its bytes match the slot's CRC, and the slot's CRC matches the object's
   * current CRC table: checked earlier in this run, or now against `table`. False otherwise. Every
   * held sector of the range that fails is dropped, not just the first: the store's copy the caller
   * then fetches replaces them all at once (add()), so damage or a rollback's stale entries cost one
   * GET per range, not one per sector. Without `table`, every slot must be checked already (checked()).
   */
  read(key: string, sequence: number, offsetSectors: number, dest: Uint8Array, table?: Uint32Array): boolean {
    const sectors = dest.length / SECTOR_BYTES;
    if (this.#closed || sequence >= SEQUENCE_LIMIT) return false;
    if (table !== undefined && offsetSectors + sectors > table.length) return false;
    // Nothing is read unless the whole range can be answered (a partial hit is a miss anyway).
    for (let k = 0; k < sectors; k++) {
      const slot = this.#keys.get(keyOf(sequence, offsetSectors + k));
      if (slot < 0) return false;
      if (this.#checked[slot] === 0 && table === undefined) return false; // the caller loads the table
    }
    const keyCrc = this.#keyCrc(key);
    let whole = true;
    for (let k = 0; k < sectors; k++) {
      const slot = this.#keys.get(keyOf(sequence, offsetSectors + k));
      assert(slot >= 0, "a slot found above is still held: only its own sector's drop removes it");
      const out = sectors === 1 ? dest : dest.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES);
      if (!this.#readSlot(slot, out)) {
        whole = false;
        continue;
      }
      const stale = this.#checked[slot] === 0 && table![offsetSectors + k] !== this.#slotCrc[slot];
      const damaged = crc32(out) !== this.#slotCrc[slot];
      if (damaged) this.#reportDamage();
      if (this.#slotKeyCrc[slot] !== keyCrc || damaged || stale) {
        this.#counters.dropped++;
        this.#drop(slot);
        whole = false;
        continue;
      }
      this.#checked[slot] = 1;
      this.#referenced[slot] = 1;
    }
    if (whole) this.#counters.hits++;
    return whole;
  }

  /** The store answered a read the disk cache could not (counted by the caller, once a fetch). */
  countMiss(): void {
    this.#counters.misses++;
  }

  /** True when every one of these sectors is held and checked in this run: read() needs no table. */
  checked(sequence: number, offsetSectors: number, lengthSectors: number): boolean {
    if (this.#closed || sequence >= SEQUENCE_LIMIT) return false;
    for (let k = 0; k < lengthSectors; k++) {
      const slot = this.#keys.get(keyOf(sequence, offsetSectors + k));
      if (slot < 0 || this.#checked[slot] === 0) return false;
    }
    return true;
  }

  /**
   * The log was loaded anew (a follower after a rollback): object numbers may name other bytes now,
   * so every slot is checked against its object's table again before it is served.
   */
  forgetChecks(): void {
    this.#checked.fill(0);
  }

  /** True when every one of these sectors of object `sequence` is held (not yet checked: read() checks). */
  has(sequence: number, offsetSectors: number, lengthSectors: number): boolean {
    if (this.#closed || sequence >= SEQUENCE_LIMIT) return false;
    for (let k = 0; k < lengthSectors; k++) {
      if (this.#keys.get(keyOf(sequence, offsetSectors + k)) < 0) return false;
    }
    return true;
  }

  /**
   * Keeps verified sectors of object `sequence`, evicting by CLOCK: bytes this
   * run checked against the object's current CRC table, or this run's own upload, so each slot
   * starts checked (read() then needs no table for it). `crcs` (optional) are the sectors' CRC-32s
   * from that table, in body order, saving their computation here. A sector held and checked in
   * this run is left as it is (one number names one object within a run); one held but not checked
   * (bytes of an object a rollback or takeover replaced, or damaged) is rewritten in its slot, or it
   * would fail its check at every read and cost a GET each time. Sectors that
   * land in consecutive slots (an empty cache, or CLOCK sweeping unreferenced slots) are written with
   * one data write and one index write per run, not two per sector: a whole object just uploaded
   * costs a few system calls, not thousands.
   */
  add(key: string, sequence: number, offsetSectors: number, body: Uint8Array, crcs?: Uint32Array): void {
    if (this.#closed || sequence >= SEQUENCE_LIMIT) return;
    const sectors = body.length / SECTOR_BYTES;
    assert(Number.isInteger(sectors) && offsetSectors + sectors <= OFFSET_LIMIT, "bad disk cache range");
    assert(crcs === undefined || crcs.length === sectors, "a CRC for each sector");
    const keyCrc = this.#keyCrc(key);
    // Slots are taken (and their keys set) at once, as CLOCK hands them out; the writes wait for
    // the end of a run of consecutive slots. A slot CLOCK takes back meanwhile (a cache smaller
    // than the object) ends the run first, so its later sector is written after the earlier one.
    let run: { slot: number; sector: number; count: number } | undefined;
    const flush = (): boolean => {
      if (run === undefined) return true;
      const { slot, sector, count } = run;
      run = undefined;
      const data = body.subarray(sector * SECTOR_BYTES, (sector + count) * SECTOR_BYTES);
      for (let i = 0; i < count; i++) {
        this.#slotCrc[slot + i] = crcs?.[sector + i] ??
          crc32(data.subarray(i * SECTOR_BYTES, (i + 1) * SECTOR_BYTES));
      }
      if (this.#writeRun(slot, count, data, { sequence, offset: offsetSectors + sector, keyCrc })) {
        this.#checked.fill(1, slot, slot + count);
        this.#counters.fills += count;
        return true;
      }
      for (let i = 0; i < count; i++) this.#unset(slot + i);
      return false;
    };
    for (let k = 0; k < sectors; k++) {
      const key64 = keyOf(sequence, offsetSectors + k);
      let slot = this.#keys.get(key64);
      if (slot >= 0 && this.#checked[slot] === 1) {
        if (!flush()) return;
        continue;
      }
      if (slot < 0) {
        slot = this.#victim();
        this.#slotKey[slot] = key64;
        this.#keys.insert(key64, slot);
      }
      this.#slotKeyCrc[slot] = keyCrc;
      if (run !== undefined && slot === run.slot + run.count && k === run.sector + run.count) {
        run.count++;
        continue;
      }
      if (!flush()) {
        this.#unset(slot);
        return;
      }
      run = { slot, sector: k, count: 1 };
    }
    flush();
  }

  /** A slot taken for a write that did not happen: empty again (its record may be torn). */
  #unset(slot: number): void {
    const key = this.#slotKey[slot]!;
    if (this.#keys.get(key) === slot) this.#keys.delete(key);
    this.#slotKey[slot] = EMPTY;
    this.#checked[slot] = 0;
    this.#free[this.#freeCount++] = slot;
  }

  /** Closes the files and removes the lock; the entries stay for the next start. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    fs.closeSync(this.#data);
    fs.closeSync(this.#index);
    try {
      Deno.removeSync(this.#lockPath);
    } catch {
      // Already gone: nothing to release.
    }
  }

  /**
   * Rebuilds the in-memory index from the index file (a later record for a key wins), reading it a
   * chunk at a time: the whole file at once was 16 bytes a slot more at the start's peak (256 MiB
   * for a 64 GiB cache) on top of the index itself.
   */
  #load(): void {
    const dataSlots = Math.floor(fs.fstatSync(this.#data).size / SECTOR_BYTES);
    const chunk = new Uint8Array(LOAD_CHUNK_RECORDS * INDEX_RECORD_BYTES);
    const view = new DataView(chunk.buffer);
    for (let first = 0; first < Math.min(this.slots, dataSlots); first += LOAD_CHUNK_RECORDS) {
      const want = Math.min(LOAD_CHUNK_RECORDS, this.slots - first) * INDEX_RECORD_BYTES;
      const got = preadFully(this.#index, first * INDEX_RECORD_BYTES, chunk.subarray(0, want));
      const records = Math.min(Math.floor(got / INDEX_RECORD_BYTES), dataSlots - first);
      for (let i = 0; i < records; i++) this.#loadRecord(first + i, view, i * INDEX_RECORD_BYTES);
      if (got < want) break;
    }
    for (let slot = this.slots - 1; slot >= 0; slot--) {
      if (this.#slotKey[slot] === EMPTY) this.#free[this.#freeCount++] = slot;
    }
    if (this.#keys.size > 0) {
      this.#log(`Disk cache "${this.dir}": ${this.#keys.size} sectors kept from the last run.`);
    }
  }

  #loadRecord(slot: number, view: DataView, at: number): void {
    const sequence = view.getUint32(at) - 1;
    const offset = view.getUint32(at + 4);
    if (sequence < 0 || sequence >= SEQUENCE_LIMIT || offset >= OFFSET_LIMIT) return;
    const key = keyOf(sequence, offset);
    const old = this.#keys.get(key);
    if (old >= 0) {
      this.#keys.delete(key);
      this.#slotKey[old] = EMPTY;
    }
    this.#slotKey[slot] = key;
    this.#keys.insert(key, slot);
    this.#slotKeyCrc[slot] = view.getUint32(at + 8);
    this.#slotCrc[slot] = view.getUint32(at + 12);
  }

  /** A slot to fill: an empty one or the first unreferenced one the hand finds (CLOCK). */
  #victim(): number {
    if (this.#freeCount > 0) return this.#free[--this.#freeCount]!;
    for (let step = 0; step <= 2 * this.slots; step++) {
      const slot = this.#hand;
      this.#hand = (this.#hand + 1) % this.slots;
      if (this.#slotKey[slot] === EMPTY) return slot;
      if (this.#referenced[slot] === 1) {
        this.#referenced[slot] = 0;
        continue;
      }
      this.#counters.evictions++;
      this.#drop(slot, false);
      return slot;
    }
    throw new Error("unreachable: CLOCK found no slot in two turns");
  }

  /**
   * Forgets a slot's entry; `reuse` (a bad slot) also clears its index record, so the next start
   * does not load it again, and puts it on the free stack (an eviction refills it at once).
   */
  #drop(slot: number, reuse = true): void {
    const key = this.#slotKey[slot]!;
    if (key === EMPTY) return;
    this.#keys.delete(key);
    this.#slotKey[slot] = EMPTY;
    this.#referenced[slot] = 0;
    this.#checked[slot] = 0;
    if (!reuse) return;
    this.#free[this.#freeCount++] = slot;
    try {
      pwriteFully(this.#index, slot * INDEX_RECORD_BYTES, new Uint8Array(INDEX_RECORD_BYTES));
    } catch (e) {
      this.#ioError("write", e); // the record stays: it fails its check again next time
    }
  }

  #readSlot(slot: number, out: Uint8Array): boolean {
    try {
      if (preadFully(this.#data, slot * SECTOR_BYTES, out) === out.length) return true;
      this.#counters.dropped++; // the file was truncated under the entry
      this.#reportDamage();
    } catch (e) {
      this.#ioError("read", e);
    }
    this.#drop(slot);
    return false;
  }

  /**
   * Data first, then the index records (slots `first`.. `first + count - 1`, sectors `at.offset`..,
   * their CRCs already in #slotCrc): a crash between them leaves records whose CRC check fails.
   */
  #writeRun(
    first: number,
    count: number,
    data: Uint8Array,
    at: { sequence: number; offset: number; keyCrc: number },
  ): boolean {
    const records = count === 1 ? this.#record : new Uint8Array(count * INDEX_RECORD_BYTES);
    const view = new DataView(records.buffer, records.byteOffset, records.byteLength);
    for (let i = 0; i < count; i++) {
      view.setUint32(i * INDEX_RECORD_BYTES, at.sequence + 1);
      view.setUint32(i * INDEX_RECORD_BYTES + 4, at.offset + i);
      view.setUint32(i * INDEX_RECORD_BYTES + 8, at.keyCrc);
      view.setUint32(i * INDEX_RECORD_BYTES + 12, this.#slotCrc[first + i]!);
    }
    try {
      pwriteFully(this.#data, first * SECTOR_BYTES, data);
      pwriteFully(this.#index, first * INDEX_RECORD_BYTES, records);
      return true;
    } catch (e) {
      this.#ioError("write", e); // the caller empties the slots
      return false;
    }
  }

  /**
   * The CRC-32 of an object key, as index records carry it: remembered, since every hit needs it
   * and encoding the key and hashing it cost a hit ~6 % of the thread (bench/RESULTS.md). Bounded:
   * forgotten all at once past KEY_CRCS_MAX keys.
   */
  #keyCrc(key: string): number {
    let crc = this.#keyCrcs.get(key);
    if (crc === undefined) {
      if (this.#keyCrcs.size >= KEY_CRCS_MAX) this.#keyCrcs.clear();
      crc = crc32(ENCODER.encode(key));
      this.#keyCrcs.set(key, crc);
    }
    return crc;
  }

  /**
   * Once a run: bytes that fail their own CRC are the cache disk's fault (or a crash's), worth a line;
   * a stale entry (a rollback's) or a clone's parent entry is not damage and is only counted.
   */
  #reportDamage(): void {
    if (this.#damageReported) return;
    this.#damageReported = true;
    this.#log(
      `Disk cache "${this.dir}": a sector did not match the CRC it was kept with (damaged on disk, or torn ` +
        "by a crash); dropped and read from the store (lsvd_disk_cache_dropped_total counts them).",
    );
  }

  #ioError(action: string, e: unknown): void {
    if (this.#counters.ioErrors++ === 0) {
      this.#log(`Disk cache "${this.dir}": cannot ${action}: ${messageOf(e)} (the store serves instead).`);
    }
  }
}

function keyOf(sequence: number, offsetSectors: number): number {
  return sequence * OFFSET_LIMIT + offsetSectors;
}
