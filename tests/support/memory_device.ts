/**
 * @module
 * An in-memory BlockDevice with the engine's semantics, for testing the NBD server without a
 * store: never-written, trimmed and zeroed sectors read as zeros and blockStatus reports them as
 * zero runs; data lives in 1 MiB chunks allocated on first write. Like the engine it asserts
 * range and alignment (the server must have checked them), copies write data before returning,
 * and counts flushes and FUA writes so tests can see what the client asked for.
 */

import assert from "node:assert/strict";
import type { AllocationExtent, BlockDevice, WriteOptions } from "../../src/volume/block_device.ts";
import { SECTOR_BYTES } from "../../src/volume/block_device.ts";

const CHUNK_BYTES = 1024 * 1024;
const SECTORS_PER_CHUNK = CHUNK_BYTES / SECTOR_BYTES;

interface Chunk {
  bytes: Uint8Array;
  /** 1 where the sector holds written data, 0 where it reads as zeros. */
  data: Uint8Array;
  dataSectors: number;
}

export type DeviceOperation = "read" | "write" | "writeZeroes" | "trim" | "flush";

export interface MemoryDeviceOptions {
  sizeBytes: number;
  readOnly?: boolean;
  /** Delay every operation by this long (to keep requests in flight in tests). */
  latencyMs?: number;
}

export class MemoryDevice implements BlockDevice {
  readonly sizeBytes: number;
  readonly readOnly: boolean;
  flushCount = 0;
  fuaCount = 0;
  operationCount = 0;
  #chunks = new Map<number, Chunk>();
  #latencyMs: number;
  #faults: Array<{ operation: DeviceOperation; error: Error }> = [];

  constructor(options: MemoryDeviceOptions) {
    assert(options.sizeBytes > 0 && options.sizeBytes % SECTOR_BYTES === 0);
    this.sizeBytes = options.sizeBytes;
    this.readOnly = options.readOnly ?? false;
    this.#latencyMs = options.latencyMs ?? 0;
  }

  /** The next `operation` fails with `error` (once). */
  failNext(operation: DeviceOperation, error: Error): void {
    this.#faults.push({ operation, error });
  }

  async read(offsetBytes: number, dest: Uint8Array): Promise<void> {
    this.#checkRange(offsetBytes, dest.length);
    await this.#enter("read");
    this.#copyOut(offsetBytes, dest);
  }

  /** As the engine's: answered at once (undefined) unless a latency is set; a fault rejects. */
  startRead(offsetBytes: number, dest: Uint8Array): Promise<void> | undefined {
    if (this.#latencyMs > 0) return this.read(offsetBytes, dest);
    this.#checkRange(offsetBytes, dest.length);
    try {
      this.#takeFault("read");
    } catch (e) {
      return Promise.reject(e);
    }
    this.#copyOut(offsetBytes, dest);
    return undefined;
  }

  #copyOut(offsetBytes: number, dest: Uint8Array): void {
    this.#forEachPiece(offsetBytes, dest.length, (chunk, at, length, done) => {
      const target = dest.subarray(done, done + length);
      if (chunk === undefined) target.fill(0);
      else target.set(chunk.bytes.subarray(at, at + length));
    });
  }

  async write(offsetBytes: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.#checkWritable(offsetBytes, data.length);
    this.#takeFault("write");
    if (this.#latencyMs > 0) {
      const copy = data.slice(); // the caller may reuse data once we return a promise
      await this.#delay();
      this.#store(offsetBytes, copy);
    } else {
      this.#store(offsetBytes, data);
    }
    if (options?.fua) this.fuaCount++;
  }

  async writeZeroes(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    this.#checkWritable(offsetBytes, lengthBytes);
    await this.#enter("writeZeroes");
    this.#zero(offsetBytes, lengthBytes);
    if (options?.fua) this.fuaCount++;
  }

  async trim(offsetBytes: number, lengthBytes: number, options?: WriteOptions): Promise<void> {
    this.#checkWritable(offsetBytes, lengthBytes);
    await this.#enter("trim");
    this.#zero(offsetBytes, lengthBytes);
    if (options?.fua) this.fuaCount++;
  }

  async flush(): Promise<void> {
    await this.#enter("flush");
    this.flushCount++;
  }

  blockStatus(offsetBytes: number, lengthBytes: number): AllocationExtent[] {
    this.#checkRange(offsetBytes, lengthBytes);
    const extents: AllocationExtent[] = [];
    const add = (length: number, zero: boolean) => {
      const last = extents.at(-1);
      if (last !== undefined && last.zero === zero) last.lengthBytes += length;
      else extents.push({ lengthBytes: length, zero });
    };
    this.#forEachPiece(offsetBytes, lengthBytes, (chunk, at, length) => {
      if (chunk === undefined || chunk.dataSectors === 0) return add(length, true);
      for (let s = at / SECTOR_BYTES; s < (at + length) / SECTOR_BYTES; s++) {
        add(SECTOR_BYTES, chunk.data[s] === 0);
      }
    });
    return extents;
  }

  /** Injected faults and simulated latency, shared by every operation. */
  async #enter(operation: DeviceOperation): Promise<void> {
    this.#takeFault(operation);
    await this.#delay();
  }

  #takeFault(operation: DeviceOperation): void {
    this.operationCount++;
    const fault = this.#faults.findIndex((f) => f.operation === operation);
    if (fault >= 0) throw this.#faults.splice(fault, 1)[0]?.error;
  }

  async #delay(): Promise<void> {
    if (this.#latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, this.#latencyMs));
  }

  #checkRange(offsetBytes: number, lengthBytes: number): void {
    assert(offsetBytes % SECTOR_BYTES === 0 && lengthBytes % SECTOR_BYTES === 0, "unaligned request");
    assert(
      offsetBytes >= 0 && lengthBytes > 0 && offsetBytes + lengthBytes <= this.sizeBytes,
      "out of range",
    );
  }

  #checkWritable(offsetBytes: number, lengthBytes: number): void {
    assert(!this.readOnly, "write to a read-only device");
    this.#checkRange(offsetBytes, lengthBytes);
  }

  #forEachPiece(
    offsetBytes: number,
    lengthBytes: number,
    visit: (chunk: Chunk | undefined, at: number, length: number, done: number) => void,
  ): void {
    for (let done = 0; done < lengthBytes;) {
      const position = offsetBytes + done;
      const at = position % CHUNK_BYTES;
      const length = Math.min(lengthBytes - done, CHUNK_BYTES - at);
      visit(this.#chunks.get(Math.floor(position / CHUNK_BYTES)), at, length, done);
      done += length;
    }
  }

  #store(offsetBytes: number, data: Uint8Array): void {
    for (let done = 0; done < data.length;) {
      const position = offsetBytes + done;
      const index = Math.floor(position / CHUNK_BYTES);
      const at = position % CHUNK_BYTES;
      const length = Math.min(data.length - done, CHUNK_BYTES - at);
      let chunk = this.#chunks.get(index);
      if (chunk === undefined) {
        chunk = {
          bytes: new Uint8Array(CHUNK_BYTES),
          data: new Uint8Array(SECTORS_PER_CHUNK),
          dataSectors: 0,
        };
        this.#chunks.set(index, chunk);
      }
      chunk.bytes.set(data.subarray(done, done + length), at);
      for (let s = at / SECTOR_BYTES; s < (at + length) / SECTOR_BYTES; s++) {
        if (chunk.data[s] === 0) chunk.dataSectors++;
        chunk.data[s] = 1;
      }
      done += length;
    }
  }

  #zero(offsetBytes: number, lengthBytes: number): void {
    this.#forEachPiece(offsetBytes, lengthBytes, (chunk, at, length) => {
      if (chunk === undefined) return;
      chunk.bytes.fill(0, at, at + length);
      for (let s = at / SECTOR_BYTES; s < (at + length) / SECTOR_BYTES; s++) {
        if (chunk.data[s] === 1) chunk.dataSectors--;
        chunk.data[s] = 0;
      }
    });
  }
}
