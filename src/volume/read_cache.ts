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

export class ReadCache {
  #bytesMax: number;
  #slotsMax: number;
  #slabs: Uint8Array[] = [];
  /**
   * object -> (sector -> slot). Two levels rather than one key per (object, sector): both keys stay
   * small integers, which V8 hashes without boxing a number per lookup.
   */
  #objects = new Map<number, Map<number, number>>();
  /** slot -> the object and sector it holds. */
  #slotSequence: Uint32Array;
  #slotSector: Uint32Array;
  /** slot -> read since the hand last passed it. */
  #referenced: Uint8Array;
  /** Slots handed out so far; they fill in order before the hand starts reusing them. */
  #used = 0;
  #hand = 0;

  constructor(bytesMax: number) {
    assert(Number.isSafeInteger(bytesMax) && bytesMax >= 0, "bad cache budget");
    this.#bytesMax = bytesMax;
    this.#slotsMax = Math.floor(bytesMax / SECTOR_BYTES);
    this.#slotSequence = new Uint32Array(this.#slotsMax);
    this.#slotSector = new Uint32Array(this.#slotsMax);
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
    for (let k = 0; k < sectors; k++) {
      const sector = offsetSectors + k;
      if (this.#objects.get(sequence)?.has(sector)) continue; // the same bytes: objects never change
      const slot = this.#claim(); // may evict: look the object's sectors up again after it
      this.#slot(slot).set(data.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES));
      let sectorsOfObject = this.#objects.get(sequence);
      if (sectorsOfObject === undefined) this.#objects.set(sequence, sectorsOfObject = new Map());
      sectorsOfObject.set(sector, slot);
      this.#slotSequence[slot] = sequence;
      this.#slotSector[slot] = sector;
      this.#referenced[slot] = 0;
    }
  }

  /** True when every one of these sectors is cached (not marked as read). */
  has(sequence: number, offsetSectors: number, lengthSectors: number): boolean {
    const sectorsOfObject = this.#objects.get(sequence);
    if (sectorsOfObject === undefined) return false;
    for (let k = 0; k < lengthSectors; k++) {
      if (!sectorsOfObject.has(offsetSectors + k)) return false;
    }
    return true;
  }

  /** Copies the sectors into dest and returns true when all are cached; dest is untouched otherwise. */
  read(sequence: number, offsetSectors: number, lengthSectors: number, dest: Uint8Array): boolean {
    if (!this.has(sequence, offsetSectors, lengthSectors)) return false;
    const sectorsOfObject = this.#objects.get(sequence)!;
    for (let k = 0; k < lengthSectors; k++) {
      const slot = sectorsOfObject.get(offsetSectors + k)!;
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
      const sequence = this.#slotSequence[slot]!;
      const sectorsOfObject = this.#objects.get(sequence)!;
      sectorsOfObject.delete(this.#slotSector[slot]!);
      if (sectorsOfObject.size === 0) this.#objects.delete(sequence);
      return slot;
    }
  }

  #slot(slot: number): Uint8Array {
    const at = (slot % SLOTS_PER_SLAB) * SECTOR_BYTES;
    return this.#slabs[Math.floor(slot / SLOTS_PER_SLAB)]!.subarray(at, at + SECTOR_BYTES);
  }
}
