/**
 * @module
 * The one verified read of log-object data: a ranged GET of data sectors, its length checked, the
 * sectors checked against the object's per-sector CRC table (docs/design/integrity.md), and on
 * anything wrong with the bytes one fresh attempt (new GETs of data and table, since the kept table
 * may be the damaged part) before the read fails with LsvdError "data" naming the object and bytes.
 * The volume's read path, `lsvd export`, garbage collection and rollback all read data through
 * here, so they agree on what counts as damaged and say so in the same words.
 */

import {
  claimedTrailerBytes,
  decodeTrailer,
  firstBadSector,
  FormatError,
  SECTOR_BYTES,
  type SectorCrcs,
  sectorOffsetBytes,
  type Trailer,
  TRAILER_GUESS_BYTES,
} from "../format/object.ts";
import { type ByteRange, type GetResult, isStoreError, type ObjectStore } from "../store/store.ts";
import { isLsvdError, LsvdError, messageOf } from "../util/errors.ts";
import { openSectors } from "../crypto/object_cipher.ts";
import type { SectorCipher } from "../crypto/sector_cipher.ts";

/** An object's CRC table, or `null`: the object carries none (its data is read unverified). */
export type CrcTable = SectorCrcs | null;

/** Data sectors [offsetSectors, offsetSectors + lengthSectors) of one object. */
export interface SectorRange {
  offsetSectors: number;
  lengthSectors: number;
}

/** Where a read's CRC table comes from. */
export interface CrcSource {
  /**
   * The table for one attempt. `fresh` (the retry after a mismatch) asks the store again rather
   * than trusting a kept copy; `sizeBytes` is the object's size.
   */
  table(fresh: boolean, sizeBytes: number): Promise<CrcTable>;
  /** The table when it is at hand without a request (undefined: it is not). */
  kept?(): CrcTable | undefined;
  /** Keeps a table that came along with the data (see VerifiedRead.trailerAlong). */
  keep?(table: CrcTable): void;
}

export interface VerifiedRead {
  key: string;
  sequence: number;
  range: SectorRange;
  /** The object's size when known: its table then loads beside the data instead of after it. */
  sizeBytes: number | undefined;
  /** Null: nothing is checked (only the benchmark's verification-off comparison). */
  crcs: CrcSource | null;
  /** Parts of the range that must match (default all of it); the bytes between are read, unused. */
  checked?: readonly SectorRange[];
  /**
   * When the range ends within TRAILER_GUESS_BYTES of the object's end and no table is at hand,
   * read to the end: the tail is the trailer, so the table costs no second request.
   */
  trailerAlong?: boolean;
  /**
   * An encrypted volume's data key: the checked sectors are decrypted and authenticated (a sector
   * that fails is "data", retried fresh like a CRC mismatch). Needs `crcs` (the tags come with them).
   */
  cipher?: SectorCipher | undefined;
  /** With a cipher: also return the bytes as stored (`sealed`), so decrypt into a new buffer. */
  keepSealed?: boolean;
}

export interface VerifiedData {
  /** The data (decrypted when a cipher was given). */
  body: Uint8Array;
  /** The object's whole size (as the store reported it). */
  sizeBytes: number;
  /** With a cipher and keepSealed: the bytes as stored (what the disk cache keeps). */
  sealed?: Uint8Array;
}

/**
 * Reads and checks one range: GET, length, CRCs; on a "data" failure one fresh attempt, whose
 * failure is final. Store failures become LsvdErrors naming the object ("data" when the object or
 * range is missing, "unavailable" otherwise); anything else (assertions) passes through.
 */
export async function readVerified(
  store: ObjectStore,
  read: VerifiedRead,
): Promise<VerifiedData> {
  try {
    return await attempt(store, read, false);
  } catch (e) {
    if (!isLsvdError(e, "data")) throw e;
    return await attempt(store, read, true);
  }
}

async function attempt(
  store: ObjectStore,
  read: VerifiedRead,
  fresh: boolean,
): Promise<VerifiedData> {
  const along = fresh ? undefined : await withTrailer(store, read);
  if (along !== undefined) {
    checkRead(read, along.body, along.table);
    return opened(read, { body: along.body, sizeBytes: along.sizeBytes }, along.table);
  }
  const known = read.sizeBytes;
  const early = known === undefined ? undefined : read.crcs?.table(fresh, known);
  early?.catch(() => {}); // awaited below unless the data GET fails first
  const data = await getRange(store, read.key, {
    offsetBytes: sectorOffsetBytes(read.range.offsetSectors),
    lengthBytes: read.range.lengthSectors * SECTOR_BYTES,
  });
  if (read.crcs === null) return data;
  const table = await (early ?? read.crcs.table(fresh, data.sizeBytes));
  checkRead(read, data.body, table);
  return opened(read, data, table);
}

/** Checked data, decrypted when the volume is encrypted (only the checked parts; the rest reads as zeros). */
function opened(read: VerifiedRead, data: VerifiedData, table: CrcTable): VerifiedData {
  if (read.cipher === undefined) {
    if (table?.seal === undefined) return data;
    throw new LsvdError("invalid", `Cannot read object "${read.key}": it is encrypted and no key was given`);
  }
  const at = read.range.offsetSectors;
  if (read.checked === undefined) {
    const where = { key: read.key, offsetSectors: at, table };
    // In place unless the caller keeps the stored bytes too (a copy costs as much as decrypting).
    if (read.keepSealed !== true) {
      return { ...data, body: openSectors(read.cipher, where, data.body, data.body) };
    }
    return { ...data, body: openSectors(read.cipher, where, data.body), sealed: data.body };
  }
  const body = new Uint8Array(data.body.length);
  for (const part of read.checked) {
    const from = (part.offsetSectors - at) * SECTOR_BYTES;
    const to = from + part.lengthSectors * SECTOR_BYTES;
    const where = { key: read.key, offsetSectors: part.offsetSectors, table };
    body.set(openSectors(read.cipher, where, data.body.subarray(from, to)), from);
  }
  return { ...data, body, sealed: data.body };
}

function checkRead(read: VerifiedRead, body: Uint8Array, table: CrcTable): void {
  if (table === null) return; // no CRCs (older lsvd, other writers): read as stored
  const at = read.range.offsetSectors;
  for (const part of read.checked ?? [read.range]) {
    const from = (part.offsetSectors - at) * SECTOR_BYTES;
    checkDataSectors(
      read.key,
      body.subarray(from, from + part.lengthSectors * SECTOR_BYTES),
      part.offsetSectors,
      table,
    );
  }
}

/** A ranged GET, whole or failed: a short answer is "data" (truncated). */
async function getRange(
  store: ObjectStore,
  key: string,
  { offsetBytes, lengthBytes }: ByteRange,
): Promise<VerifiedData> {
  let result: GetResult;
  try {
    result = await store.get(key, { offsetBytes, lengthBytes });
  } catch (e) {
    throw storeFailure(key, e);
  }
  if (result.body.length !== lengthBytes) {
    throw new LsvdError(
      "data",
      `Cannot read object "${key}": got ${result.body.length} of ${lengthBytes} bytes at ${offsetBytes} (truncated)`,
    );
  }
  return { body: result.body, sizeBytes: result.totalSizeBytes };
}

/**
 * The trailerAlong read: the range plus the rest of the object, its table taken from the tail.
 * Undefined when it does not apply; when the tail holds no well-formed trailer of this object the
 * source decides, as for any other read.
 */
async function withTrailer(
  store: ObjectStore,
  read: VerifiedRead,
): Promise<(VerifiedData & { table: CrcTable }) | undefined> {
  const { crcs, sizeBytes } = read;
  if (read.trailerAlong !== true || crcs === null || sizeBytes === undefined) return undefined;
  const end = sectorOffsetBytes(read.range.offsetSectors + read.range.lengthSectors);
  if (sizeBytes <= end || sizeBytes - end > TRAILER_GUESS_BYTES || crcs.kept?.() !== undefined) {
    return undefined;
  }
  const offsetBytes = sectorOffsetBytes(read.range.offsetSectors);
  const whole = await getRange(store, read.key, { offsetBytes, lengthBytes: sizeBytes - offsetBytes });
  const dataBytes = read.range.lengthSectors * SECTOR_BYTES;
  const body = whole.body.subarray(0, dataBytes);
  const trailer = trailerOf(whole.body.subarray(dataBytes), read.sequence);
  if (trailer === undefined) return { body, sizeBytes, table: await crcs.table(false, sizeBytes) };
  const table = trailer.sectorCrcs ?? null;
  crcs.keep?.(table);
  return { body, sizeBytes, table };
}

function trailerOf(tail: Uint8Array, sequence: number): Trailer | undefined {
  const claimed = tail.length >= 8 ? claimedTrailerBytes(tail) : 0;
  if (claimed < 8 || claimed > tail.length) return undefined;
  try {
    const trailer = decodeTrailer(tail.subarray(tail.length - claimed));
    return trailer.sequence === sequence ? trailer : undefined;
  } catch (e) {
    if (e instanceof FormatError) return undefined;
    throw e;
  }
}

/** Store failures become LsvdErrors naming the object; anything else (assertions) passes through. */
export function storeFailure(key: string, e: unknown): unknown {
  if (!isStoreError(e)) return e;
  const kind = isStoreError(e, "NotFound") || isStoreError(e, "InvalidRange") ? "data" : "unavailable";
  return new LsvdError(kind, `Cannot read object "${key}": ${messageOf(e)}`, { cause: e });
}

/**
 * Checks data sectors [offsetSectors, +data.length/4 KiB) of object `key`, just read, against its
 * CRC table; throws LsvdError "data" naming the object and the byte range of the bad sectors.
 */
export function checkDataSectors(
  key: string,
  data: Uint8Array,
  offsetSectors: number,
  crcs: Uint32Array,
): void {
  const sectors = data.length / SECTOR_BYTES;
  if (offsetSectors + sectors > crcs.length) {
    throw new LsvdError(
      "data",
      `Cannot read object "${key}": its CRC table covers ${crcs.length} data sectors, not sector ${
        offsetSectors + sectors - 1
      }`,
    );
  }
  const first = firstBadSector(data, offsetSectors, crcs);
  if (first === -1) return;
  let last = first;
  for (let k = first + 1; k < sectors; k++) {
    if (
      firstBadSector(data.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES), offsetSectors + k, crcs) === 0
    ) {
      last = k;
    }
  }
  const from = sectorOffsetBytes(offsetSectors + first);
  const to = sectorOffsetBytes(offsetSectors + last + 1) - 1;
  throw new LsvdError(
    "data",
    `Cannot read object "${key}": bytes ${from}-${to} (data sectors ${offsetSectors + first}-${
      offsetSectors + last
    }) do not match their CRC-32; the stored object is damaged`,
  );
}
