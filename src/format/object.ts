/**
 * @module
 * Pure encode/decode of one log object (docs/FORMAT.md is the normative description):
 *
 *   object  = header data [trailer]
 *   header  = 1024 × entry (12 KiB); entry = u64be address, u32be length; length 0 ends the list
 *   data    = the bytes of each entry, in header order
 *   trailer = lsvd's extension (version 2: flags, zero ranges, sequence, writer epoch, volume size,
 *             seal time, header CRC, per-sector CRCs, origins of copied data, whole-object CRC-32);
 *             readers that know only the header and data never look past the data and lose nothing.
 */

import { assert } from "../util/assert.ts";
import { crc32, crc32After4K } from "./crc32.ts";
import { getU64, setU64 } from "../util/bytes.ts";

import { ENTRY_BYTES, HEADER_BYTES, HEADER_ENTRIES, SECTOR_BYTES } from "../util/constants.ts";
export { ENTRY_BYTES, HEADER_BYTES, HEADER_ENTRIES, SECTOR_BYTES };

/** Where data sector `offsetSectors` of an object starts in the object's bytes (after the header). */
export function sectorOffsetBytes(offsetSectors: number): number {
  return HEADER_BYTES + offsetSectors * SECTOR_BYTES;
}
export const TRAILER_MAGIC = "LSVDTRL1";
/** Version 2 adds flags, seal time, a header CRC, per-sector CRCs and (for copies) origins. */
export const TRAILER_VERSION = 2;
/** Fixed bytes of a version-2 trailer: 64 before the variable parts, crc and length after. */
export const TRAILER_FIXED_BYTES = 72;
const TRAILER_V1_FIXED_BYTES = 48;
export const ZERO_RANGE_BYTES = 16;
export const ORIGIN_BYTES = 8;
export const SECTOR_CRC_BYTES = 4;
/** Zero ranges one object may carry; they live in the trailer, not the header. */
export const ZERO_RANGES_MAX = 1024;
/** Trailer flag: every entry and zero range has an origin (the object copies older data: GC, rollback). */
export const FLAG_COPIED = 1;
/** Trailer flag: the data sectors are AES-256-GCM ciphertext; their tags follow the sector CRCs. */
export const FLAG_ENCRYPTED = 2;
/** Bytes of one sector's GCM tag in an encrypted object's trailer. */
export const SECTOR_TAG_BYTES = 16;
/** Suffix bytes fetched to find a trailer without knowing its length (a 4 MiB object's is ~4.2 KiB). */
export const TRAILER_GUESS_BYTES = 16 * 1024;
/** The same for an encrypted volume, whose 4 MiB object's trailer (tags too) is ~20.1 KiB. */
export const ENCRYPTED_TRAILER_GUESS_BYTES = 24 * 1024;

export class FormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "FormatError";
  }
}

/**
 * What decrypting an encrypted object's sectors needs besides the key: the nonce inputs (writer
 * epoch, sequence) and the GCM tag of each data sector (16 bytes each, in data order).
 */
export interface SectorSeal {
  writerEpoch: number;
  sequence: number;
  tags: Uint8Array;
}

/** A CRC table; an encrypted object's carries its seal, so every verified read can also decrypt. */
export type SectorCrcs = Uint32Array & { seal?: SectorSeal };

export interface Extent {
  addressBytes: number;
  lengthBytes: number;
}

export interface Trailer {
  version: number;
  flags: number;
  sequence: number;
  writerEpoch: number;
  volumeSizeBytes: number;
  /** Writer's clock when the object was sealed, ms since 1970 UTC (undefined in version 1). */
  sealTimeMs: number | undefined;
  /** CRC-32 of the 12 KiB header (undefined in version 1). */
  headerCrc32: number | undefined;
  /** Ranges that read as zeros after this object (trim, write-zeroes), O(1) bytes each. */
  zeroRanges: Extent[];
  /** FLAG_COPIED objects: for each entry, then each zero range, the sequence that first wrote it. */
  origins: number[] | undefined;
  /** CRC-32 of each 4 KiB data sector in data order (undefined in version 1); with FLAG_ENCRYPTED
   *  of the ciphertext, and carrying the seal. */
  sectorCrcs: SectorCrcs | undefined;
  /** Whole-object CRC-32. */
  crc32: number;
}

export interface SealMeta {
  sequence: number;
  writerEpoch: number;
  volumeSizeBytes: number;
  sealTimeMs: number;
  /** Required (one per entry, then one per zero range) for objects that copy older data. */
  origins?: readonly number[];
}

const MAGIC_BYTES = new TextEncoder().encode(TRAILER_MAGIC);

function isSectorMultiple(n: number): boolean {
  return n % SECTOR_BYTES === 0;
}

/** Bytes of a version-2 trailer with these counts. */
export function trailerBytesFor(
  counts: { zeroRanges: number; origins: number; sectors: number; encrypted?: boolean },
): number {
  return TRAILER_FIXED_BYTES + counts.zeroRanges * ZERO_RANGE_BYTES + counts.origins * ORIGIN_BYTES +
    counts.sectors * (SECTOR_CRC_BYTES + (counts.encrypted === true ? SECTOR_TAG_BYTES : 0));
}

/**
 * Builds one object in a single buffer: callers reserve entries, fill the returned views with
 * data, add zero ranges, then finish() writes the trailer (checksums, seal time) and the CRC.
 */
export class ObjectBuilder {
  readonly bytes: Uint8Array;
  #view: DataView;
  #entries = 0;
  #dataEnd = HEADER_BYTES;
  #zeroRanges: Extent[] = [];
  #zeroCountMax: number;
  #copied: boolean;

  /**
   * `entries` is needed only with `copied` (origins take space per entry). `into`: a buffer at least
   * the object's size to build in instead of a new one (its header is cleared, the rest overwritten).
   */
  constructor(
    options: { dataBytes: number; zeroRanges: number; copied?: boolean; entries?: number; into?: Uint8Array },
  ) {
    assert(options.zeroRanges <= ZERO_RANGES_MAX);
    assert(isSectorMultiple(options.dataBytes));
    this.#zeroCountMax = options.zeroRanges;
    this.#copied = options.copied ?? false;
    assert(!this.#copied || options.entries !== undefined, "copied objects need their entry count");
    const size = HEADER_BYTES + options.dataBytes + trailerBytesFor({
      zeroRanges: options.zeroRanges,
      origins: this.#copied ? options.entries! + options.zeroRanges : 0,
      sectors: options.dataBytes / SECTOR_BYTES,
    });
    if (options.into === undefined) this.bytes = new Uint8Array(size);
    else {
      assert(options.into.length >= size, "the buffer is smaller than the object");
      this.bytes = options.into.subarray(0, size);
      this.bytes.fill(0, 0, HEADER_BYTES); // unused entries must read as the terminator
    }
    this.#view = new DataView(this.bytes.buffer, this.bytes.byteOffset, size);
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

  /**
   * Writes the trailer and returns the object. `sectorCrcs` (data order) may be given by a caller
   * that computed them as the data arrived; otherwise each sector is checksummed here. Either way
   * the whole-object CRC is chained from the header's and the sectors' CRCs, not read again.
   */
  finish(meta: SealMeta, sectorCrcs?: Uint32Array): Uint8Array {
    assert(this.#zeroRanges.length === this.#zeroCountMax, "zero ranges reserved but not added");
    const originCount = this.#copied ? this.#entries + this.#zeroRanges.length : 0;
    assert((meta.origins?.length ?? 0) === originCount, "one origin per entry and zero range");
    const sectors = (this.#dataEnd - HEADER_BYTES) / SECTOR_BYTES;
    const at = this.#dataEnd;
    const trailerBytes = trailerBytesFor({
      zeroRanges: this.#zeroRanges.length,
      origins: originCount,
      sectors,
    });
    assert(at + trailerBytes === this.bytes.length, "object size differs from what was reserved");
    this.bytes.set(MAGIC_BYTES, at);
    const v = this.#view;
    v.setUint32(at + 8, TRAILER_VERSION);
    v.setUint32(at + 12, this.#copied ? FLAG_COPIED : 0);
    v.setUint32(at + 16, this.#zeroRanges.length);
    v.setUint32(at + 20, originCount);
    v.setUint32(at + 24, sectors);
    let crc = crc32(this.bytes.subarray(0, HEADER_BYTES));
    v.setUint32(at + 28, crc);
    setU64(v, at + 32, meta.sequence);
    setU64(v, at + 40, meta.writerEpoch);
    setU64(v, at + 48, meta.volumeSizeBytes);
    setU64(v, at + 56, meta.sealTimeMs);
    let p = at + 64;
    for (const z of this.#zeroRanges) {
      setU64(v, p, z.addressBytes);
      setU64(v, p + 8, z.lengthBytes);
      p += ZERO_RANGE_BYTES;
    }
    for (const o of meta.origins ?? []) {
      setU64(v, p, o);
      p += ORIGIN_BYTES;
    }
    assert(sectorCrcs === undefined || sectorCrcs.length === sectors, "one CRC per data sector");
    for (let k = 0; k < sectors; k++, p += SECTOR_CRC_BYTES) {
      const from = sectorOffsetBytes(k);
      const sectorCrc = sectorCrcs?.[k] ?? crc32(this.bytes.subarray(from, from + SECTOR_BYTES));
      v.setUint32(p, sectorCrc);
      crc = crc32After4K(crc, sectorCrc);
    }
    v.setUint32(p, crc32(this.bytes.subarray(at, p), crc));
    v.setUint32(p + 4, trailerBytes);
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

/** The trailer length an object's last four bytes claim. */
export function claimedTrailerBytes(tail: Uint8Array): number {
  assert(tail.length >= 4);
  return new DataView(tail.buffer, tail.byteOffset + tail.length - 4, 4).getUint32(0);
}

/**
 * Decodes a trailer (exactly the bytes after header + data). Verifies the whole-object checksum
 * when the header + data are given as `objectPrefix`, otherwise only the structure.
 */
export function decodeTrailer(trailer: Uint8Array, objectPrefix?: Uint8Array): Trailer {
  if (trailer.length < TRAILER_V1_FIXED_BYTES) {
    throw new FormatError(`trailer is ${trailer.length} bytes, shorter than ${TRAILER_V1_FIXED_BYTES}`);
  }
  for (let i = 0; i < MAGIC_BYTES.length; i++) {
    if (trailer[i] !== MAGIC_BYTES[i]) throw new FormatError("trailer has a bad magic number");
  }
  const v = new DataView(trailer.buffer, trailer.byteOffset, trailer.length);
  const version = v.getUint32(8);
  const t = version === 1 ? decodeV1(v) : version === 2 ? decodeV2(v) : undefined;
  if (t === undefined) {
    throw new FormatError(`trailer version ${version} is newer than this lsvd understands; upgrade lsvd`);
  }
  const crcAt = trailer.length - 8;
  if (objectPrefix !== undefined) {
    const computed = crc32(trailer.subarray(0, crcAt), crc32(objectPrefix));
    if (computed !== t.crc32) throw new FormatError("checksum mismatch: the object is corrupt");
  }
  return t;
}

function checkLength(v: DataView, expected: number): void {
  if (v.byteLength !== expected || v.getUint32(v.byteLength - 4) !== expected) {
    throw new FormatError(`trailer is ${v.byteLength} bytes, its fields say ${expected}`);
  }
}

function decodeZeroRanges(v: DataView, at: number, count: number): Extent[] {
  const zeroRanges: Extent[] = [];
  for (let i = 0, p = at; i < count; i++, p += ZERO_RANGE_BYTES) {
    const z = { addressBytes: getU64(v, p), lengthBytes: getU64(v, p + 8) };
    if (!isSectorMultiple(z.addressBytes) || !isSectorMultiple(z.lengthBytes) || z.lengthBytes === 0) {
      throw new FormatError(`zero range ${i} is not 4 KiB aligned`);
    }
    zeroRanges.push(z);
  }
  return zeroRanges;
}

function decodeV1(v: DataView): Trailer {
  const zeroCount = v.getUint32(12);
  checkLength(v, TRAILER_V1_FIXED_BYTES + zeroCount * ZERO_RANGE_BYTES);
  return {
    version: 1,
    flags: 0,
    sequence: getU64(v, 16),
    writerEpoch: getU64(v, 24),
    volumeSizeBytes: getU64(v, 32),
    sealTimeMs: undefined,
    headerCrc32: undefined,
    zeroRanges: decodeZeroRanges(v, 40, zeroCount),
    origins: undefined,
    sectorCrcs: undefined,
    crc32: v.getUint32(v.byteLength - 8),
  };
}

function decodeV2(v: DataView): Trailer {
  if (v.byteLength < TRAILER_FIXED_BYTES) {
    throw new FormatError(`trailer is ${v.byteLength} bytes, shorter than ${TRAILER_FIXED_BYTES}`);
  }
  const flags = v.getUint32(12);
  const zeroCount = v.getUint32(16);
  const originCount = v.getUint32(20);
  const sectors = v.getUint32(24);
  const encrypted = (flags & FLAG_ENCRYPTED) !== 0;
  checkLength(v, trailerBytesFor({ zeroRanges: zeroCount, origins: originCount, sectors, encrypted }));
  if (((flags & FLAG_COPIED) !== 0) !== (originCount > 0)) {
    throw new FormatError("trailer flags and origin count disagree");
  }
  let p = 64 + zeroCount * ZERO_RANGE_BYTES;
  const origins: number[] = [];
  for (let i = 0; i < originCount; i++, p += ORIGIN_BYTES) origins.push(getU64(v, p));
  const sectorCrcs: SectorCrcs = new Uint32Array(sectors);
  for (let k = 0; k < sectors; k++, p += SECTOR_CRC_BYTES) sectorCrcs[k] = v.getUint32(p);
  if (encrypted) {
    const tags = new Uint8Array(v.buffer, v.byteOffset + p, sectors * SECTOR_TAG_BYTES).slice();
    const seal = { writerEpoch: getU64(v, 40), sequence: getU64(v, 32), tags };
    // The nonce holds epoch:u32 and sequence:u40 (FORMAT.md): larger values are damage, not keys.
    if (seal.writerEpoch >= 2 ** 32 || seal.sequence >= 2 ** 40 || sectors > 2 ** 24) {
      throw new FormatError("encrypted trailer's writer epoch, sequence or sector count is out of range");
    }
    sectorCrcs.seal = seal;
  }
  return {
    version: 2,
    flags,
    sequence: getU64(v, 32),
    writerEpoch: getU64(v, 40),
    volumeSizeBytes: getU64(v, 48),
    sealTimeMs: getU64(v, 56),
    headerCrc32: v.getUint32(28),
    zeroRanges: decodeZeroRanges(v, 64, zeroCount),
    origins: originCount > 0 ? origins : undefined,
    sectorCrcs,
    crc32: v.getUint32(v.byteLength - 8),
  };
}

/** Checks a header against the CRC its trailer recorded (version 2); throws FormatError naming the damage. */
export function verifyHeader(header: Uint8Array, trailer: Trailer): void {
  if (trailer.headerCrc32 === undefined) return;
  if (crc32(header.subarray(0, HEADER_BYTES)) !== trailer.headerCrc32) {
    throw new FormatError("header checksum mismatch: the header is damaged");
  }
}

/**
 * Index of the first sector of `data` (data sectors firstSector.. of the object) whose CRC differs
 * from the table, or -1 when all match.
 */
export function firstBadSector(data: Uint8Array, firstSector: number, crcs: Uint32Array): number {
  const sectors = data.length / SECTOR_BYTES;
  assert(Number.isInteger(sectors) && firstSector + sectors <= crcs.length, "sectors outside the table");
  for (let k = 0; k < sectors; k++) {
    if (crc32(data.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES)) !== crcs[firstSector + k]) return k;
  }
  return -1;
}
