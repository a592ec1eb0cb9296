/**
 * @module
 * Pure encode/decode of a map checkpoint (`prefix checkpoint/<log-name>`): the extent map after
 * applying every log object up to and including `sequence`, so a restart reads one checkpoint and
 * the headers after it instead of every header. Only an accelerator: deleting it changes nothing.
 *
 *   checkpoint = "LSVDCKP1" version:u32 flags:u32 sequence:u64 volume-size:u64 writer-epoch:u64
 *                object-crc:u32 extent-count:u32 extent* crc:u32
 *   extent     = start-sector:u32 length-sectors:u32 sequence:u32 offset-sectors:u32   (4 KiB sectors)
 */

import { crc32 } from "./crc32.ts";
import { FormatError } from "./object.ts";
import { getU64, setU64 } from "../util/bytes.ts";

const MAGIC = new TextEncoder().encode("LSVDCKP1");
const VERSION = 1;
const FIXED_BYTES = 8 + 4 + 4 + 8 + 8 + 8 + 4 + 4;
const EXTENT_BYTES = 16;

export interface CheckpointMeta {
  sequence: number;
  volumeSizeBytes: number;
  writerEpoch: number;
  /** CRC-32 from the trailer of object `sequence`: ties the checkpoint to that exact object. */
  objectCrc32: number;
}

export interface Checkpoint extends CheckpointMeta {
  /** Flat (start, length, sequence, offset) quadruples in sectors, sorted by start. */
  extents: Uint32Array;
}

/**
 * Encodes a checkpoint from the map's extents given as runs of flat quadruples (the map's own
 * chunks, so no intermediate copy of the whole map is made).
 */
export function encodeCheckpoint(
  meta: CheckpointMeta,
  runs: Iterable<Uint32Array>,
  extentCount: number,
): Uint8Array {
  const bytes = new Uint8Array(FIXED_BYTES + extentCount * EXTENT_BYTES + 4);
  const v = new DataView(bytes.buffer);
  bytes.set(MAGIC, 0);
  v.setUint32(8, VERSION);
  v.setUint32(12, 0);
  setU64(v, 16, meta.sequence);
  setU64(v, 24, meta.volumeSizeBytes);
  setU64(v, 32, meta.writerEpoch);
  v.setUint32(40, meta.objectCrc32);
  v.setUint32(44, extentCount);
  let at = FIXED_BYTES;
  for (const run of runs) {
    for (let i = 0; i < run.length; i++, at += 4) v.setUint32(at, run[i]!);
  }
  const end = bytes.length - 4;
  if (at !== end) {
    throw new Error(`checkpoint holds ${(at - FIXED_BYTES) / EXTENT_BYTES} extents, not ${extentCount}`);
  }
  v.setUint32(end, crc32(bytes.subarray(0, end)));
  return bytes;
}

export function decodeCheckpoint(bytes: Uint8Array): Checkpoint {
  if (bytes.length < FIXED_BYTES + 4) throw new FormatError(`checkpoint is only ${bytes.length} bytes`);
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new FormatError("checkpoint has a bad magic number");
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  if (v.getUint32(8) !== VERSION) {
    throw new FormatError(`checkpoint version ${v.getUint32(8)} is not supported`);
  }
  const count = v.getUint32(44);
  if (bytes.length !== FIXED_BYTES + count * EXTENT_BYTES + 4) {
    throw new FormatError(
      `checkpoint is ${bytes.length} bytes, its header says ${FIXED_BYTES + count * EXTENT_BYTES + 4}`,
    );
  }
  const end = bytes.length - 4;
  if (crc32(bytes.subarray(0, end)) !== v.getUint32(end)) {
    throw new FormatError("checkpoint checksum mismatch");
  }
  const extents = new Uint32Array(count * 4);
  for (let i = 0; i < extents.length; i++) extents[i] = v.getUint32(FIXED_BYTES + i * 4);
  const sequence = getU64(v, 16);
  let prevEnd = 0;
  for (let i = 0; i < extents.length; i += 4) {
    const [start, length, seq] = [extents[i]!, extents[i + 1]!, extents[i + 2]!];
    if (start < prevEnd || length === 0 || seq < 1 || seq > sequence || start + length > 2 ** 32) {
      throw new FormatError(`checkpoint extent ${i / 4} is out of order or out of range`);
    }
    prevEnd = start + length;
  }
  return {
    sequence,
    volumeSizeBytes: getU64(v, 24),
    writerEpoch: getU64(v, 32),
    objectCrc32: v.getUint32(40),
    extents,
  };
}
