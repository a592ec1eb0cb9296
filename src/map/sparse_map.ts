/**
 * @module
 * The sparse half of the extent map (src/map/extent_map.ts holds the dense half): for every written range of the disk, which log object holds its newest data
 * and where inside that object's data. Kept compact because it is the engine's one structure that
 * grows with the disk: extents live in chunks of a flat Uint32Array (start, length, sequence,
 * offset -- all in 4 KiB sectors), 16 bytes per extent plus a few bytes per chunk of 256.
 * A sequentially written disk needs one extent per object (a few KiB per GiB); a disk filled with
 * random 4 KiB writes needs one per write (4 MiB per GiB).
 * Unmapped sectors read as zeros: holes, trims and write-zeroes all simply unmap.
 */

import { assert } from "../util/assert.ts";

const FIELDS = 4; // start, length, sequence, offset
const CHUNK_EXTENTS = 256;
/** Sector numbers and sequence numbers are stored as u32. */
import { SECTOR_INDEX_MAX } from "../util/constants.ts";
export { SECTOR_INDEX_MAX };

/** A mapped piece of the disk: sectors [startSector, startSector+lengthSectors) live in object
 * `sequence` at data sector `offsetSectors` (counted from the end of the header). */
export interface MappedExtent {
  startSector: number;
  lengthSectors: number;
  sequence: number;
  offsetSectors: number;
}

interface Chunk {
  data: Uint32Array;
  count: number;
}

function newChunk(): Chunk {
  return { data: new Uint32Array(CHUNK_EXTENTS * FIELDS), count: 0 };
}

export class SparseMap {
  #chunks: Chunk[] = [];
  #extents = 0;

  get extentCount(): number {
    return this.#extents;
  }

  /** Bytes held by the map's arrays (what RSS grows by, give or take the heap's slack). */
  get memoryBytes(): number {
    return this.#chunks.length * (CHUNK_EXTENTS * FIELDS * 4 + 96);
  }

  /** Maps sectors [start, start+length) to sequence at offset, replacing whatever was there. */
  set(startSector: number, lengthSectors: number, sequence: number, offsetSectors: number): void {
    if (!(sequence >= 1 && sequence <= SECTOR_INDEX_MAX)) assert(false, `sequence ${sequence} out of range`);
    assert(offsetSectors >= 0 && offsetSectors <= SECTOR_INDEX_MAX);
    const [ci, i] = this.#remove(startSector, lengthSectors);
    this.#insertAt(ci, i, startSector, lengthSectors, sequence, offsetSectors);
  }

  /** Unmaps sectors [start, start+length): they read as zeros afterwards. */
  clear(startSector: number, lengthSectors: number): void {
    this.#remove(startSector, lengthSectors);
  }

  /** Calls fn for every mapped piece inside [start, start+length), clipped, in address order. */
  lookup(startSector: number, lengthSectors: number, fn: (e: MappedExtent) => void): void {
    const end = startSector + lengthSectors;
    let [ci, i] = this.#firstEndingAfter(startSector);
    while (ci < this.#chunks.length) {
      const chunk = this.#chunks[ci]!;
      if (i >= chunk.count) {
        ci++;
        i = 0;
        continue;
      }
      const d = chunk.data, p = i * FIELDS;
      const s = d[p]!, e = s + d[p + 1]!;
      if (s >= end) return;
      const from = Math.max(s, startSector), to = Math.min(e, end);
      fn({
        startSector: from,
        lengthSectors: to - from,
        sequence: d[p + 2]!,
        offsetSectors: d[p + 3]! + from - s,
      });
      i++;
    }
  }

  /** How many extents overlap [start, start+length), counting no further than max + 1. */
  countWithin(startSector: number, lengthSectors: number, max: number): number {
    const end = startSector + lengthSectors;
    let [ci, i] = this.#firstEndingAfter(startSector);
    let n = 0;
    while (ci < this.#chunks.length && n <= max) {
      const chunk = this.#chunks[ci]!;
      if (i >= chunk.count) {
        ci++;
        i = 0;
        continue;
      }
      if (chunk.data[i * FIELDS]! >= end) break;
      n++;
      i++;
    }
    return n;
  }

  /** Every extent in address order. */
  *entries(): Generator<MappedExtent> {
    for (const chunk of this.#chunks) {
      for (let i = 0; i < chunk.count; i++) {
        const d = chunk.data, p = i * FIELDS;
        yield { startSector: d[p]!, lengthSectors: d[p + 1]!, sequence: d[p + 2]!, offsetSectors: d[p + 3]! };
      }
    }
  }

  /** The extents as runs of flat (start, length, sequence, offset) quadruples, in address order:
   *  views into the map, valid until it changes. */
  *runs(): Generator<Uint32Array> {
    for (const chunk of this.#chunks) yield chunk.data.subarray(0, chunk.count * FIELDS);
  }

  /** Rebuilds a map from flat quadruples (a checkpoint's; sorted, non-overlapping), in full chunks. */
  static fromArray(flat: Uint32Array): SparseMap {
    assert(flat.length % FIELDS === 0);
    const map = new SparseMap();
    let prevEnd = 0;
    for (let at = 0; at < flat.length; at += CHUNK_EXTENTS * FIELDS) {
      const chunk = newChunk();
      const part = flat.subarray(at, Math.min(flat.length, at + CHUNK_EXTENTS * FIELDS));
      chunk.data.set(part);
      chunk.count = part.length / FIELDS;
      for (let i = 0; i < part.length; i += FIELDS) {
        assert(
          part[i]! >= prevEnd && part[i + 1]! > 0 && part[i + 2]! >= 1,
          "checkpoint extents out of order",
        );
        prevEnd = part[i]! + part[i + 1]!;
      }
      map.#chunks.push(chunk);
      map.#extents += chunk.count;
    }
    return map;
  }

  /** Position (chunk, index) of the first extent that ends after sector. */
  #firstEndingAfter(sector: number): [number, number] {
    const chunks = this.#chunks;
    let lo = 0, hi = chunks.length - 1, ci = 0;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (chunks[mid]!.data[0]! <= sector) {
        ci = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    const chunk = chunks[ci];
    if (chunk === undefined) return [0, 0];
    const d = chunk.data;
    let a = 0, b = chunk.count - 1, last = -1;
    while (a <= b) {
      const mid = (a + b) >> 1;
      if (d[mid * FIELDS]! <= sector) {
        last = mid;
        a = mid + 1;
      } else b = mid - 1;
    }
    if (last >= 0 && d[last * FIELDS]! + d[last * FIELDS + 1]! > sector) return [ci, last];
    return [ci, last + 1];
  }

  /** Removes [start, start+length) and returns where an extent starting at start belongs. */
  #remove(startSector: number, lengthSectors: number): [number, number] {
    assert(lengthSectors > 0 && startSector + lengthSectors <= SECTOR_INDEX_MAX + 1, "range out of bounds");
    const a = startSector, b = startSector + lengthSectors;
    let [ci, i] = this.#firstEndingAfter(a);
    while (ci < this.#chunks.length) {
      const chunk = this.#chunks[ci]!;
      if (i >= chunk.count) {
        if (ci === this.#chunks.length - 1) break;
        ci++;
        i = 0;
        continue;
      }
      const d = chunk.data, p = i * FIELDS;
      const s = d[p]!, e = s + d[p + 1]!;
      if (s >= b) break;
      if (s < a) {
        d[p + 1] = a - s;
        if (e > b) {
          this.#insertAt(ci, i + 1, b, e - b, d[p + 2]!, d[p + 3]! + (b - s));
          // The insert may have split a full chunk: look the remainder's position up again. The left
          // part ends exactly at a, so the first extent ending after a is the remainder [b, e).
          return this.#firstEndingAfter(a);
        }
        i++;
      } else if (e > b) {
        d[p] = b;
        d[p + 1] = e - b;
        d[p + 3] = d[p + 3]! + (b - s);
        break;
      } else {
        d.copyWithin(p, p + FIELDS, chunk.count * FIELDS);
        chunk.count--;
        this.#extents--;
        if (chunk.count === 0) {
          this.#chunks.splice(ci, 1);
          i = 0;
          if (ci >= this.#chunks.length) {
            ci = Math.max(0, this.#chunks.length - 1);
            i = this.#chunks[ci]?.count ?? 0;
            break;
          }
        }
      }
    }
    return [ci, i];
  }

  #insertAt(ci: number, i: number, start: number, length: number, sequence: number, offset: number): void {
    if (this.#chunks.length === 0) this.#chunks.push(newChunk());
    let chunk = this.#chunks[ci]!;
    assert(chunk !== undefined && i <= chunk.count);
    if (chunk.count === CHUNK_EXTENTS) {
      const half = CHUNK_EXTENTS >> 1;
      const right = newChunk();
      right.data.set(chunk.data.subarray(half * FIELDS, CHUNK_EXTENTS * FIELDS));
      right.count = CHUNK_EXTENTS - half;
      chunk.count = half;
      this.#chunks.splice(ci + 1, 0, right);
      if (i > half) {
        chunk = right;
        i -= half;
      }
    }
    const d = chunk.data, p = i * FIELDS;
    d.copyWithin(p + FIELDS, p, chunk.count * FIELDS);
    d[p] = start;
    d[p + 1] = length;
    d[p + 2] = sequence;
    d[p + 3] = offset;
    chunk.count++;
    this.#extents++;
  }
}
