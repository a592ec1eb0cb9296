/**
 * @module
 * Per-sector CRC tables of log objects, kept for verifying reads (docs/design/integrity.md). A
 * table costs 4 bytes per 4 KiB sector (1/1024 of the data it checks) and one suffix GET to fetch,
 * so the most recently used ones are kept, bounded by bytes that count toward the cache limit.
 * Objects that carry no table (older lsvd, other writers) are remembered as such for the same cost
 * as a tiny table, so they are not asked for again.
 */

import { readSectorCrcs } from "../log/object_reader.ts";
import { ENCRYPTED_TRAILER_GUESS_BYTES } from "../format/object.ts";
import type { CrcTable } from "../log/verified_read.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { assert } from "../util/assert.ts";
import { LsvdError, messageOf } from "../util/errors.ts";

/** What a table entry costs beyond its CRCs (Map entry, typed-array object): an estimate. */
export const TABLE_OVERHEAD_BYTES = 96;

export type { CrcTable };

export class CrcTables {
  #bytesMax: number;
  #bytes = 0;
  #tables = new Map<number, CrcTable>(); // insertion order = recency

  constructor(bytesMax: number) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 0, "bad table budget");
    this.#bytesMax = bytesMax;
  }

  get sizeBytes(): number {
    return this.#bytes;
  }

  get count(): number {
    return this.#tables.size;
  }

  /** The table of object `sequence` (marked recently used), or undefined when not kept. */
  get(sequence: number): CrcTable | undefined {
    const table = this.#tables.get(sequence);
    if (table === undefined) return undefined;
    this.#tables.delete(sequence);
    this.#tables.set(sequence, table);
    return table;
  }

  /** Keeps a table (replacing any kept one), evicting the least recently used beyond the budget. */
  set(sequence: number, table: CrcTable): void {
    this.delete(sequence);
    const cost = costOf(table);
    if (cost > this.#bytesMax) return;
    this.#tables.set(sequence, table);
    this.#bytes += cost;
    for (const [s, t] of this.#tables) {
      if (this.#bytes <= this.#bytesMax) break;
      this.#tables.delete(s);
      this.#bytes -= costOf(t);
    }
    assert(this.#bytes <= this.#bytesMax && this.#bytes >= 0, "table budget exceeded");
  }

  delete(sequence: number): void {
    const old = this.#tables.get(sequence);
    if (old === undefined) return;
    this.#tables.delete(sequence);
    this.#bytes -= costOf(old);
  }
}

/**
 * Gets tables through the LRU: a kept one, one already being fetched (shared), or a suffix GET
 * now. `fresh` skips both, for the one retry after a mismatch (the kept table may be the damaged part).
 */
export class CrcTableLoader {
  #store: ObjectStore;
  #tables: CrcTables;
  #loads = new Map<number, Promise<CrcTable>>();
  #gets = 0;
  #guessBytes: number | undefined;

  constructor(options: { store: ObjectStore; tables: CrcTables }) {
    this.#store = options.store;
    this.#tables = options.tables;
  }

  /** Tables fetched from the store. */
  get gets(): number {
    return this.#gets;
  }

  /** The kept table of object `sequence` (marked recently used), or undefined: call table(). */
  kept(sequence: number): CrcTable | undefined {
    return this.#tables.get(sequence);
  }

  table(o: { sequence: number; key: string; sizeBytes: number }, fresh: boolean): Promise<CrcTable> {
    if (!fresh) {
      const kept = this.#tables.get(o.sequence);
      if (kept !== undefined) return Promise.resolve(kept);
      const loading = this.#loads.get(o.sequence);
      if (loading !== undefined) return loading;
    }
    this.#gets++;
    const load = readSectorCrcs(this.#store, o, this.#guessBytes).then(
      (found) => {
        // An encrypted volume's trailers are longer (tags): later suffix GETs take them whole at once.
        if (found?.seal !== undefined) this.#guessBytes = ENCRYPTED_TRAILER_GUESS_BYTES;
        const table = found ?? null;
        this.#tables.set(o.sequence, table);
        return table;
      },
      (e) => {
        if (!isStoreError(e)) throw e;
        throw new LsvdError("unavailable", `Cannot read object "${o.key}": ${messageOf(e)}`, { cause: e });
      },
    );
    this.#loads.set(o.sequence, load);
    const forget = () => {
      if (this.#loads.get(o.sequence) === load) this.#loads.delete(o.sequence);
    };
    load.then(forget, forget);
    return load;
  }
}

function costOf(table: CrcTable): number {
  return TABLE_OVERHEAD_BYTES + (table?.byteLength ?? 0) + (table?.seal?.tags.byteLength ?? 0);
}
