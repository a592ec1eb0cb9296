/**
 * @module
 * The write-back journal's record format (docs/design/write-back-journal.md): pure encode/decode,
 * no I/O. A segment file is a sequence of records, each a 32-byte header and its data:
 *
 *   u32 magic "LSVJ" | u8 kind (1 write, 2 zero) | 3 bytes 0 | u64 record number |
 *   u64 byte offset | u32 length in bytes | u32 CRC-32 over the header (this field 0) and the data
 *
 * all big-endian. A write carries `length` data bytes; a zero (trim / write-zeroes) none; a sealed
 * write (an encrypted volume's, kind 3) carries them encrypted: 12-byte nonce, 16-byte tag, then the
 * `length` bytes of ciphertext (src/crypto/sector_cipher.ts sealRecord, bound to the record's
 * kind, number, offset and length: sealedHeader()). Record
 * numbers increase by one along the journal, across segments, so a reader knows a record is the
 * next one and not a stale one left in a reused file. The journal is local and private to one
 * daemon: it is not part of the bucket format (docs/FORMAT.md).
 */

import { crc32 } from "../format/crc32.ts";

export const JOURNAL_MAGIC = 0x4c53564a; // "LSVJ"
export const RECORD_HEADER_BYTES = 32;

export type RecordKind = "write" | "zero" | "sealed";
/** What a sealed write adds to its data (nonce and tag). */
export const SEALED_EXTRA_BYTES = 28;

export interface JournalRecord {
  kind: RecordKind;
  number: number;
  offsetBytes: number;
  lengthBytes: number;
  /** The written bytes (length lengthBytes) for "write"; sealed ones (SEALED_EXTRA_BYTES more) for
   *  "sealed"; empty for "zero". */
  data: Uint8Array;
}

const KIND_CODE: Record<RecordKind, number> = { write: 1, zero: 2, sealed: 3 };

const KIND_OF_CODE = new Map((Object.keys(KIND_CODE) as RecordKind[]).map((kind) => [KIND_CODE[kind], kind]));

/** The kind a header's kind byte names, undefined for none. */
function kindOfCode(code: number): RecordKind | undefined {
  return KIND_OF_CODE.get(code);
}

/** Data bytes a record carries. */
function dataBytesOf(kind: RecordKind, lengthBytes: number): number {
  return kind === "write" ? lengthBytes : kind === "sealed" ? lengthBytes + SEALED_EXTRA_BYTES : 0;
}

/** An encrypted volume's journal key (src/crypto/sector_cipher.ts SectorCipher). */
export interface RecordSealer {
  sealRecord(header: Uint8Array, plain: Uint8Array): Uint8Array;
  /** Undefined when the sealed data does not authenticate. */
  openRecord(header: Uint8Array, sealed: Uint8Array): Uint8Array | undefined;
}

/** Bytes a record takes in a segment. */
export function recordBytes(kind: RecordKind, lengthBytes: number): number {
  return RECORD_HEADER_BYTES + dataBytesOf(kind, lengthBytes);
}

/** What a sealed record's data is bound to: its kind, number, offset and length (21 bytes). */
export function sealedHeader(number: number, offsetBytes: number, lengthBytes: number): Uint8Array {
  const out = new Uint8Array(21);
  const v = new DataView(out.buffer);
  v.setUint8(0, KIND_CODE.sealed);
  setU64(v, 1, number);
  setU64(v, 9, offsetBytes);
  v.setUint32(17, lengthBytes);
  return out;
}

function setU64(v: DataView, at: number, n: number): void {
  v.setUint32(at, Math.floor(n / 2 ** 32));
  v.setUint32(at + 4, n >>> 0);
}

function getU64(v: DataView, at: number): number {
  return v.getUint32(at) * 2 ** 32 + v.getUint32(at + 4);
}

/** Encodes one record (header and data) into a new buffer. */
export function encodeRecord(r: JournalRecord): Uint8Array {
  const dataBytes = dataBytesOf(r.kind, r.lengthBytes);
  if (r.kind !== "zero" && r.data.length !== dataBytes) {
    throw new RangeError(`record ${r.number}: ${r.data.length} data bytes for length ${r.lengthBytes}`);
  }
  const out = new Uint8Array(RECORD_HEADER_BYTES + dataBytes);
  const v = new DataView(out.buffer);
  v.setUint32(0, JOURNAL_MAGIC);
  v.setUint8(4, KIND_CODE[r.kind]);
  setU64(v, 8, r.number);
  setU64(v, 16, r.offsetBytes);
  v.setUint32(24, r.lengthBytes);
  if (dataBytes > 0) out.set(r.data, RECORD_HEADER_BYTES);
  v.setUint32(28, crc32(out));
  return out;
}

/** What decodeRecord found at an offset. */
export type Decoded =
  | { ok: true; record: JournalRecord; nextOffset: number }
  /** Not a whole, checked record: fewer bytes than it needs, a bad magic or kind, or a CRC mismatch. */
  | { ok: false; why: string };

/** Decodes the record starting at `offset` of a segment's bytes (data is a view, not a copy). */
export function decodeRecord(bytes: Uint8Array, offset: number): Decoded {
  if (bytes.length - offset < RECORD_HEADER_BYTES) return { ok: false, why: "a partial header" };
  const v = new DataView(bytes.buffer, bytes.byteOffset + offset, RECORD_HEADER_BYTES);
  if (v.getUint32(0) !== JOURNAL_MAGIC) return { ok: false, why: "no record header" };
  const code = v.getUint8(4);
  const kind = kindOfCode(code);
  if (kind === undefined) return { ok: false, why: `unknown record kind ${code}` };
  const lengthBytes = v.getUint32(24);
  const end = offset + recordBytes(kind, lengthBytes);
  if (end > bytes.length) return { ok: false, why: "a partial record" };
  const header = bytes.slice(offset, offset + RECORD_HEADER_BYTES);
  new DataView(header.buffer).setUint32(28, 0);
  let crc = crc32(header);
  const data = bytes.subarray(offset + RECORD_HEADER_BYTES, end);
  if (data.length > 0) crc = crc32(data, crc);
  if (crc !== v.getUint32(28)) return { ok: false, why: "a CRC mismatch" };
  return {
    ok: true,
    record: { kind, number: getU64(v, 8), offsetBytes: getU64(v, 16), lengthBytes, data },
    nextOffset: end,
  };
}

/**
 * True when a checked record numbered `min` or above starts at or after `from` (a record of this
 * journal that a bad one hides): a torn tail, zeros and a reused file's stale records (all numbered
 * below the segment's first) have none.
 */
export function anyRecordNumberedFrom(bytes: Uint8Array, from: number, min: number): boolean {
  for (let at = from; at + RECORD_HEADER_BYTES <= bytes.length; at++) {
    if (bytes[at] !== 0x4c || bytes[at + 1] !== 0x53) continue;
    const d = decodeRecord(bytes, at);
    if (d.ok && d.record.number >= min) return true;
  }
  return false;
}

/** Bytes of the torn record at `at` (what its header claims, or a header's worth when it is torn too). */
export function tornRecordBytes(bytes: Uint8Array, at: number): number {
  const rest = bytes.length - at;
  if (rest < RECORD_HEADER_BYTES) return rest;
  const v = new DataView(bytes.buffer, bytes.byteOffset + at, RECORD_HEADER_BYTES);
  const kind = kindOfCode(v.getUint8(4));
  if (v.getUint32(0) !== JOURNAL_MAGIC || kind === undefined) return RECORD_HEADER_BYTES;
  return Math.min(rest, recordBytes(kind, v.getUint32(24)));
}
