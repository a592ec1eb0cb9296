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

import { firstBadSector, HEADER_BYTES, SECTOR_BYTES } from "../format/object.ts";
import { logKey } from "../format/keys.ts";
import { checkDataSectors } from "../log/object_reader.ts";
import { type ByteRange, type GetResult, isStoreError, type ObjectStore } from "../store/store.ts";
import { isLsvdError, LsvdError, messageOf } from "../util/errors.ts";
import type { Logger } from "../util/log.ts";
import type { CrcTableLoader } from "./crc_tables.ts";
import type { ObjectSizes } from "./object_sizes.ts";
import type { ReadCache } from "./read_cache.ts";
import { type RetryPolicy, withRetries } from "../store/retry.ts";

/** Damage reports remembered so each is logged once; beyond this the oldest is forgotten. */
const REPORTED_MAX = 1024;

interface PendingFetch {
  offsetSectors: number;
  lengthSectors: number;
  body: Promise<Uint8Array>;
}

export interface FetcherOptions {
  store: ObjectStore;
  prefix: string;
  retry: RetryPolicy;
  cache: ReadCache;
  tables: CrcTableLoader;
  sizes: ObjectSizes;
  /** False only for the benchmark's verification-off comparison: no tables, nothing checked. */
  verify: boolean;
  log: Logger;
}

export class Fetcher {
  #o: FetcherOptions;
  #pending = new Map<number, PendingFetch[]>();
  #reported = new Set<string>();
  #damaged = 0;

  constructor(options: FetcherOptions) {
    this.#o = options;
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
    // A GET of the same sectors in flight is not joined: reading them again at once costs less.
    if (o.store.readNow === undefined) return false;
    const table = o.verify ? o.tables.kept(sequence) : null;
    if (table === undefined) return false;
    const key = logKey(o.prefix, sequence);
    if (!o.store.readNow(key, HEADER_BYTES + offsetSectors * SECTOR_BYTES, dest)) return false;
    if (table !== null) {
      if (offsetSectors + dest.length / SECTOR_BYTES > table.length) return false;
      if (firstBadSector(dest, offsetSectors, table) !== -1) return false;
    }
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

  /** One attempt, then (damaged answer, table or object) one fresh attempt, then a logged failure. */
  async #fetch(sequence: number, offsetSectors: number, lengthSectors: number): Promise<Uint8Array> {
    let body: Uint8Array;
    try {
      body = await this.#attempt(sequence, offsetSectors, lengthSectors, false);
    } catch (e) {
      if (!isLsvdError(e, "data")) throw e;
      try {
        body = await this.#attempt(sequence, offsetSectors, lengthSectors, true);
      } catch (again) {
        if (isLsvdError(again, "data")) this.#report(again);
        throw again;
      }
    }
    this.#o.cache.addRange(sequence, offsetSectors, body);
    return body;
  }

  async #attempt(sequence: number, offsetSectors: number, lengthSectors: number, fresh: boolean) {
    const key = logKey(this.#o.prefix, sequence);
    const range = {
      offsetBytes: HEADER_BYTES + offsetSectors * SECTOR_BYTES,
      lengthBytes: lengthSectors * SECTOR_BYTES,
    };
    const knownSize = this.#o.sizes.get(sequence);
    const early = this.#o.verify && knownSize !== undefined
      ? this.#o.tables.table({ sequence, key, sizeBytes: knownSize }, fresh)
      : undefined;
    early?.catch(() => {}); // awaited below unless the data GET fails first
    const data = await this.#getData(key, range);
    if (knownSize === undefined) this.#o.sizes.set(sequence, data.totalSizeBytes);
    if (!this.#o.verify) return data.body;
    const table =
      await (early ?? this.#o.tables.table({ sequence, key, sizeBytes: data.totalSizeBytes }, fresh));
    if (table === null) return data.body;
    checkDataSectors(key, data.body, offsetSectors, table);
    return data.body;
  }

  async #getData(key: string, range: ByteRange): Promise<GetResult> {
    let result: GetResult;
    try {
      result = await withRetries(this.#o.retry, () => this.#o.store.get(key, range));
    } catch (e) {
      throw storeFailure(key, e);
    }
    if (result.body.length !== range.lengthBytes) {
      throw new LsvdError(
        "data",
        `Cannot read object "${key}": got ${result.body.length} of ${range.lengthBytes} bytes at ${range.offsetBytes} (truncated)`,
      );
    }
    return result;
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

/** Store failures become LsvdErrors naming the object; anything else (assertions) passes through. */
function storeFailure(key: string, e: unknown): unknown {
  if (!isStoreError(e)) return e;
  const kind = isStoreError(e, "NotFound") || isStoreError(e, "InvalidRange") ? "data" : "unavailable";
  return new LsvdError(kind, `Cannot read object "${key}": ${messageOf(e)}`, { cause: e });
}
