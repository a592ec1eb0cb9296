/**
 * @module
 * The reading half of `lsvd export`: ranged GETs of planned reads (src/log/read_plan.ts), each
 * checked for length and, piece by piece, against the object's per-sector CRC table, and a gate
 * that bounds how many run at once.
 */

import { logKey } from "../format/keys.ts";
import { SECTOR_BYTES, sectorOffsetBytes } from "../format/object.ts";
import type { LogState } from "../log/log_state.ts";
import type { Lineage } from "../log/parent.ts";
import type { PlannedGet } from "../log/read_plan.ts";
import { type CrcSource, readVerified } from "../log/verified_read.ts";
import type { ObjectStore } from "../store/store.ts";
import { assert } from "../util/assert.ts";
import { CrcTableLoader, CrcTables } from "../volume/crc_tables.ts";
import type { CipherFor } from "../log/volume_encryption.ts";

/** Table bytes an export keeps (a 4 MiB object's table is 4 KiB: the tables of 16 GiB of objects). */
const EXPORT_TABLE_BYTES = 16 * 1024 * 1024;

/**
 * Planned reads through the one verified read (src/log/verified_read.ts): each piece checked
 * against the object's sector CRCs as the daemon's reads are, one fresh retry, then a "data"
 * error naming the bytes. A GET that reads an object's data to its end takes the trailer along,
 * so the CRC table costs no second request.
 */
export class ObjectReader {
  #store: ObjectStore;
  #keyOf: (sequence: number) => string;
  #parentsThrough: number;
  #sizes = new Map<number, number>();
  #tables: CrcTableLoader;
  #tableCache: CrcTables;

  /**
   * An encrypted volume's data keys by object (set before the first read; a clone's ancestors'
   * objects have their own: src/log/volume_encryption.ts lineageCiphers): pieces are decrypted too.
   */
  cipherFor: CipherFor | undefined;

  /** `lineage`: where a clone's parents' objects live, with their sizes (src/log/parent.ts). */
  constructor(store: ObjectStore, state: LogState, lineage?: Lineage) {
    this.#store = store;
    this.#parentsThrough = lineage?.through ?? 0;
    this.#keyOf = (sequence) => lineage?.keyOf(sequence) ?? logKey(state.prefix, sequence);
    for (const o of state.objects) this.#sizes.set(o.sequence, o.sizeBytes);
    for (const [sequence, size] of lineage?.sizes ?? []) this.#sizes.set(sequence, size);
    this.#tableCache = new CrcTables(EXPORT_TABLE_BYTES);
    this.#tables = new CrcTableLoader({ store, tables: this.#tableCache });
  }

  async read(get: PlannedGet): Promise<Uint8Array> {
    const { sequence } = get;
    const key = this.#keyOf(sequence);
    const sizeBytes = this.#sizes.get(sequence);
    // A clone loaded from its own checkpoint did not list its parents: their sizes come with the GET.
    const parents = this.#parentsThrough;
    assert(
      sizeBytes !== undefined || sequence <= parents,
      "the map reads an object the listing did not show",
    );
    const offsetSectors = (get.offsetBytes - sectorOffsetBytes(0)) / SECTOR_BYTES;
    assert(Number.isInteger(offsetSectors) && get.lengthBytes % SECTOR_BYTES === 0, "a GET of whole sectors");
    const crcs: CrcSource = {
      table: (fresh, size) => this.#tables.table({ sequence, key, sizeBytes: size }, fresh),
      kept: () => this.#tableCache.get(sequence),
      keep: (table) => this.#tableCache.set(sequence, table),
    };
    const data = await readVerified(this.#store, {
      key,
      sequence,
      range: { offsetSectors, lengthSectors: get.lengthBytes / SECTOR_BYTES },
      sizeBytes,
      crcs,
      checked: get.pieces.map((p) => ({
        offsetSectors: offsetSectors + p.bodyOffsetBytes / SECTOR_BYTES,
        lengthSectors: p.lengthSectors,
      })),
      trailerAlong: true,
      cipher: this.cipherFor?.(sequence),
    });
    return data.body;
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
