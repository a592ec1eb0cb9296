/**
 * @module
 * Ranged GETs of object data, shared: a read that needs sectors a GET in flight already covers
 * (typically a read-ahead) waits for it instead of asking the store twice. Every fetched range
 * goes into the read cache.
 */

import { HEADER_BYTES, SECTOR_BYTES } from "../format/object.ts";
import { logKey } from "../format/keys.ts";
import type { ObjectStore } from "../store/store.ts";
import { LsvdError, messageOf } from "../util/errors.ts";
import { isStoreError } from "../store/store.ts";
import type { ReadCache } from "./read_cache.ts";
import { type RetryPolicy, withRetries } from "./retry.ts";

interface PendingFetch {
  offsetSectors: number;
  lengthSectors: number;
  body: Promise<Uint8Array>;
}

export class Fetcher {
  #store: ObjectStore;
  #prefix: string;
  #retry: RetryPolicy;
  #cache: ReadCache;
  #pending = new Map<number, PendingFetch[]>();

  constructor(options: { store: ObjectStore; prefix: string; retry: RetryPolicy; cache: ReadCache }) {
    this.#store = options.store;
    this.#prefix = options.prefix;
    this.#retry = options.retry;
    this.#cache = options.cache;
  }

  /** Number of GETs in flight (read-ahead uses it to stay bounded). */
  get inFlight(): number {
    let n = 0;
    for (const list of this.#pending.values()) n += list.length;
    return n;
  }

  /** Data sectors [offset, offset+length) of object `sequence`. */
  async get(sequence: number, offsetSectors: number, lengthSectors: number): Promise<Uint8Array> {
    const covering = this.#pending.get(sequence)?.find((p) =>
      p.offsetSectors <= offsetSectors && p.offsetSectors + p.lengthSectors >= offsetSectors + lengthSectors
    );
    if (covering !== undefined) {
      const body = await covering.body;
      const from = (offsetSectors - covering.offsetSectors) * SECTOR_BYTES;
      return body.subarray(from, from + lengthSectors * SECTOR_BYTES);
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

  async #fetch(sequence: number, offsetSectors: number, lengthSectors: number): Promise<Uint8Array> {
    const key = logKey(this.#prefix, sequence);
    const lengthBytes = lengthSectors * SECTOR_BYTES;
    let body: Uint8Array;
    try {
      ({ body } = await withRetries(
        this.#retry,
        () => this.#store.get(key, { offsetBytes: HEADER_BYTES + offsetSectors * SECTOR_BYTES, lengthBytes }),
      ));
    } catch (e) {
      const kind = isStoreError(e, "NotFound") || isStoreError(e, "InvalidRange") ? "data" : "unavailable";
      throw new LsvdError(kind, `Cannot read object "${key}": ${messageOf(e)}`, { cause: e });
    }
    if (body.length !== lengthBytes) {
      throw new LsvdError(
        "data",
        `Cannot read object "${key}": got ${body.length} of ${lengthBytes} bytes (truncated)`,
      );
    }
    this.#cache.addRange(sequence, offsetSectors, body);
    return body;
  }
}
