/**
 * @module
 * The stored size of every log object the volume may read, 4 bytes each, indexed by sequence
 * (sequences are dense from 1). Knowing the size lets a read fetch an object's trailer (its CRC
 * table) with a ranged GET in parallel with the object's first data GET, instead of after it.
 * Sizes come from the listing at open and from the writer as it uploads.
 */

import { assert } from "../util/assert.ts";

const UNKNOWN = 0;
const INITIAL_SLOTS = 1024;

export class ObjectSizes {
  #sizes = new Uint32Array(INITIAL_SLOTS);

  /** Bytes held, for memory accounting. */
  get memoryBytes(): number {
    return this.#sizes.byteLength;
  }

  set(sequence: number, sizeBytes: number): void {
    assert(Number.isSafeInteger(sequence) && sequence > 0, "bad sequence");
    // Objects of 4 GiB or more (never written by lsvd) stay unknown: reads learn their size from a GET.
    if (!(sizeBytes > 0 && sizeBytes <= 0xffff_ffff)) return;
    if (sequence >= this.#sizes.length) {
      let slots = this.#sizes.length;
      while (slots <= sequence) slots *= 2;
      const grown = new Uint32Array(slots);
      grown.set(this.#sizes);
      this.#sizes = grown;
    }
    this.#sizes[sequence] = sizeBytes;
  }

  /** The size of object `sequence`, or undefined when not known. */
  get(sequence: number): number | undefined {
    const size = this.#sizes[sequence] ?? UNKNOWN;
    return size === UNKNOWN ? undefined : size;
  }
}
