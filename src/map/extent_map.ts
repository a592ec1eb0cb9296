/**
 * @module
 * The extent map: for every written sector, which log object holds its newest data and where in
 * that object's data. It is the engine's one structure that grows with the disk, so it picks a
 * representation per 1 MiB region (256 sectors):
 *
 * - sparse (SparseMap, 16 bytes per extent): right for sequential writes, one extent per object,
 *   a few KiB per GiB;
 * - dense, once a region holds more than 96 extents: an object number (u32) and an offset (u16) per
 *   sector, 6 bytes per sector = 1.5 KiB per region = 1.5 MiB per GiB however fragmented.
 *
 * Invariant: the sparse map holds no extent inside a dense region. Unmapped sectors (object 0 in a
 * dense region) read as zeros: holes, trims and write-zeroes all simply unmap.
 *
 * The map also counts, per log object, how many sectors it maps to that object (live sectors):
 * garbage collection reads how much of an object is still needed from these counts instead of
 * scanning the map (src/log/gc.ts).
 */

import { assert } from "../util/assert.ts";
import { type MappedExtent, SECTOR_INDEX_MAX, SparseMap } from "./sparse_map.ts";

export { type MappedExtent, SECTOR_INDEX_MAX };

const REGION_SECTORS = 256;
/** Above this many extents a region is cheaper dense (96 × 16 bytes ~ 256 × 6 bytes). */
const DENSE_AFTER_EXTENTS = 96;
const OFFSET_MAX = 0xffff;
const DENSE_REGION_BYTES = REGION_SECTORS * 6 + 160;

interface Dense {
  seq: Uint32Array;
  off: Uint16Array;
}

export class ExtentMap {
  #sparse = new SparseMap();
  #dense = new Map<number, Dense>();
  #denseKeys: number[] = []; // region indexes of dense regions, ascending
  #live = new Map<number, number>(); // sequence -> sectors mapped to it

  get extentCount(): number {
    let n = this.#sparse.extentCount;
    for (const k of this.#denseKeys) {
      this.#denseRuns(k, k * REGION_SECTORS, (k + 1) * REGION_SECTORS, () => void n++);
    }
    return n;
  }

  /** Bytes held by the map's arrays (what RSS grows by, give or take the heap's slack). */
  get memoryBytes(): number {
    return this.#sparse.memoryBytes + this.#dense.size * DENSE_REGION_BYTES + this.#denseKeys.length * 8;
  }

  /** Regions held densely (for tests and stats). */
  get denseRegions(): number {
    return this.#dense.size;
  }

  /** Sectors the map points at object `sequence` (0 when none). */
  liveSectors(sequence: number): number {
    return this.#live.get(sequence) ?? 0;
  }

  /** Every object the map points at, with its live sectors (unordered). */
  liveObjects(): IterableIterator<[number, number]> {
    return this.#live.entries();
  }

  /** Maps sectors [start, start+length) to sequence at offset, replacing whatever was there. */
  set(startSector: number, lengthSectors: number, sequence: number, offsetSectors: number): void {
    if (!(sequence >= 1 && sequence <= SECTOR_INDEX_MAX)) assert(false, `sequence ${sequence} out of range`);
    this.#uncount(startSector, lengthSectors);
    this.#live.set(sequence, (this.#live.get(sequence) ?? 0) + lengthSectors);
    this.#split(
      startSector,
      lengthSectors,
      (a, n) => this.#sparse.set(a, n, sequence, offsetSectors + a - startSector),
      (k, from, to) => {
        const last = offsetSectors + (to - 1 - startSector);
        if (last > OFFSET_MAX) {
          this.#toSparse(k); // an offset a dense region cannot hold (objects over 256 MiB)
          this.#sparse.set(from, to - from, sequence, offsetSectors + from - startSector);
          return false;
        }
        const d = this.#dense.get(k)!, base = k * REGION_SECTORS;
        d.seq.fill(sequence, from - base, to - base);
        for (let s = from; s < to; s++) d.off[s - base] = offsetSectors + s - startSector;
        return true;
      },
    );
    if (lengthSectors < REGION_SECTORS) this.#maybeDensify(startSector, lengthSectors);
  }

  /** Unmaps sectors [start, start+length): they read as zeros afterwards. */
  clear(startSector: number, lengthSectors: number): void {
    this.#uncount(startSector, lengthSectors);
    this.#split(startSector, lengthSectors, (a, n) => this.#sparse.clear(a, n), (k, from, to) => {
      const base = k * REGION_SECTORS;
      this.#dense.get(k)!.seq.fill(0, from - base, to - base);
      return true;
    });
  }

  /** Calls fn for every mapped piece inside [start, start+length), clipped, in address order;
   *  fn returning false stops the walk. */
  lookup(startSector: number, lengthSectors: number, fn: (e: MappedExtent) => boolean | void): void {
    let stopped = false;
    const each = (e: MappedExtent) => {
      if (fn(e) === false) stopped = true;
      return !stopped;
    };
    this.#split(startSector, lengthSectors, (a, n) => {
      if (!stopped) this.#sparse.lookup(a, n, each);
    }, (k, from, to) => {
      if (!stopped) this.#denseRuns(k, from, to, each);
      return true;
    });
  }

  /** Every extent in address order. */
  *entries(): Generator<MappedExtent> {
    const all: MappedExtent[] = [];
    this.lookup(0, SECTOR_INDEX_MAX + 1, (e) => void all.push(e));
    yield* all;
  }

  /** The extents as runs of flat (start, length, sequence, offset) quadruples in address order: the
   *  sparse map's chunks as views (valid until the map changes) and a small array per dense region. */
  *runs(): Generator<Uint32Array> {
    const keys = this.#denseKeys;
    let j = 0;
    for (const chunk of this.#sparse.runs()) {
      let pos = 0;
      while (j < keys.length) {
        const regionStart = keys[j]! * REGION_SECTORS;
        const at = firstStartAtOrAfter(chunk, pos, regionStart);
        if (at >= chunk.length) break; // this region comes after the whole chunk
        if (at > pos) yield chunk.subarray(pos, at);
        yield this.#denseQuads(keys[j++]!);
        pos = at;
      }
      if (pos < chunk.length) yield chunk.subarray(pos);
    }
    while (j < keys.length) yield this.#denseQuads(keys[j++]!);
  }

  /** Rebuilds a map from flat quadruples (a checkpoint's; sorted, non-overlapping). */
  static fromArray(flat: Uint32Array): ExtentMap {
    const map = new ExtentMap();
    map.#sparse = SparseMap.fromArray(flat);
    const perRegion = new Map<number, number>();
    for (let i = 0; i < flat.length; i += 4) {
      const r = Math.floor(flat[i]! / REGION_SECTORS);
      perRegion.set(r, (perRegion.get(r) ?? 0) + 1);
    }
    for (const [r, n] of perRegion) if (n > DENSE_AFTER_EXTENTS) map.#densify(r);
    for (let i = 0; i < flat.length; i += 4) {
      map.#live.set(flat[i + 2]!, (map.#live.get(flat[i + 2]!) ?? 0) + flat[i + 1]!);
    }
    return map;
  }

  /** Takes the sectors about to be replaced or unmapped off their objects' live counts. */
  #uncount(startSector: number, lengthSectors: number): void {
    this.lookup(startSector, lengthSectors, (e) => {
      const left = this.#live.get(e.sequence)! - e.lengthSectors;
      if (left === 0) this.#live.delete(e.sequence);
      else this.#live.set(e.sequence, left);
    });
  }

  /**
   * Walks [start, start+length) in address order, handing maximal runs outside dense regions to
   * sparse(a, n) and the part inside each dense region k to dense(k, from, to); dense returns false
   * when it turned region k back to sparse.
   */
  #split(
    startSector: number,
    lengthSectors: number,
    sparse: (a: number, n: number) => void,
    dense: (k: number, from: number, to: number) => boolean,
  ): void {
    const end = startSector + lengthSectors;
    const keys = this.#denseKeys;
    let i = lowerBound(keys, Math.floor(startSector / REGION_SECTORS));
    let a = startSector;
    while (a < end) {
      const k = keys[i];
      const regionStart = k === undefined ? Infinity : k * REGION_SECTORS;
      if (regionStart > a) {
        const gapEnd = Math.min(end, regionStart);
        sparse(a, gapEnd - a);
        a = gapEnd;
        continue;
      }
      const to = Math.min(end, regionStart + REGION_SECTORS);
      if (dense(k!, a, to)) i++;
      a = to;
    }
  }

  #denseRuns(k: number, from: number, to: number, fn: (e: MappedExtent) => boolean | void): boolean {
    const d = this.#dense.get(k)!, base = k * REGION_SECTORS;
    let s = from;
    while (s < to) {
      const seq = d.seq[s - base]!;
      if (seq === 0) {
        s++;
        continue;
      }
      let e = s + 1;
      while (e < to && d.seq[e - base] === seq && d.off[e - base] === d.off[e - 1 - base]! + 1) e++;
      if (
        fn({ startSector: s, lengthSectors: e - s, sequence: seq, offsetSectors: d.off[s - base]! }) === false
      ) {
        return false;
      }
      s = e;
    }
    return true;
  }

  #denseQuads(k: number): Uint32Array {
    const quads: number[] = [];
    this.#denseRuns(k, k * REGION_SECTORS, (k + 1) * REGION_SECTORS, (e) => {
      quads.push(e.startSector, e.lengthSectors, e.sequence, e.offsetSectors);
    });
    return Uint32Array.from(quads);
  }

  /** Regions touched by a small write turn dense once they hold many extents. */
  #maybeDensify(startSector: number, lengthSectors: number): void {
    const first = Math.floor(startSector / REGION_SECTORS);
    const last = Math.floor((startSector + lengthSectors - 1) / REGION_SECTORS);
    for (let r = first; r <= last; r++) {
      if (this.#dense.has(r)) continue;
      if (
        this.#sparse.countWithin(r * REGION_SECTORS, REGION_SECTORS, DENSE_AFTER_EXTENTS) >
          DENSE_AFTER_EXTENTS
      ) {
        this.#densify(r);
      }
    }
  }

  #densify(r: number): void {
    const base = r * REGION_SECTORS;
    const d: Dense = { seq: new Uint32Array(REGION_SECTORS), off: new Uint16Array(REGION_SECTORS) };
    let fits = true;
    this.#sparse.lookup(base, REGION_SECTORS, (e) => {
      if (e.offsetSectors + e.lengthSectors - 1 > OFFSET_MAX) return (fits = false);
      for (let k = 0; k < e.lengthSectors; k++) {
        d.seq[e.startSector - base + k] = e.sequence;
        d.off[e.startSector - base + k] = e.offsetSectors + k;
      }
    });
    if (!fits) return;
    this.#sparse.clear(base, REGION_SECTORS);
    this.#dense.set(r, d);
    this.#denseKeys.splice(lowerBound(this.#denseKeys, r), 0, r);
  }

  #toSparse(k: number): void {
    const runs: MappedExtent[] = [];
    this.#denseRuns(k, k * REGION_SECTORS, (k + 1) * REGION_SECTORS, (e) => void runs.push(e));
    this.#dense.delete(k);
    this.#denseKeys.splice(lowerBound(this.#denseKeys, k), 1);
    for (const e of runs) this.#sparse.set(e.startSector, e.lengthSectors, e.sequence, e.offsetSectors);
  }
}

/** Index of the first element >= value in an ascending array. */
function lowerBound(sorted: number[], value: number): number {
  let lo = 0, hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (sorted[mid]! < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index (a multiple of 4) of the first quadruple at or after pos whose start is >= sector. */
function firstStartAtOrAfter(quads: Uint32Array, pos: number, sector: number): number {
  let lo = pos / 4, hi = quads.length / 4;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (quads[mid * 4]! < sector) lo = mid + 1;
    else hi = mid;
  }
  return lo * 4;
}
