/**
 * @module
 * Every check one whole log object allows, as a list of problems (empty: the object is good):
 * size as listed, header entries well formed, a trailer that is exactly one well-formed trailer
 * naming this object, the whole-object CRC, the header CRC and every data sector's CRC (trailer
 * version 2). `lsvd verify` runs it over every object; other checkers (sector-CRC coverage, GC)
 * reuse it so there is one definition of a good object.
 */

import type { SectorCipher } from "../crypto/sector_cipher.ts";
import {
  claimedTrailerBytes,
  dataBytesOf,
  decodeHeader,
  decodeTrailer,
  type Extent,
  firstBadSector,
  FormatError,
  HEADER_BYTES,
  SECTOR_BYTES,
  type Trailer,
  verifyHeader,
} from "../format/object.ts";
import type { LoggedObject } from "./log_state.ts";

export interface ObjectVerdict {
  /** Empty when the object is good. */
  problems: string[];
  /** Undefined when the object has none or it could not be decoded. */
  trailer: Trailer | undefined;
  entries: Extent[];
}

export interface VerifyOptions {
  /** An object without a trailer is a problem (lsvd >= 0.1 always writes one), not just unverifiable. */
  requireTrailer: boolean;
  /** An encrypted volume's key: every data sector is also decrypted and its tag checked. */
  cipher?: SectorCipher | undefined;
}

/** Checks one object's bytes (the whole object, fetched by the caller). */
export function verifyObject(o: LoggedObject, bytes: Uint8Array, options: VerifyOptions): ObjectVerdict {
  const verdict: ObjectVerdict = { problems: [], trailer: undefined, entries: [] };
  const problem = (text: string) => verdict.problems.push(text);
  if (bytes.length !== o.sizeBytes) {
    problem(`read ${bytes.length} bytes but the object is listed with ${o.sizeBytes} (truncated or changed)`);
  }
  if (bytes.length < HEADER_BYTES) {
    problem(`it is ${bytes.length} bytes, shorter than the ${HEADER_BYTES}-byte header (truncated)`);
    return verdict;
  }
  try {
    verdict.entries = decodeHeader(bytes);
  } catch (e) {
    problem(`its header is malformed: ${(e as Error).message}`);
    return verdict;
  }
  const dataEnd = HEADER_BYTES + dataBytesOf(verdict.entries);
  if (bytes.length < dataEnd) {
    problem(
      `it is ${bytes.length} bytes but its header promises ${dataEnd} bytes of header and data (truncated)`,
    );
    return verdict;
  }
  if (bytes.length === dataEnd) {
    if (options.requireTrailer) problem("it has no trailer (truncated, or not written by lsvd)");
    return verdict;
  }
  const trailerBytes = bytes.subarray(dataEnd);
  if (trailerBytes.length < 4 || claimedTrailerBytes(trailerBytes) !== trailerBytes.length) {
    problem(
      `${trailerBytes.length} bytes follow the data but the trailer claims ${
        trailerBytes.length < 4 ? "nothing readable" : claimedTrailerBytes(trailerBytes)
      } (truncated or damaged)`,
    );
    return verdict;
  }
  let trailer: Trailer;
  try {
    trailer = decodeTrailer(trailerBytes);
  } catch (e) {
    problem(`its trailer is malformed: ${(e as Error).message}`);
    return verdict;
  }
  verdict.trailer = trailer;
  checkTrailer(o, bytes, dataEnd, trailer, problem);
  if (options.cipher !== undefined) {
    checkSeal(options.cipher, bytes.subarray(HEADER_BYTES, dataEnd), trailer, problem);
  }
  return verdict;
}

/** With the key: every data sector authenticates (a sector the CRCs pass may still be forged). */
function checkSeal(
  cipher: SectorCipher,
  data: Uint8Array,
  trailer: Trailer,
  problem: (text: string) => void,
) {
  if (data.length === 0) return;
  const seal = trailer.sectorCrcs?.seal;
  if (seal === undefined) {
    problem("it is not encrypted but the volume is (not written by lsvd with this volume's key)");
    return;
  }
  const scratch = new Uint8Array(SECTOR_BYTES);
  const bad: number[] = [];
  for (let k = 0; k < data.length / SECTOR_BYTES; k++) {
    const at = { writerEpoch: seal.writerEpoch, sequence: seal.sequence, firstIndex: k };
    if (cipher.open(at, data.subarray(k * SECTOR_BYTES, (k + 1) * SECTOR_BYTES), seal.tags, scratch) !== -1) {
      bad.push(k);
    }
  }
  if (bad.length === 0) return;
  const named = bad.slice(0, BAD_SECTORS_NAMED).join(", ");
  const more = bad.length > BAD_SECTORS_NAMED ? ` and ${bad.length - BAD_SECTORS_NAMED} more` : "";
  problem(`${bad.length} data sectors fail authentication (AES-256-GCM): ${named}${more}`);
}

function checkTrailer(
  o: LoggedObject,
  bytes: Uint8Array,
  dataEnd: number,
  trailer: Trailer,
  problem: (text: string) => void,
): void {
  if (trailer.sequence !== o.sequence) problem(`its trailer says it is object ${trailer.sequence}`);
  try {
    decodeTrailer(bytes.subarray(dataEnd), bytes.subarray(0, dataEnd));
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    problem("whole-object CRC mismatch: the object is damaged");
  }
  try {
    verifyHeader(bytes, trailer);
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    problem("header CRC mismatch: the header is damaged");
  }
  const entries = decodeHeader(bytes);
  if (
    trailer.origins !== undefined && trailer.origins.length !== entries.length + trailer.zeroRanges.length
  ) {
    problem("its trailer has origins for a different number of entries");
  }
  const crcs = trailer.sectorCrcs;
  if (crcs === undefined) return; // version 1: no sector CRCs to check
  const dataSectors = (dataEnd - HEADER_BYTES) / SECTOR_BYTES;
  if (crcs.length !== dataSectors) {
    problem(`its trailer has CRCs for ${crcs.length} data sectors, the object holds ${dataSectors}`);
    return;
  }
  const data = bytes.subarray(HEADER_BYTES, dataEnd);
  const bad: number[] = [];
  for (let from = 0; from < dataSectors;) {
    const k = firstBadSector(data.subarray(from * SECTOR_BYTES), from, crcs);
    if (k < 0) break;
    bad.push(from + k);
    from += k + 1;
  }
  if (bad.length === 0) return;
  const named = bad.slice(0, BAD_SECTORS_NAMED).map((s) => `${s} (disk byte ${diskAddressOf(entries, s)})`);
  const more = bad.length > BAD_SECTORS_NAMED ? ` and ${bad.length - BAD_SECTORS_NAMED} more` : "";
  problem(`${bad.length} data sectors fail their CRC: ${named.join(", ")}${more}`);
}

/** Bad sectors named in one problem line; the rest are counted. */
const BAD_SECTORS_NAMED = 4;

/** The disk byte address of data sector k of an object with these entries. */
function diskAddressOf(entries: readonly Extent[], sector: number): number {
  let k = sector;
  for (const e of entries) {
    const n = e.lengthBytes / SECTOR_BYTES;
    if (k < n) return e.addressBytes + k * SECTOR_BYTES;
    k -= n;
  }
  return -1;
}
