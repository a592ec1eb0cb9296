/**
 * @module
 * The sizes every layer shares, defined once, with the relations between them asserted at load
 * (TigerBeetle's constants.zig): the base format fixes the sector and header; lsvd's own bounds
 * follow from them.
 */

import { assert } from "./assert.ts";

/** The disk's sector and the unit of every address and length in the log (base format). */
export const SECTOR_BYTES = 4096;
/** Header entries per object (base format). */
export const HEADER_ENTRIES = 1024;
/** One entry: u64 address, u32 length (base format). */
export const ENTRY_BYTES = 12;
export const HEADER_BYTES = HEADER_ENTRIES * ENTRY_BYTES;
/** Largest data section lsvd writes: dense map regions keep u16 sector offsets within objects. */
export const OBJECT_DATA_BYTES_MAX = 256 * 1024 * 1024;
/** Sector indexes are u32 in the extent map and checkpoints: 16 TiB volumes. */
export const SECTOR_INDEX_MAX = 2 ** 32 - 1;
export const VOLUME_BYTES_MAX = (SECTOR_INDEX_MAX + 1) * SECTOR_BYTES;

assert(HEADER_BYTES === 12_288, "the base format's header is 12 KiB");
assert(HEADER_BYTES % SECTOR_BYTES !== 0 || HEADER_BYTES >= SECTOR_BYTES);
assert(OBJECT_DATA_BYTES_MAX / SECTOR_BYTES <= 2 ** 16, "dense offsets are u16");
assert(Number.isSafeInteger(VOLUME_BYTES_MAX));
