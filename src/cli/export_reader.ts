/**
 * @module
 * The reading half of `lsvd export`: ranged GETs of planned reads (src/log/read_plan.ts), each
 * checked for length and, piece by piece, against the object's per-sector CRC table, and a gate
 * that bounds how many run at once.
 */

import { logKey } from "../format/keys.ts";
import {
  claimedTrailerBytes,
  decodeTrailer,
  FormatError,
  HEADER_BYTES,
  type Trailer,
  TRAILER_GUESS_BYTES,
} from "../format/object.ts";
import type { LogState } from "../log/log_state.ts";
import { checkDataSectors } from "../log/object_reader.ts";
import type { PlannedGet } from "../log/read_plan.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { assert } from "../util/assert.ts";
import { SECTOR_BYTES } from "../util/constants.ts";
import { isLsvdError, LsvdError } from "../util/errors.ts";
import { type CrcTable, CrcTableLoader, CrcTables } from "../volume/crc_tables.ts";
import { type RetryPolicy, withRetries } from "../store/retry.ts";
/** Table bytes an export keeps (a 4 MiB object's table is 4 KiB: the tables of 16 GiB of objects). */
const EXPORT_TABLE_BYTES = 16 * 1024 * 1024;

/**
 * Ranged GETs of planned reads, checked for length and, piece by piece, against the object's
 * sector CRCs (as the daemon's reads are: one fresh retry, then a "data" error naming the bytes),
 * with the object's key in every error.
 */
export class ObjectReader {
  #store: ObjectStore;
  #prefix: string;
  #retry: RetryPolicy;
  #sizes = new Map<number, number>();
  #tables: CrcTableLoader;
  #tableCache: CrcTables;

  constructor(store: ObjectStore, state: LogState, retry: RetryPolicy) {
    this.#store = store;
    this.#prefix = state.prefix;
    this.#retry = retry;
    for (const o of state.objects) this.#sizes.set(o.sequence, o.sizeBytes);
    this.#tableCache = new CrcTables(EXPORT_TABLE_BYTES);
    this.#tables = new CrcTableLoader({ store, retry, tables: this.#tableCache });
  }

  async read(get: PlannedGet): Promise<Uint8Array> {
    try {
      return await this.#attempt(get, false);
    } catch (e) {
      if (!isLsvdError(e, "data")) throw e;
      return await this.#attempt(get, true);
    }
  }

  async #attempt(get: PlannedGet, fresh: boolean): Promise<Uint8Array> {
    const key = logKey(this.#prefix, get.sequence);
    const sizeBytes = this.#sizes.get(get.sequence);
    assert(sizeBytes !== undefined, "the map reads an object the listing did not show");
    const [body, table] = (!fresh && await this.#withTrailer(key, get, sizeBytes)) ||
      await Promise.all([
        this.#get(key, get),
        this.#tables.table({ sequence: get.sequence, key, sizeBytes }, fresh),
      ]);
    if (table === null) return body; // no CRCs (older lsvd, other writers): exported as stored
    for (const p of get.pieces) {
      const at = get.offsetBytes - HEADER_BYTES + p.bodyOffsetBytes;
      const piece = body.subarray(p.bodyOffsetBytes, p.bodyOffsetBytes + p.lengthSectors * SECTOR_BYTES);
      checkDataSectors(key, piece, at / SECTOR_BYTES, table);
    }
    return body;
  }

  /**
   * A GET that ends within TRAILER_GUESS_BYTES of the object's end (reading all of an object's
   * data, the usual case) is stretched to the end: its tail is the trailer, so the object's CRC
   * table comes with the data instead of costing a second request. Undefined when the table is
   * already known, the GET ends elsewhere, or the tail holds no well-formed trailer of this object
   * (then the loader decides, as for any other read).
   */
  async #withTrailer(
    key: string,
    get: PlannedGet,
    sizeBytes: number,
  ): Promise<[Uint8Array, CrcTable] | undefined> {
    const end = get.offsetBytes + get.lengthBytes;
    if (sizeBytes <= end || sizeBytes - end > TRAILER_GUESS_BYTES) return undefined;
    if (this.#tableCache.get(get.sequence) !== undefined) return undefined;
    const whole = await this.#get(key, { ...get, lengthBytes: sizeBytes - get.offsetBytes });
    const tail = whole.subarray(get.lengthBytes);
    const claimed = tail.length >= 8 ? claimedTrailerBytes(tail) : 0;
    if (claimed < 8 || claimed > tail.length) return undefined;
    let trailer: Trailer;
    try {
      trailer = decodeTrailer(tail.subarray(tail.length - claimed));
    } catch (e) {
      if (e instanceof FormatError) return undefined;
      throw e;
    }
    if (trailer.sequence !== get.sequence) return undefined;
    const table = trailer.sectorCrcs ?? null;
    this.#tableCache.set(get.sequence, table);
    return [whole.subarray(0, get.lengthBytes), table];
  }

  async #get(key: string, get: PlannedGet): Promise<Uint8Array> {
    const range = { offsetBytes: get.offsetBytes, lengthBytes: get.lengthBytes };
    let body: Uint8Array;
    try {
      body = (await withRetries(this.#retry, () => this.#store.get(key, range))).body;
    } catch (e) {
      if (isStoreError(e, "NotFound") || isStoreError(e, "InvalidRange")) {
        throw new LsvdError("data", `Cannot read object "${key}": ${(e as Error).message}`, { cause: e });
      }
      throw e;
    }
    if (body.length !== get.lengthBytes) {
      throw new LsvdError(
        "data",
        `Cannot read object "${key}": got ${body.length} of ${get.lengthBytes} bytes at ${get.offsetBytes} (truncated)`,
      );
    }
    return body;
  }
}

/** At most `limit` tasks at once, first come first served. */
export class Gate {
  #free: number;
  #waiting: (() => void)[] = [];

  constructor(limit: number) {
    this.#free = limit;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      if (next !== undefined) next();
      else this.#free++;
    }
  }
}
