/**
 * @module
 * Keeps recently uploaded objects and recently fetched ranges in memory, bounded by bytes, so
 * reading back what was just written or read again costs no request. Objects in the log never
 * change once written, so entries never go stale; least recently used objects go first.
 */

import { HEADER_BYTES, SECTOR_BYTES } from "../format/object.ts";

const RANGES_PER_OBJECT_MAX = 256;

interface CachedRange {
  offsetSectors: number;
  data: Uint8Array;
}

export class ReadCache {
  #bytesMax: number;
  #bytes = 0;
  #objects = new Map<number, CachedRange[]>(); // insertion order = recency

  constructor(bytesMax: number) {
    this.#bytesMax = bytesMax;
  }

  get sizeBytes(): number {
    return this.#bytes;
  }

  /** A whole uploaded object (header, data, trailer): its data section is kept. */
  addObject(sequence: number, objectBytes: Uint8Array): void {
    const dataBytes = objectBytes.subarray(HEADER_BYTES);
    this.addRange(sequence, 0, dataBytes.subarray(0, dataBytes.length - (dataBytes.length % SECTOR_BYTES)));
  }

  addRange(sequence: number, offsetSectors: number, data: Uint8Array): void {
    if (data.length === 0 || data.length > this.#bytesMax / 4) return;
    const ranges = this.#touch(sequence) ?? [];
    ranges.push({ offsetSectors, data });
    this.#bytes += data.length;
    if (ranges.length > RANGES_PER_OBJECT_MAX) this.#bytes -= ranges.shift()!.data.length;
    this.#objects.set(sequence, ranges);
    this.#evict();
  }

  /** True when one cached range holds all of these sectors (no recency update). */
  has(sequence: number, offsetSectors: number, lengthSectors: number): boolean {
    return this.#find(sequence, offsetSectors, lengthSectors) !== undefined;
  }

  /** Copies the sectors into dest and returns true when one cached range holds all of them. */
  read(sequence: number, offsetSectors: number, lengthSectors: number, dest: Uint8Array): boolean {
    const found = this.#find(sequence, offsetSectors, lengthSectors);
    if (found === undefined) return false;
    dest.set(found);
    this.#touch(sequence);
    return true;
  }

  #find(sequence: number, offsetSectors: number, lengthSectors: number): Uint8Array | undefined {
    const ranges = this.#objects.get(sequence);
    if (ranges === undefined) return undefined;
    for (let i = ranges.length - 1; i >= 0; i--) {
      const r = ranges[i]!;
      const from = (offsetSectors - r.offsetSectors) * SECTOR_BYTES;
      const to = from + lengthSectors * SECTOR_BYTES;
      if (from >= 0 && to <= r.data.length) return r.data.subarray(from, to);
    }
    return undefined;
  }

  #touch(sequence: number): CachedRange[] | undefined {
    const ranges = this.#objects.get(sequence);
    if (ranges !== undefined) {
      this.#objects.delete(sequence);
      this.#objects.set(sequence, ranges);
    }
    return ranges;
  }

  #evict(): void {
    for (const [sequence, ranges] of this.#objects) {
      if (this.#bytes <= this.#bytesMax) return;
      for (const r of ranges) this.#bytes -= r.data.length;
      this.#objects.delete(sequence);
    }
  }
}
