/**
 * @module
 * Reads of a clone whose parent lives in another bucket of the same store (`lsvd clone
 * --to-bucket`). The engine reads log objects by key through one store; this store sends a read of
 * an ancestor's object to the bucket that ancestor is in and everything else to the volume's own
 * store. The rule is the lineage's (src/log/parent.ts): an object numbered in a band's range under
 * the band's prefix is that ancestor's, so a key names one object even when two buckets use the
 * same prefix (their numbers never overlap along a chain). Writes, listings and deletes only ever
 * concern the volume's own keys and go to its own store.
 */

import { parseLogKey } from "../format/keys.ts";
import type {
  ByteRange,
  GetResult,
  HeadResult,
  ListOptions,
  ListPage,
  ObjectStore,
  PutOptions,
  PutResult,
} from "../store/store.ts";
import type { FormatRecord } from "./format_record.ts";

/**
 * Objects numbered up to `through` (above the previous band's) live under `prefix` of `store`
 * (a lineage's bands: src/log/parent.ts).
 */
export interface Band {
  prefix: string;
  through: number;
  store: ObjectStore;
  /** The ancestor's format record (an encrypted one's salt gives its own data key). */
  format?: FormatRecord;
}

export class LineageStore implements ObjectStore {
  readonly description: string;
  readonly #own: ObjectStore;
  readonly #bands: readonly Band[];

  constructor(own: ObjectStore, bands: readonly Band[]) {
    this.#own = own;
    this.#bands = bands;
    this.description = own.description;
  }

  /** The store that holds `key`: an ancestor's for its objects, the volume's own otherwise. */
  storeOf(key: string): ObjectStore {
    let below = 0;
    for (const b of this.#bands) {
      const sequence = parseLogKey(b.prefix, key);
      if (sequence !== undefined && sequence > below && sequence <= b.through) return b.store;
      below = b.through;
    }
    return this.#own;
  }

  get(key: string, range?: ByteRange): Promise<GetResult> {
    return this.storeOf(key).get(key, range);
  }

  head(key: string): Promise<HeadResult> {
    return this.storeOf(key).head(key);
  }

  readNow(key: string, offsetBytes: number, dest: Uint8Array): boolean {
    return this.storeOf(key).readNow?.(key, offsetBytes, dest) ?? false;
  }

  put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult> {
    return this.#own.put(key, body, options);
  }

  list(options: ListOptions): Promise<ListPage> {
    return this.#own.list(options);
  }

  delete(key: string): Promise<void> {
    return this.#own.delete(key);
  }

  copy(sourceKey: string, destinationKey: string, options?: PutOptions): Promise<void> {
    return this.#own.copy(sourceKey, destinationKey, options);
  }

  /** The stores are their owners' to close (an ancestor's bucket closes with the volume's store). */
  close(): Promise<void> {
    return Promise.resolve();
  }
}
