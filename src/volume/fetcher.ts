/**
 * @module
 * Ranged GETs of object data, verified and shared. Every range fetched is checked against the
 * object's per-sector CRC table (fetched with a suffix GET in parallel with the object's first data
 * GET, then kept in a bounded LRU) before it enters the read cache or a reply, so damaged bytes are
 * never served (docs/design/integrity.md). Anything wrong with the bytes is retried once with fresh
 * GETs of both data and table, then fails the read with LsvdError "data" and one log line naming the
 * object and byte range. Objects without a table (older lsvd, other writers) are served unverified.
 * A read that needs sectors a GET in flight already covers (typically a read-ahead) waits for it
 * instead of asking the store twice.
 */

import { firstBadSector, SECTOR_BYTES, type SectorCrcs, sectorOffsetBytes } from "../format/object.ts";
import { type CrcSource, type CrcTable, readVerified } from "../log/verified_read.ts";
import { openSectors } from "../crypto/object_cipher.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";
import type { ObjectStore } from "../store/store.ts";
import { isLsvdError, type LsvdError } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import type { CrcTableLoader } from "./crc_tables.ts";
import type { ObjectSizes } from "./object_sizes.ts";
import type { ReadCache } from "./read_cache.ts";
import type { DiskCache } from "../cache/disk_cache.ts";

/** Damage reports remembered so each is logged once; beyond this the oldest is forgotten. */
const REPORTED_MAX = 1024;

interface PendingFetch {
  offsetSectors: number;
  lengthSectors: number;
  body: Promise<Uint8Array>;
}

export interface FetcherOptions {
  /** Retried (a RetryingStore, or a LineageStore over them): a GET waits out an outage. */
  store: ObjectStore;
  /** The key of a log object (a clone's parents' objects live under their prefixes: src/log/parent.ts). */
  keyOf: (sequence: number) => string;
  cache: ReadCache;
  tables: CrcTableLoader;
  sizes: ObjectSizes;
  /** False only for the benchmark's verification-off comparison: no tables, nothing checked. */
  verify: boolean;
  log: Logger;
  /** `serve --cache-dir`: verified data is kept there and served from there, behind the read cache. */
  disk?: DiskCache;
  /**
   * An encrypted volume's data keys, by object (a clone's ancestors' objects have their own:
   * src/log/volume_encryption.ts lineageCiphers): every range is decrypted and authenticated after
   * its CRCs pass (the disk cache keeps it as stored, encrypted); `verify` is then taken as true.
   */
  cipherFor?: (sequence: number) => SectorCipher;
}

export class Fetcher {
  #o: FetcherOptions;
  #pending = new Map<number, PendingFetch[]>();
  #reported = new Set<string>();
  #damaged = 0;

  constructor(options: FetcherOptions) {
    // An encrypted volume's reads are always verified: the tags come with the CRC tables.
    this.#o = options.cipherFor === undefined ? options : { ...options, verify: true };
  }

  /** Number of GETs in flight (read-ahead uses it to stay bounded). */
  get inFlight(): number {
    let n = 0;
    for (const list of this.#pending.values()) n += list.length;
    return n;
  }

  /** Tables fetched, and ranges that failed their check twice. */
  get counters(): Readonly<{ tableGets: number; damaged: number }> {
    return { tableGets: this.#o.tables.gets, damaged: this.#damaged };
  }

  /**
   * The same sectors as get(), read into dest (whole sectors), verified the same way and cached,
   * at once when the store can (ObjectStore.readNow) and the object's CRC table is kept. False
   * otherwise, dest then holding anything: call get(). A range that fails its check also gets
   * false, so get() gives it the fresh retry and the report.
   */
  readNow(sequence: number, offsetSectors: number, dest: Uint8Array): boolean {
    const o = this.#o;
    if (o.store.readNow !== undefined && this.#storeNow(sequence, offsetSectors, dest)) return true;
    return o.disk !== undefined && this.#diskNow(o.disk, sequence, offsetSectors, dest);
  }

  /**
   * True when readNow() can answer these sectors from the disk cache (held there, and checked in
   * this run or the object's table kept): a read-ahead then leaves them where they are instead of
   * copying them into memory early.
   */
  heldLocally(sequence: number, offsetSectors: number, lengthSectors: number): boolean {
    const disk = this.#o.disk;
    if (disk === undefined || !this.#o.verify) return false;
    if (this.#tableless(disk, sequence, offsetSectors, lengthSectors)) return true;
    const table = this.#o.tables.kept(sequence);
    return table !== undefined && table !== null && disk.has(sequence, offsetSectors, lengthSectors);
  }

  /**
   * True when the disk cache can answer without the object's CRC table: every sector checked against
   * it earlier in this run (DiskCache.checked) and no decryption, whose GCM tags come with the table.
   */
  #tableless(disk: DiskCache, sequence: number, offsetSectors: number, lengthSectors: number): boolean {
    return this.#o.cipherFor === undefined && disk.checked(sequence, offsetSectors, lengthSectors);
  }

  /** The disk cache's answer when its sectors need no table or the object's table is kept (else get() loads it). */
  #diskNow(disk: DiskCache, sequence: number, offsetSectors: number, dest: Uint8Array): boolean {
    if (!this.#o.verify) return false;
    const object = { sequence, key: this.#o.keyOf(sequence) };
    if (this.#tableless(disk, sequence, offsetSectors, dest.length / SECTOR_BYTES)) {
      return this.#diskInto(disk, object, offsetSectors, dest, undefined);
    }
    const table = this.#o.tables.kept(sequence);
    if (table === undefined || table === null) return false;
    return this.#diskInto(disk, object, offsetSectors, dest, table);
  }

  /**
   * Fills dest from the disk cache (checked against `table`, or without it when every sector was
   * checked in this run), decrypts it on an encrypted volume, keeps it in the memory cache; false
   * when the disk cache cannot answer.
   */
  #diskInto(
    disk: DiskCache,
    object: { sequence: number; key: string },
    offsetSectors: number,
    dest: Uint8Array,
    table: SectorCrcs | undefined,
  ): boolean {
    if (!disk.read(object.key, object.sequence, offsetSectors, dest, table)) return false;
    if (table !== undefined && !this.#openInto(object.sequence, object.key, offsetSectors, table, dest)) {
      return false;
    }
    this.#o.cache.addRange(object.sequence, offsetSectors, dest);
    return true;
  }

  #storeNow(sequence: number, offsetSectors: number, dest: Uint8Array): boolean {
    const o = this.#o;
    // A GET of the same sectors in flight is not joined: reading them again at once costs less.
    if (o.store.readNow === undefined) return false;
    const table = o.verify ? o.tables.kept(sequence) : null;
    if (table === undefined) return false;
    const key = o.keyOf(sequence);
    if (!o.store.readNow(key, sectorOffsetBytes(offsetSectors), dest)) return false;
    if (table !== null) {
      if (offsetSectors + dest.length / SECTOR_BYTES > table.length) return false;
      if (firstBadSector(dest, offsetSectors, table) !== -1) return false;
    }
    if (!this.#openInto(sequence, key, offsetSectors, table, dest)) return false;
    // Not added to the read cache: a store that answers at once is backed by the OS page cache,
    // which already holds these bytes; a second copy would cost memory and ~10% of a miss's CPU.
    return true;
  }

  /** Data sectors [offset, offset+length) of object `sequence`, verified. */
  async get(sequence: number, offsetSectors: number, lengthSectors: number): Promise<Uint8Array> {
    const covering = this.#pending.get(sequence)?.find((p) =>
      p.offsetSectors <= offsetSectors && p.offsetSectors + p.lengthSectors >= offsetSectors + lengthSectors
    );
    if (covering !== undefined) {
      try {
        const body = await covering.body;
        const from = (offsetSectors - covering.offsetSectors) * SECTOR_BYTES;
        return body.subarray(from, from + lengthSectors * SECTOR_BYTES);
      } catch (e) {
        // Damage elsewhere in the covering range must not fail these sectors: fetch just them.
        if (!isLsvdError(e, "data")) throw e;
      }
    }
    const pending: PendingFetch = {
      offsetSectors,
      lengthSectors,
      body: this.#fetch(sequence, offsetSectors, lengthSectors),
    };
    const list = this.#pending.get(sequence) ?? [];
    list.push(pending);
    this.#pending.set(sequence, list);
    try {
      return await pending.body;
    } finally {
      const left = this.#pending.get(sequence)!.filter((p) => p !== pending);
      if (left.length === 0) this.#pending.delete(sequence);
      else this.#pending.set(sequence, left);
    }
  }

  /** A verified read (one fresh retry inside), cached; a final "data" failure is reported. */
  async #fetch(sequence: number, offsetSectors: number, lengthSectors: number): Promise<Uint8Array> {
    const o = this.#o;
    const key = o.keyOf(sequence);
    let checkedWith: Uint32Array | null = null; // the table the data passed (kept for the disk cache)
    const crcs: CrcSource | null = o.verify
      ? {
        table: async (
          fresh,
          sizeBytes,
        ) => (checkedWith = await o.tables.table({ sequence, key, sizeBytes }, fresh)),
      }
      : null;
    const knownSize = o.sizes.get(sequence);
    if (o.disk !== undefined && crcs !== null && knownSize !== undefined) {
      const body = await this.#fromDisk(
        o.disk,
        { sequence, key, sizeBytes: knownSize },
        offsetSectors,
        lengthSectors,
      );
      if (body !== undefined) return body;
    }
    o.disk?.countMiss();
    let data;
    try {
      data = await readVerified(o.store, {
        key,
        sequence,
        range: { offsetSectors, lengthSectors },
        sizeBytes: knownSize,
        crcs,
        cipher: o.cipherFor?.(sequence),
        keepSealed: o.disk !== undefined,
      });
    } catch (e) {
      if (isLsvdError(e, "data")) this.#report(e);
      throw e;
    }
    if (knownSize === undefined) o.sizes.set(sequence, data.sizeBytes);
    o.cache.addRange(sequence, offsetSectors, data.body);
    // Only sectors checked against their object's table: the disk cache serves nothing unverified.
    if (o.disk !== undefined && checkedWith !== null) {
      const crcs = (checkedWith as Uint32Array).subarray(offsetSectors, offsetSectors + lengthSectors);
      o.disk.add(key, sequence, offsetSectors, data.sealed ?? data.body, crcs);
    }
    return data.body;
  }

  /**
   * The range from the disk cache, checked against the object's table (loaded if not kept and the
   * sectors were not checked in this run), or undefined.
   */
  async #fromDisk(
    disk: DiskCache,
    object: { sequence: number; key: string; sizeBytes: number },
    offsetSectors: number,
    lengthSectors: number,
  ): Promise<Uint8Array | undefined> {
    const body = new Uint8Array(lengthSectors * SECTOR_BYTES);
    if (this.#tableless(disk, object.sequence, offsetSectors, lengthSectors)) {
      return this.#diskInto(disk, object, offsetSectors, body, undefined) ? body : undefined;
    }
    let table;
    try {
      table = await this.#o.tables.table(object, false);
    } catch {
      return undefined; // the store's own read below reports what is wrong
    }
    if (table === null) return undefined;
    return this.#diskInto(disk, object, offsetSectors, body, table) ? body : undefined;
  }

  /**
   * An encrypted volume: decrypts `data` (checked sectors of object `key`) in place. False when it
   * does not authenticate: the caller then reads through get(), whose retry and report name it.
   */
  #openInto(
    sequence: number,
    key: string,
    offsetSectors: number,
    table: CrcTable,
    data: Uint8Array,
  ): boolean {
    const cipher = this.#o.cipherFor?.(sequence);
    if (cipher === undefined) return table?.seal === undefined; // sealed bytes never go out as data
    try {
      openSectors(cipher, { key, offsetSectors, table }, data, data);
      return true;
    } catch (e) {
      if (isLsvdError(e, "data")) return false;
      throw e;
    }
  }

  #report(e: LsvdError): void {
    this.#damaged++;
    if (this.#reported.has(e.message)) return;
    if (this.#reported.size >= REPORTED_MAX) this.#reported.delete(this.#reported.values().next().value!);
    this.#reported.add(e.message);
    this.#o.log(
      `${e.message} (read failed with EIO after one retry; 'lsvd verify' lists every damaged object).`,
    );
  }
}
