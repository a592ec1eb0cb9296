/**
 * @module
 * The object being filled: writes land here first and are flattened sector by sector, so an
 * overwritten sector costs nothing twice and adjacent sectors become one header entry when the
 * object is sealed. Data lives in one preallocated staging buffer (one slot per distinct sector),
 * so the write path allocates nothing per request. Trims and write-zeroes become zero ranges.
 * Each sector's CRC-32 is taken as its data arrives (beside its slot), so sealing copies the
 * sectors into address order and writes the trailer without reading the data again, and the
 * trailer's checksums cover the data from the moment lsvd received it.
 *
 * A nearly full object is built in a body buffer of the largest object's size, and the writer hands
 * such bodies back once they are stored (`recycle`): up to SPARE_BODIES_MAX are kept for the next
 * seals, so sustained writes do not map, fault in and zero a fresh 4 MiB buffer per object, nor
 * leave one per object for the collector. Smaller objects (commits) get buffers of their own size,
 * so a body never holds much more memory than the dirty budget counts for it.
 *
 * Once the writer is idle (this object empty, nothing uploading) it calls releaseIdle(): the spare
 * bodies and a staging buffer a burst filled go, and the next write allocates them again. A burst
 * of writes would otherwise keep three objects' worth resident through whatever follows, 12 MiB of
 * the 512 MiB machine's 128 MiB (bench/RESULTS.md, "Issue 23: memory on a bucket").
 */

import { assert } from "../util/assert.ts";
import {
  type Extent,
  HEADER_BYTES,
  HEADER_ENTRIES,
  ObjectBuilder,
  type SealMeta,
  SECTOR_BYTES,
  trailerBytesFor,
  ZERO_RANGES_MAX,
} from "../format/object.ts";
import { crc32 } from "../format/crc32.ts";

/** Stored bodies kept for reuse: one being filled by the next seal while one more is handed back. */
const SPARE_BODIES_MAX = 2;

/** A sealed object and what it says, in the shape recovery decodes from a stored one. */
export interface SealedObject {
  bytes: Uint8Array;
  /** Header entries in header order (bytes). */
  entries: Extent[];
  zeroRanges: Extent[];
}

export class OpenObject {
  /** Allocated by the first write after construction or releaseIdle(). */
  #staging: Uint8Array | undefined;
  /** Slots of staging written since it was allocated: how much of it is resident. */
  #slotsHighWater = 0;
  #slots = new Map<number, number>(); // sector -> slot in staging
  #slotSector: Float64Array; // slot -> sector, for compaction and sealing
  #slotCrc: Uint32Array; // slot -> CRC-32 of its data
  #runs = 0; // header entries the sealed object would need
  #zero: [number, number][] = []; // sorted, disjoint, non-adjacent [start, end) in sectors
  readonly capacitySectors: number;
  /** Bytes of the largest object this buffer can seal (every slot, every zero range). */
  readonly #bodyBytesMax: number;
  #spareBodies: Uint8Array[] = [];
  /** Body buffers this object made: only they are taken back. */
  #ownBodies = new WeakSet<ArrayBufferLike>();

  constructor(capacityBytes: number) {
    assert(capacityBytes % SECTOR_BYTES === 0 && capacityBytes > 0);
    this.capacitySectors = capacityBytes / SECTOR_BYTES;
    this.#slotSector = new Float64Array(this.capacitySectors);
    this.#slotCrc = new Uint32Array(this.capacitySectors);
    this.#bodyBytesMax = HEADER_BYTES + capacityBytes +
      trailerBytesFor({ zeroRanges: ZERO_RANGES_MAX, origins: 0, sectors: this.capacitySectors });
  }

  /**
   * Takes back the body of a sealed object that nothing references any more (stored, and its
   * in-flight entry gone): only the caller may know that. Bodies of another shape are ignored.
   */
  recycle(body: Uint8Array): void {
    if (!this.#ownBodies.has(body.buffer) || this.#spareBodies.length >= SPARE_BODIES_MAX) return;
    this.#spareBodies.push(new Uint8Array(body.buffer));
  }

  /**
   * The writer is idle: lets go of the spare bodies, and of staging once a quarter or less of it
   * was left unwritten (commits that touch only its first slots keep it: releasing it would leave
   * 4 MiB for the collector per commit).
   */
  releaseIdle(): void {
    assert(this.isEmpty);
    this.#spareBodies = [];
    if (this.#slotsHighWater * 4 < this.capacitySectors * 3) return;
    this.#staging = undefined;
    this.#slotsHighWater = 0;
  }

  /** Bytes of the buffers this object holds between writes: staging and spare bodies. */
  get bufferBytes(): number {
    let n = this.#staging?.length ?? 0;
    for (const body of this.#spareBodies) n += body.length;
    return n;
  }

  get isEmpty(): boolean {
    return this.#slots.size === 0 && this.#zero.length === 0;
  }

  get dataBytes(): number {
    return this.#slots.size * SECTOR_BYTES;
  }

  /** True when a write of lengthSectors at startSector fits without sealing first. */
  canWrite(startSector: number, lengthSectors: number): boolean {
    let fresh = 0;
    for (let s = startSector; s < startSector + lengthSectors; s++) if (!this.#slots.has(s)) fresh++;
    return this.#slots.size + fresh <= this.capacitySectors && this.#runs < HEADER_ENTRIES &&
      this.#zero.length < ZERO_RANGES_MAX;
  }

  /** True when zeroing fits: it may split one zero range into... it only merges, but needs one slot. */
  canZero(): boolean {
    return this.#zero.length < ZERO_RANGES_MAX;
  }

  write(startSector: number, data: Uint8Array): void {
    const n = data.length / SECTOR_BYTES;
    assert(Number.isInteger(n) && n > 0 && this.canWrite(startSector, n));
    this.#subtractZero(startSector, startSector + n);
    const staging = this.#staging ??= new Uint8Array(this.capacitySectors * SECTOR_BYTES);
    for (let k = 0; k < n; k++) {
      const s = startSector + k;
      let slot = this.#slots.get(s);
      if (slot === undefined) {
        slot = this.#slots.size;
        this.#slots.set(s, slot);
        this.#slotSector[slot] = s;
        if (slot >= this.#slotsHighWater) this.#slotsHighWater = slot + 1;
        this.#runs += 1 - (this.#slots.has(s - 1) ? 1 : 0) - (this.#slots.has(s + 1) ? 1 : 0);
      }
      const sector = n === 1 ? data : data.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES);
      staging.set(sector, slot * SECTOR_BYTES);
      this.#slotCrc[slot] = crc32(sector);
    }
  }

  zero(startSector: number, lengthSectors: number): void {
    assert(this.canZero());
    const end = startSector + lengthSectors;
    if (this.#slots.size > 0) this.#dropSectors(startSector, end);
    const kept: [number, number][] = [];
    let a = startSector, b = end;
    for (const [s, e] of this.#zero) {
      if (e < a || s > b) kept.push([s, e]);
      else {
        a = Math.min(a, s);
        b = Math.max(b, e);
      }
    }
    kept.push([a, b]);
    kept.sort((x, y) => x[0] - y[0]);
    this.#zero = kept;
  }

  /** For reads: data of sector (a view into staging, valid until the next write or seal), or
   *  "zero" when zeroed here, or undefined when this object says nothing about it. */
  lookup(sector: number): Uint8Array | "zero" | undefined {
    const slot = this.#slots.get(sector);
    if (slot !== undefined) return this.#staging!.subarray(slot * SECTOR_BYTES, (slot + 1) * SECTOR_BYTES);
    for (const [s, e] of this.#zero) if (sector >= s && sector < e) return "zero";
    return undefined;
  }

  /** Data sectors and zero ranges overlapping [start, end), for block status. */
  overlay(startSector: number, endSector: number): { data: number[]; zero: [number, number][] } {
    const data: number[] = [];
    for (const s of this.#slots.keys()) if (s >= startSector && s < endSector) data.push(s);
    data.sort((x, y) => x - y);
    const zero = this.#zero.filter(([s, e]) => e > startSector && s < endSector);
    return { data, zero };
  }

  /** Builds the object and empties this buffer for reuse. */
  seal(meta: Omit<SealMeta, "origins">): SealedObject {
    const order = this.#slotsByAddress();
    const count = order.length;
    const nearlyFull = count * 4 >= this.capacitySectors * 3;
    const builder = new ObjectBuilder({
      dataBytes: count * SECTOR_BYTES,
      zeroRanges: this.#zero.length,
      ...(nearlyFull ? { into: this.#spareBodies.pop() ?? this.#newBody() } : {}),
    });
    const crcs = new Uint32Array(count);
    const entries: Extent[] = [];
    let i = 0;
    while (i < count) {
      const start = this.#slotSector[order[i]!]!;
      let j = i + 1;
      while (j < count && this.#slotSector[order[j]!] === start + (j - i)) j++;
      entries.push({ addressBytes: start * SECTOR_BYTES, lengthBytes: (j - i) * SECTOR_BYTES });
      const view = builder.addEntry(start * SECTOR_BYTES, (j - i) * SECTOR_BYTES);
      for (let k = i; k < j; k++) {
        const slot = order[k]!;
        view.set(
          this.#staging!.subarray(slot * SECTOR_BYTES, (slot + 1) * SECTOR_BYTES),
          (k - i) * SECTOR_BYTES,
        );
        crcs[k] = this.#slotCrc[slot]!;
      }
      i = j;
    }
    assert(entries.length === this.#runs && entries.length <= HEADER_ENTRIES, "run count drifted");
    const zeroRanges = this.#zero.map(([s, e]) => ({
      addressBytes: s * SECTOR_BYTES,
      lengthBytes: (e - s) * SECTOR_BYTES,
    }));
    for (const z of zeroRanges) builder.addZeroRange(z.addressBytes, z.lengthBytes);
    const bytes = builder.finish(meta, crcs);
    this.#slots.clear();
    this.#zero = [];
    this.#runs = 0;
    return { bytes, entries, zeroRanges };
  }

  #newBody(): Uint8Array {
    const body = new Uint8Array(this.#bodyBytesMax);
    this.#ownBodies.add(body.buffer);
    return body;
  }

  /** Slots in the address order of their sectors (a native sort of sector × capacity + slot). */
  #slotsByAddress(): Uint32Array {
    const count = this.#slots.size, capacity = this.capacitySectors;
    const keys = new Float64Array(count);
    for (let slot = 0; slot < count; slot++) keys[slot] = this.#slotSector[slot]! * capacity + slot;
    keys.sort();
    const order = new Uint32Array(count);
    for (let k = 0; k < count; k++) order[k] = keys[k]! % capacity;
    return order;
  }

  #subtractZero(a: number, b: number): void {
    if (this.#zero.length === 0) return;
    const out: [number, number][] = [];
    for (const [s, e] of this.#zero) {
      if (e <= a || s >= b) out.push([s, e]);
      else {
        if (s < a) out.push([s, a]);
        if (e > b) out.push([b, e]);
      }
    }
    assert(out.length <= ZERO_RANGES_MAX);
    this.#zero = out;
  }

  /** Removes data sectors in [a, b); slots are compacted so staging stays dense. */
  #dropSectors(a: number, b: number): void {
    const doomed: number[] = [];
    if (b - a < this.#slots.size) {
      for (let s = a; s < b; s++) if (this.#slots.has(s)) doomed.push(s);
    } else {
      for (const s of this.#slots.keys()) if (s >= a && s < b) doomed.push(s);
    }
    for (const s of doomed) {
      const slot = this.#slots.get(s)!;
      this.#slots.delete(s);
      this.#runs += -1 + (this.#slots.has(s - 1) ? 1 : 0) + (this.#slots.has(s + 1) ? 1 : 0);
      const last = this.#slots.size; // the highest slot index still in use
      if (slot !== last) {
        // move the sector living in the last slot into the freed one
        const moved = this.#slotSector[last]!;
        this.#staging!.copyWithin(slot * SECTOR_BYTES, last * SECTOR_BYTES, (last + 1) * SECTOR_BYTES);
        this.#slots.set(moved, slot);
        this.#slotSector[slot] = moved;
        this.#slotCrc[slot] = this.#slotCrc[last]!;
      }
    }
  }
}
