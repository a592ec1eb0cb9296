/**
 * @module
 * CRC-32 as zlib, gzip, PNG and Python's `zlib.crc32` compute it (IEEE 802.3 polynomial, reflected),
 * the checksum in object trailers and checkpoints. Chosen over CRC-32C because every language's
 * standard library has it (disaster-recovery readers need nothing extra) and Deno's node:zlib
 * computes it natively at tens of GB/s, which keeps sealing objects off the write path's profile.
 */

import { crc32 as zlibCrc32 } from "node:zlib";

/** Continues a running CRC (start with 0) over bytes. */
export function crc32(bytes: Uint8Array, crc = 0): number {
  return zlibCrc32(bytes, crc) >>> 0;
}
