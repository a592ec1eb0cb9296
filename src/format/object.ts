/**
 * @module
 * Pure encode/decode of one log object (docs/FORMAT.md is the normative description):
 *
 *   object  = header data [trailer]
 *   header  = 1024 × entry (12 KiB); entry = u64be address, u32be length; length 0 ends the list
 *   data    = the bytes of each entry, in header order
 *   trailer = lsvd's extension (zero ranges, sequence, writer epoch, volume size, CRC-32); readers
 *             that know only the header and data never look past the data and lose nothing written.
 */

import { assert } from "../util/assert.ts";
import { crc32 } from "./crc32.ts";
import { getU64, setU64 } from "../util/bytes.ts";

export const SECTOR_BYTES = 4096;
export const HEADER_ENTRIES = 1024;
export const ENTRY_BYTES = 12;
export const HEADER_BYTES = HEADER_ENTRIES * ENTRY_BYTES; // 12,288
export const TRAILER_MAGIC = "LSVDTRL1";
export const TRAILER_VERSION = 1;
export const TRAILER_FIXED_BYTES = 48;
export const ZERO_RANGE_BYTES = 16;
/** Zero ranges one object may carry; they live in the trailer, not the header. */
export const ZERO_RANGES_MAX = 1024;

export class FormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FormatError";
  }
}

export interface Extent {
  addressBytes: number;
  lengthBytes: number;
}

export interface Trailer {
  sequence: number;
  writerEpoch: number;
  volumeSizeBytes: number;
  /** Ranges that read as zeros after this object (trim, write-zeroes), O(1) bytes each. */
  zeroRanges: Extent[];
  crc32: number;
}

const MAGIC_BYTES = new TextEncoder().encode(TRAILER_MAGIC);

function isSectorMultiple(n: number): boolean {
  return n % SECTOR_BYTES === 0;
}

/**
 * Builds one object in a single buffer: callers reserve entries, fill the returned views with
 * data, add zero ranges, then finish() writes the trailer with its checksum.
 */
export class ObjectBuilder {
  readonly bytes: Uint8Array;
  #view: DataView;
  #entries = 0;
  #dataEnd = HEADER_BYTES;
  #zeroRanges: Extent[] = [];
  #zeroCountMax: number;

  constructor(options: { dataBytes: number; zeroRanges: number }) {
    assert(options.zeroRanges <= ZERO_RANGES_MAX);
    this.#zeroCountMax = options.zeroRanges;
    const size = HEADER_BYTES + options.dataBytes + TRAILER_FIXED_BYTES +
      options.zeroRanges * ZERO_RANGE_BYTES;
    this.bytes = new Uint8Array(size);
    this.#view = new DataView(this.bytes.buffer);
  }

  /** Reserves the next header entry and returns the view its data must be written into. */
  addEntry(addressBytes: number, lengthBytes: number): Uint8Array {
    assert(this.#entries < HEADER_ENTRIES, "too many entries");
    assert(lengthBytes > 0 && isSectorMultiple(lengthBytes) && isSectorMultiple(addressBytes));
    const at = this.#entries * ENTRY_BYTES;
    setU64(this.#view, at, addressBytes);
    this.#view.setUint32(at + 8, lengthBytes);
    this.#entries++;
    const data = this.bytes.subarray(this.#dataEnd, this.#dataEnd + lengthBytes);
    assert(data.length === lengthBytes, "data larger than reserved");
    this.#dataEnd += lengthBytes;
    return data;
  }

  addZeroRange(addressBytes: number, lengthBytes: number): void {
    assert(this.#zeroRanges.length < this.#zeroCountMax, "too many zero ranges");
    assert(lengthBytes > 0 && isSectorMultiple(lengthBytes) && isSectorMultiple(addressBytes));
    this.#zeroRanges.push({ addressBytes, lengthBytes });
  }

  finish(meta: { sequence: number; writerEpoch: number; volumeSizeBytes: number }): Uint8Array {
    assert(this.#zeroRanges.length === this.#zeroCountMax, "zero ranges reserved but not added");
    const at = this.#dataEnd;
    assert(at + TRAILER_FIXED_BYTES + this.#zeroRanges.length * ZERO_RANGE_BYTES === this.bytes.length);
    this.bytes.set(MAGIC_BYTES, at);
    const v = this.#view;
    v.setUint32(at + 8, TRAILER_VERSION);
    v.setUint32(at + 12, this.#zeroRanges.length);
    setU64(v, at + 16, meta.sequence);
    setU64(v, at + 24, meta.writerEpoch);
    setU64(v, at + 32, meta.volumeSizeBytes);
    let p = at + 40;
    for (const z of this.#zeroRanges) {
      setU64(v, p, z.addressBytes);
      setU64(v, p + 8, z.lengthBytes);
      p += ZERO_RANGE_BYTES;
    }
    v.setUint32(p, crc32(this.bytes.subarray(0, p)));
    v.setUint32(p + 4, this.bytes.length - at);
    return this.bytes;
  }
}

/** Decodes the header's entries; throws FormatError on anything a writer could not have produced. */
export function decodeHeader(header: Uint8Array): Extent[] {
  if (header.length < HEADER_BYTES) {
    throw new FormatError(`header is ${header.length} bytes, expected ${HEADER_BYTES}`);
  }
  const view = new DataView(header.buffer, header.byteOffset, HEADER_BYTES);
  const entries: Extent[] = [];
  for (let i = 0; i < HEADER_ENTRIES; i++) {
    const lengthBytes = view.getUint32(i * ENTRY_BYTES + 8);
    if (lengthBytes === 0) break;
    const addressBytes = getU64(view, i * ENTRY_BYTES);
    if (!isSectorMultiple(addressBytes) || !isSectorMultiple(lengthBytes)) {
      throw new FormatError(
        `entry ${i} (address ${addressBytes}, length ${lengthBytes}) is not 4 KiB aligned`,
      );
    }
    if (!Number.isSafeInteger(addressBytes + lengthBytes)) {
      throw new FormatError(`entry ${i} address ${addressBytes} is out of range`);
    }
    entries.push({ addressBytes, lengthBytes });
  }
  return entries;
}

export function dataBytesOf(entries: readonly Extent[]): number {
  let total = 0;
  for (const e of entries) total += e.lengthBytes;
  return total;
}

/** Bytes that follow header + data in an object of totalSizeBytes: 0 means no trailer. */
export function trailerBytesOf(entries: readonly Extent[], totalSizeBytes: number): number {
  const dataEnd = HEADER_BYTES + dataBytesOf(entries);
  if (totalSizeBytes < dataEnd) {
    throw new FormatError(
      `object is ${totalSizeBytes} bytes but its header promises ${dataEnd} bytes of header and data (truncated)`,
    );
  }
  return totalSizeBytes - dataEnd;
}

/**
 * Decodes a trailer (the bytes after header + data). Verifies the checksum when the whole
 * object is given as `objectPrefix` (header + data), otherwise only the structure.
 */
export function decodeTrailer(trailer: Uint8Array, objectPrefix?: Uint8Array): Trailer {
  if (trailer.length < TRAILER_FIXED_BYTES) {
    throw new FormatError(`trailer is ${trailer.length} bytes, shorter than ${TRAILER_FIXED_BYTES}`);
  }
  for (let i = 0; i < MAGIC_BYTES.length; i++) {
    if (trailer[i] !== MAGIC_BYTES[i]) throw new FormatError("trailer has a bad magic number");
  }
  const v = new DataView(trailer.buffer, trailer.byteOffset, trailer.length);
  const version = v.getUint32(8);
  if (version !== TRAILER_VERSION) throw new FormatError(`trailer version ${version} is not supported`);
  const zeroCount = v.getUint32(12);
  const expected = TRAILER_FIXED_BYTES + zeroCount * ZERO_RANGE_BYTES;
  if (trailer.length !== expected || v.getUint32(trailer.length - 4) !== expected) {
    throw new FormatError(`trailer is ${trailer.length} bytes, its fields say ${expected}`);
  }
  const zeroRanges: Extent[] = [];
  for (let i = 0, p = 40; i < zeroCount; i++, p += ZERO_RANGE_BYTES) {
    const z = { addressBytes: getU64(v, p), lengthBytes: getU64(v, p + 8) };
    if (!isSectorMultiple(z.addressBytes) || !isSectorMultiple(z.lengthBytes) || z.lengthBytes === 0) {
      throw new FormatError(`zero range ${i} is not 4 KiB aligned`);
    }
    zeroRanges.push(z);
  }
  const crcAt = trailer.length - 8;
  const stored = v.getUint32(crcAt);
  if (objectPrefix !== undefined) {
    const computed = crc32(trailer.subarray(0, crcAt), crc32(objectPrefix));
    if (computed !== stored) throw new FormatError("checksum mismatch: the object is corrupt");
  }
  return {
    sequence: getU64(v, 16),
    writerEpoch: getU64(v, 24),
    volumeSizeBytes: getU64(v, 32),
    zeroRanges,
    crc32: stored,
  };
}
