/**
 * @module
 * Which prefix holds a log object of a clone. A clone (docs/FORMAT.md "Clones") numbers its own
 * objects from `through + 1` of its parent link, so one extent map over the parent's state and
 * the clone's writes stays unambiguous: every number up to `through` is the parent's (or, further
 * down a chain, an ancestor's), every number above it the clone's. A `Lineage` is that rule as
 * bands -- `[{prefix, through}]` ascending, then the volume's own prefix -- read from the format
 * records up the chain (one small GET per ancestor), so resolving a key costs no request.
 * A parent may live in another bucket of the same store (`lsvd clone --to-bucket`): its band then
 * names that bucket's store, and `readStore()` routes reads of its objects there.
 */

import { logKey } from "../format/keys.ts";
import type { ObjectStore } from "../store/store.ts";
import { LsvdError } from "../util/errors.ts";
import type { ExtentMap } from "../map/extent_map.ts";
import { SECTOR_BYTES } from "../format/object.ts";
import { type FormatRecord, type ParentLink, readFormatRecord } from "./format_record.ts";
import { type Band, LineageStore } from "./lineage_store.ts";

/** Object keys Lineage.keyOf remembers: 4,096 objects are 16 GiB of 4 MiB objects, ~0.5 MiB of strings. */
const KEYS_REMEMBERED = 4096;

export type { Band };

/** Chains deeper than this are refused (a loop of links would otherwise never end). */
export const CHAIN_DEPTH_MAX = 64;

export class Lineage {
  readonly own: string;
  /** Ancestors' bands, ascending by `through`; empty for a volume that is not a clone. */
  readonly bands: readonly Band[];
  /** Sizes of ancestors' objects when a listing showed them (reads then fetch tables early). */
  readonly sizes = new Map<number, number>();
  #keys = new Map<number, string>();

  constructor(own: string, bands: readonly Band[] = []) {
    this.own = own;
    this.bands = bands;
  }

  /** The top of the ancestors' numbers: objects above it are the volume's own (0: no parent). */
  get through(): number {
    return this.bands.at(-1)?.through ?? 0;
  }

  /**
   * The key of log object `sequence`, under whichever volume of the chain wrote it. Remembered (up to
   * KEYS_REMEMBERED, then forgotten all at once): every read beyond the memory cache asks it, and
   * formatting the 16 hex digits was 7 % of a disk-cache hit's allocations (bench/RESULTS.md).
   */
  keyOf(sequence: number): string {
    let key = this.#keys.get(sequence);
    if (key === undefined) {
      key = logKey(this.bands.find((b) => sequence <= b.through)?.prefix ?? this.own, sequence);
      if (this.#keys.size >= KEYS_REMEMBERED) this.#keys.clear();
      this.#keys.set(sequence, key);
    }
    return key;
  }

  /**
   * The store to read the chain's objects through: `own` itself, unless an ancestor lives in
   * another bucket; then a store that sends reads of that ancestor's objects to its bucket. Each
   * ancestor's bucket is asked of `own` (its inBucket), so reads of it retry as own's do (the
   * stores the bands were found through may retry with another policy).
   */
  readStore(own: ObjectStore): ObjectStore {
    const bands = this.bands.map((b) => ({ ...b, store: sameStoreAs(own, b.store) }));
    return bands.every((b) => b.store === own) ? own : new LineageStore(own, bands);
  }

  /** Bytes of the map's data still read from ancestors' objects. */
  bytesFromAncestors(map: ExtentMap): number {
    if (this.bands.length === 0) return 0;
    let sectors = 0;
    for (const [sequence, live] of map.liveObjects()) if (sequence <= this.through) sectors += live;
    return sectors * SECTOR_BYTES;
  }
}

/** The link a clone still reads through (undefined once flattened, or for a plain volume). */
export function activeLink(format: FormatRecord | undefined): ParentLink | undefined {
  const link = format?.parent;
  return link === undefined || link.flattenedThrough !== undefined ? undefined : link;
}

/** The oldest point a volume has: a clone's branch, or its flatten point; 0 for a plain volume. */
export function pointFloor(format: FormatRecord | undefined): number {
  const link = format?.parent;
  if (link === undefined) return 0;
  return link.flattenedThrough ?? link.through;
}

/** `found`'s bucket as a store of `own`: own itself for its own bucket, own.inBucket() for another. */
function sameStoreAs(own: ObjectStore, found: ObjectStore): ObjectStore {
  // Bands hold the store readLineage() was given or one of its inBucket() stores (bucketStore()).
  if (found.bucket === own.bucket) return own;
  return found.bucket === undefined ? found : own.inBucket?.(found.bucket) ?? found;
}

/** The store holding `bucket` (undefined: the same bucket as `store`); one line when it cannot. */
export function bucketStore(store: ObjectStore, bucket: string | undefined, what: string): ObjectStore {
  if (bucket === undefined || bucket === store.bucket) return store;
  if (store.inBucket === undefined) {
    throw new LsvdError(
      "invalid",
      `Cannot ${what}: it is in bucket "${bucket}", and ${store.description} has no other buckets`,
    );
  }
  return store.inBucket(bucket);
}

/** The bands of a volume whose format record is `format`: one format-record GET per ancestor. */
export async function readLineage(
  store: ObjectStore,
  prefix: string,
  format: FormatRecord | undefined,
): Promise<Lineage> {
  const bands: Band[] = [];
  let link = activeLink(format);
  let at = store;
  while (link !== undefined) {
    if (bands.length >= CHAIN_DEPTH_MAX) {
      throw new LsvdError(
        "data",
        `Cannot open the clone under "${prefix}": its chain of parents is too deep`,
      );
    }
    // A link without a bucket names the bucket of the record that holds it.
    at = bucketStore(at, link.bucket, `open the clone under "${prefix}": its parent`);
    const parent = link.prefix, parentStore = at;
    const record = await readFormatRecord(parentStore, parent);
    if (record === undefined) {
      throw new LsvdError(
        "data",
        `Cannot open the clone under "${prefix}": its parent under "${parent}" is gone (it was not flattened first)`,
      );
    }
    bands.unshift({ prefix: link.prefix, through: link.through, store: at, format: record });
    link = activeLink(record);
  }
  for (let i = 1; i < bands.length; i++) {
    if (bands[i]!.through <= bands[i - 1]!.through) {
      throw new LsvdError(
        "data",
        `Cannot open the clone under "${prefix}": its chain of parents is malformed`,
      );
    }
  }
  return new Lineage(prefix, bands);
}
