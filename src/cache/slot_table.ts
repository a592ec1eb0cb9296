/**
 * @module
 * The disk cache's index in memory: which slot holds the sector with a given key (sequence × 2^22 +
 * offset). An open-addressing hash table of slot numbers in one Int32Array, linear probing, deletion
 * by backward shift (no tombstones, so probes never lengthen with churn). The keys are not stored
 * here: the cache's per-slot key array (`slotKeys`) holds them, and the table reads it to compare
 * and to find an entry's home bucket. So a held slot costs 4 bytes per bucket at most 2/3 load,
 * 6 bytes a slot, where a Map entry costs ~37-40 (its keys exceed V8's small integers, so each is a
 * heap number, docs/design/disk-cache.md).
 *
 * Contract with the owner: an entry (key, slot) is in the table only while slotKeys[slot] === key;
 * the owner sets slotKeys[slot] before insert() and changes it only after delete().
 */

import { assert } from "../util/assert.ts";

const EMPTY_BUCKET = 0; // buckets hold slot + 1
const TWO_32 = 4294967296;

/** Buckets for `slots` slots: at most 2/3 full, and one always empty, which ends every probe. */
function bucketsFor(slots: number): number {
  return Math.ceil(slots * 1.5) + 1;
}

/** The memory a table for `slots` slots takes. */
export function slotTableBytes(slots: number): number {
  return bucketsFor(slots) * Int32Array.BYTES_PER_ELEMENT;
}

export class SlotTable {
  #buckets: Int32Array;
  #slotKeys: Float64Array;
  #size = 0;

  constructor(slotKeys: Float64Array) {
    this.#slotKeys = slotKeys;
    this.#buckets = new Int32Array(bucketsFor(slotKeys.length));
  }

  /** Entries held. */
  get size(): number {
    return this.#size;
  }

  /** Bytes of memory the table itself takes (the keys are the owner's). */
  get memoryBytes(): number {
    return this.#buckets.byteLength;
  }

  /** The slot holding key, or -1. */
  get(key: number): number {
    const buckets = this.#buckets;
    for (let b = this.#home(key);; b = this.#next(b)) {
      const held = buckets[b]!;
      if (held === EMPTY_BUCKET) return -1;
      if (this.#slotKeys[held - 1] === key) return held - 1;
    }
  }

  /** Adds key -> slot; key must not be held and slotKeys[slot] must already be key. */
  insert(key: number, slot: number): void {
    assert(this.#slotKeys[slot] === key, "slotKeys[slot] is set before insert");
    assert(this.#size < this.#slotKeys.length, "more entries than slots");
    const buckets = this.#buckets;
    let b = this.#home(key);
    for (; buckets[b] !== EMPTY_BUCKET; b = this.#next(b)) {
      assert(this.#slotKeys[buckets[b]! - 1] !== key, "key held twice");
    }
    buckets[b] = slot + 1;
    this.#size++;
  }

  /** Removes key (while slotKeys still names it); false when it was not held. */
  delete(key: number): boolean {
    const buckets = this.#buckets;
    let hole = this.#home(key);
    for (;; hole = this.#next(hole)) {
      const held = buckets[hole]!;
      if (held === EMPTY_BUCKET) return false;
      if (this.#slotKeys[held - 1] === key) break;
    }
    // Backward shift: move later entries of the probe run into the hole when their home allows it.
    for (let b = this.#next(hole);; b = this.#next(b)) {
      const held = buckets[b]!;
      if (held === EMPTY_BUCKET) break;
      const home = this.#home(this.#slotKeys[held - 1]!);
      // The entry at b may fill the hole unless its home lies cyclically in (hole, b].
      const homeBetween = hole <= b ? hole < home && home <= b : hole < home || home <= b;
      if (homeBetween) continue;
      buckets[hole] = held;
      hole = b;
    }
    buckets[hole] = EMPTY_BUCKET;
    this.#size--;
    return true;
  }

  #next(b: number): number {
    return b + 1 === this.#buckets.length ? 0 : b + 1;
  }

  /** The bucket a key's probe starts at: a mix of its two 32-bit halves. */
  #home(key: number): number {
    const lo = key >>> 0;
    const hi = Math.floor(key / TWO_32);
    let h = Math.imul(lo, 0x9e3779b1) ^ Math.imul(hi + 0x7f4a7c15, 0x85ebca77);
    h ^= h >>> 16;
    h = Math.imul(h, 0x7feb352d);
    h ^= h >>> 15;
    return (h >>> 0) % this.#buckets.length;
  }
}
