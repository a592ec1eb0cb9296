/**
 * @module
 * Reuses READ reply buffers so a steady stream of same-sized reads does not allocate (and zero)
 * a fresh ArrayBuffer per request. Bounded: at most freeBytesMax are kept idle.
 */

export class BufferPool {
  #free = new Map<number, Uint8Array[]>();
  #freeBytes = 0;
  #freeBytesMax: number;

  constructor(freeBytesMax: number) {
    this.#freeBytesMax = freeBytesMax;
  }

  /** A buffer of exactly n bytes with arbitrary old contents. */
  take(n: number): Uint8Array {
    const buffer = this.#free.get(n)?.pop();
    if (buffer === undefined) return new Uint8Array(n);
    this.#freeBytes -= n;
    return buffer;
  }

  give(buffer: Uint8Array): void {
    if (this.#freeBytes + buffer.length > this.#freeBytesMax) return;
    let list = this.#free.get(buffer.length);
    if (list === undefined) this.#free.set(buffer.length, list = []);
    list.push(buffer);
    this.#freeBytes += buffer.length;
  }
}
