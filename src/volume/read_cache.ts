/**
 * @module
 * Keeps recently uploaded and recently fetched sectors in memory, bounded by bytes, so reading
 * back what was just written or read again costs no request. Objects in the log never change once
 * written, so entries never go stale.
 *
 * Sectors live in fixed slots of a few large buffers, found through one Map keyed by (object,
 * sector) and reused in CLOCK order: the hand passes over slots read since it last came by (a
 * second chance) and reuses the first one that was not. Adding copies into a slot, so no buffer is
 * allocated per read and none is left for the garbage collector when it leaves: with a 4 KiB buffer
 * per cached range, random 4 KiB reads beyond the cache spent ~12% of the daemon's time in V8's
 * collector and up to 256 range comparisons per lookup (docs/design/read-path.md).
 */

import { HEADER_BYTES, SECTOR_BYTES } from "../format/object.ts";
import { assert } from "../util/assert.ts";

/** Slots are allocated in buffers of this size as the cache fills (the last one may be smaller). */
const SLAB_BYTES = 1024 * 1024;
const SLOTS_PER_SLAB = SLAB_BYTES / SECTOR_BYTES;
/** Key = sequence × this + sector: sequences are u32, so keys stay below 2^53 (exact doubles). */
const SECTORS_PER_OBJECT_MAX = 2 ** 21;

export class ReadCache {
  #bytesMax: number;
  #slotsMax: number;
  #slabs: Uint8Array[] = [];
  /** key → slot. */
  #index = new Map<number, number>();
  /** slot → key of the sector it holds. */
  #keys: Float64Array;
  /** slot → read since the hand last passed it. */
  #referenced: Uint8Array;
  /** Slots handed out so far; they fill in order before the hand starts reusing them. */
  #used = 0;
  #hand = 0;

  constructor(bytesMax: number) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 0, "bad cache budget");
    this.#bytesMax = bytesMax;
    this.#slotsMax = Math.floor(bytesMax / SECTOR_BYTES);
    this.#keys = new Float64Array(this.#slotsMax);
    this.#referenced = new Uint8Array(this.#slotsMax);
  }

  /** Bytes of sector slots allocated (what the cache holds in memory). */
  get sizeBytes(): number {
    return Math.min(this.#slabs.length * SLAB_BYTES, this.#slotsMax * SECTOR_BYTES);
  }

  /** A whole uploaded object (header, data, trailer): its data section is kept. */
  addObject(sequence: number, objectBytes: Uint8Array): void {
    const dataBytes = objectBytes.subarray(HEADER_BYTES);
    this.addRange(sequence, 0, dataBytes.subarray(0, dataBytes.length - (dataBytes.length % SECTOR_BYTES)));
  }

  /** Copies whole sectors in; data stays the caller's. A range over a quarter of the cache is skipped. */
  addRange(sequence: number, offsetSectors: number, data: Uint8Array): void {
    const sectors = data.length / SECTOR_BYTES;
    assert(Number.isInteger(sectors), "cached data must be whole sectors");
    if (sectors === 0 || data.length > this.#bytesMax / 4) return;
    if (offsetSectors + sectors > SECTORS_PER_OBJECT_MAX) return; // a foreign object over 8 GiB
    const base = sequence * SECTORS_PER_OBJECT_MAX + offsetSectors;
    for (let k = 0; k < sectors; k++) {
      const key = base + k;
      if (this.#index.has(key)) continue; // the same bytes: objects never change
      const slot = this.#claim();
      this.#slot(slot).set(data.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES));
      this.#index.set(key, slot);
      this.#keys[slot] = key;
      this.#referenced[slot] = 0;
    }
  }

  /** True when every one of these sectors is cached (not marked as read). */
  has(sequence: number, offsetSectors: number, lengthSectors: number): boolean {
    if (offsetSectors + lengthSectors > SECTORS_PER_OBJECT_MAX) return false;
    const base = sequence * SECTORS_PER_OBJECT_MAX + offsetSectors;
    for (let k = 0; k < lengthSectors; k++) {
      if (!this.#index.has(base + k)) return false;
    }
    return true;
  }

  /** Copies the sectors into dest and returns true when all are cached; dest is untouched otherwise. */
  read(sequence: number, offsetSectors: number, lengthSectors: number, dest: Uint8Array): boolean {
    if (!this.has(sequence, offsetSectors, lengthSectors)) return false;
    const base = sequence * SECTORS_PER_OBJECT_MAX + offsetSectors;
    for (let k = 0; k < lengthSectors; k++) {
      const slot = this.#index.get(base + k)!;
      this.#referenced[slot] = 1;
      dest.set(this.#slot(slot), k * SECTOR_BYTES);
    }
    return true;
  }

  /** A free slot, or the first one the hand finds unread since its last pass (evicted). */
  #claim(): number {
    if (this.#used < this.#slotsMax) {
      if (this.#used % SLOTS_PER_SLAB === 0) {
        const slots = Math.min(SLOTS_PER_SLAB, this.#slotsMax - this.#used);
        this.#slabs.push(new Uint8Array(slots * SECTOR_BYTES));
      }
      return this.#used++;
    }
    for (;;) {
      const slot = this.#hand;
      this.#hand = slot + 1 === this.#slotsMax ? 0 : slot + 1;
      if (this.#referenced[slot] === 1) {
        this.#referenced[slot] = 0;
        continue;
      }
      this.#index.delete(this.#keys[slot]!);
      return slot;
    }
  }

  #slot(slot: number): Uint8Array {
    const at = (slot % SLOTS_PER_SLAB) * SECTOR_BYTES;
    return this.#slabs[Math.floor(slot / SLOTS_PER_SLAB)]!.subarray(at, at + SECTOR_BYTES);
  }
}
