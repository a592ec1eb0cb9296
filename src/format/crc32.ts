/**
 * @module
 * CRC-32 as zlib, gzip, PNG and Python's `zlib.crc32` compute it (IEEE 802.3 polynomial, reflected),
 * the checksum in object trailers and checkpoints. Chosen over CRC-32C because every language's
 * standard library has it (disaster-recovery readers need nothing extra) and Deno's node:zlib
 * computes it natively at tens of GB/s, which keeps sealing objects off the write path's profile.
 *
 * `crc32After4K` extends a CRC by one 4 KiB sector whose own CRC is known, without reading the
 * sector again (zlib's crc32_combine for a fixed length): an object's whole-object CRC is then
 * chained from its header CRC and its per-sector CRCs, so sealing reads each data byte once.
 */

import { crc32 as zlibCrc32 } from "node:zlib";
import { SECTOR_BYTES } from "../util/constants.ts";

/** Continues a running CRC (start with 0) over bytes. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  return zlibCrc32(bytes, crc) >>> 0;
}

/**
 * The CRC of A followed by a 4 KiB sector S, from crc32(A) and crc32(S):
 * crc32(A||S) = Z(crc32(A)) xor crc32(S), where Z feeds 4,096 zero bytes through the bare CRC
 * register (linear over GF(2), so applied a byte of the input CRC at a time through four tables).
 */
export function crc32After4K(crcBefore: number, sectorCrc: number): number {
  const z = ZEROS_4K;
  return (z[crcBefore & 0xff]! ^ z[256 + ((crcBefore >>> 8) & 0xff)]! ^
    z[512 + ((crcBefore >>> 16) & 0xff)]! ^ z[768 + (crcBefore >>> 24)]! ^ sectorCrc) >>> 0;
}

/** Z (above) as four 256-entry tables, one per byte of the register. */
const ZEROS_4K: Uint32Array = zeroOperatorTables(SECTOR_BYTES);

function zeroOperatorTables(zeroBytes: number): Uint32Array {
  const step = new Uint32Array(256); // the reflected polynomial's byte table
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    step[n] = c >>> 0;
  }
  const basis = new Uint32Array(32); // Z of each single-bit register
  for (let bit = 0; bit < 32; bit++) {
    let r = (1 << bit) >>> 0;
    for (let i = 0; i < zeroBytes; i++) r = (step[r & 0xff]! ^ (r >>> 8)) >>> 0;
    basis[bit] = r;
  }
  const tables = new Uint32Array(4 * 256);
  for (let t = 0; t < 4; t++) {
    for (let b = 0; b < 256; b++) {
      let v = 0;
      for (let k = 0; k < 8; k++) if (b & (1 << k)) v ^= basis[t * 8 + k]!;
      tables[t * 256 + b] = v >>> 0;
    }
  }
  return tables;
}
