/**
 * @module
 * Reads what one stored log object says -- its header entries and its trailer -- with every check
 * the format allows: header length, entries aligned, sizes consistent, trailer well formed and
 * naming this object, and (trailer version 2) the header's CRC. A damaged header is never
 * returned, so recovery never applies one. Small objects are fetched whole and checked whole.
 */

import {
  claimedTrailerBytes,
  decodeHeader,
  decodeTrailer,
  type Extent,
  FormatError,
  HEADER_BYTES,
  type SectorCrcs,
  type Trailer,
  TRAILER_GUESS_BYTES,
  TRAILER_MAGIC,
  trailerBytesOf,
  verifyHeader,
} from "../format/object.ts";
import { isStoreError, type ObjectStore } from "../store/store.ts";
import { LsvdError, messageOf } from "../util/errors.ts";
import type { LoggedObject } from "./log_state.ts";

/** What replay needs from one object. */
export interface ObjectSummary {
  entries: Extent[];
  zeroRanges: Extent[];
  /** Undefined for objects without a trailer (written by tools that know only the base format). */
  trailer: Trailer | undefined;
}

/** Objects up to this size are read with one GET and their whole-object CRC checked. */
const WHOLE_READ_BYTES_MAX = 64 * 1024;

/**
 * Reads and checks one object's header and trailer. Transient store errors propagate (the caller
 * retries); anything wrong with the bytes becomes an LsvdError of kind "data" naming the key.
 */
export async function readObjectSummary(store: ObjectStore, o: LoggedObject): Promise<ObjectSummary> {
  try {
    if (o.sizeBytes < HEADER_BYTES) {
      throw new FormatError(`object is ${o.sizeBytes} bytes, shorter than the ${HEADER_BYTES}-byte header`);
    }
    if (o.sizeBytes <= WHOLE_READ_BYTES_MAX) return await readWhole(store, o);
    const tailBytes = Math.min(o.sizeBytes - HEADER_BYTES, TRAILER_GUESS_BYTES);
    const [head, tail] = await Promise.all([
      store.get(o.key, { offsetBytes: 0, lengthBytes: HEADER_BYTES }),
      store.get(o.key, { offsetBytes: o.sizeBytes - tailBytes, lengthBytes: tailBytes }),
    ]);
    checkLength(head.body, HEADER_BYTES, o);
    checkLength(tail.body, tailBytes, o);
    const entries = decodeHeader(head.body);
    const trailerBytes = trailerBytesOf(entries, o.sizeBytes);
    if (trailerBytes === 0) return { entries, zeroRanges: [], trailer: undefined };
    const trailerBody = trailerBytes <= tailBytes
      ? tail.body.subarray(tailBytes - trailerBytes)
      : (await store.get(o.key, { offsetBytes: o.sizeBytes - trailerBytes, lengthBytes: trailerBytes })).body;
    checkLength(trailerBody, trailerBytes, o);
    return summarize(o, head.body, entries, trailerBody, undefined);
  } catch (e) {
    throw asDataError(o, e);
  }
}

/**
 * Reads one object's per-sector CRC table from its trailer with one suffix GET (two when the
 * trailer is longer than TRAILER_GUESS_BYTES). Undefined when the object carries no table (a
 * version-1 trailer, or no trailer: older lsvd or another writer). When no trailer is found where
 * the object's last four bytes point, the header decides whether it ever had one, so a damaged
 * trailer is reported rather than taken for a missing one. Errors as for readObjectSummary.
 */
export async function readSectorCrcs(
  store: ObjectStore,
  o: LoggedObject,
  guessBytes = TRAILER_GUESS_BYTES,
): Promise<SectorCrcs | undefined> {
  try {
    if (o.sizeBytes < HEADER_BYTES) {
      throw new FormatError(`object is ${o.sizeBytes} bytes, shorter than the ${HEADER_BYTES}-byte header`);
    }
    const tailBytes = Math.min(o.sizeBytes - HEADER_BYTES, guessBytes);
    if (tailBytes < TRAILER_MAGIC.length + 8) return await tableFromHeader(store, o);
    const tail = await store.get(o.key, { offsetBytes: o.sizeBytes - tailBytes, lengthBytes: tailBytes });
    checkLength(tail.body, tailBytes, o);
    const claimed = claimedTrailerBytes(tail.body);
    if (claimed < TRAILER_MAGIC.length + 8 || claimed > o.sizeBytes - HEADER_BYTES) {
      return await tableFromHeader(store, o);
    }
    const trailerBody = claimed <= tailBytes
      ? tail.body.subarray(tailBytes - claimed)
      : (await store.get(o.key, { offsetBytes: o.sizeBytes - claimed, lengthBytes: claimed })).body;
    checkLength(trailerBody, claimed, o);
    if (!startsWithMagic(trailerBody)) return await tableFromHeader(store, o);
    const trailer = decodeTrailer(trailerBody);
    if (trailer.sequence !== o.sequence) {
      throw new FormatError(`its trailer says it is object ${trailer.sequence}`);
    }
    return trailer.sectorCrcs;
  } catch (e) {
    throw asDataError(o, e);
  }
}

/** No trailer where the last four bytes point: fine only if the header says there is none. */
async function tableFromHeader(store: ObjectStore, o: LoggedObject): Promise<undefined> {
  const head = await store.get(o.key, { offsetBytes: 0, lengthBytes: HEADER_BYTES });
  checkLength(head.body, HEADER_BYTES, o);
  const trailerBytes = trailerBytesOf(decodeHeader(head.body), o.sizeBytes);
  if (trailerBytes > 0) {
    throw new FormatError(
      `its ${trailerBytes}-byte trailer is damaged (no trailer where its length field points)`,
    );
  }
  return undefined;
}

function startsWithMagic(bytes: Uint8Array): boolean {
  for (let i = 0; i < MAGIC_BYTES.length; i++) if (bytes[i] !== MAGIC_BYTES[i]) return false;
  return true;
}

const MAGIC_BYTES = new TextEncoder().encode(TRAILER_MAGIC);

/** Damaged or missing bytes become LsvdError "data" naming the object; transient errors pass through. */
function asDataError(o: LoggedObject, e: unknown): unknown {
  if (isStoreError(e, "Transient")) return e;
  if (e instanceof FormatError || isStoreError(e, "InvalidRange") || isStoreError(e, "NotFound")) {
    return new LsvdError("data", `Cannot read object "${o.key}": ${messageOf(e)}`, { cause: e });
  }
  return e;
}

async function readWhole(store: ObjectStore, o: LoggedObject): Promise<ObjectSummary> {
  const { body } = await store.get(o.key);
  checkLength(body, o.sizeBytes, o);
  const entries = decodeHeader(body);
  const trailerBytes = trailerBytesOf(entries, body.length);
  if (trailerBytes === 0) return { entries, zeroRanges: [], trailer: undefined };
  const dataEnd = body.length - trailerBytes;
  return summarize(o, body, entries, body.subarray(dataEnd), body.subarray(0, dataEnd));
}

function summarize(
  o: LoggedObject,
  header: Uint8Array,
  entries: Extent[],
  trailerBody: Uint8Array,
  objectPrefix: Uint8Array | undefined,
): ObjectSummary {
  if (claimedTrailerBytes(trailerBody) !== trailerBody.length) {
    throw new FormatError(
      `${trailerBody.length} bytes follow the data but the trailer claims ${
        claimedTrailerBytes(trailerBody)
      }`,
    );
  }
  const trailer = decodeTrailer(trailerBody, objectPrefix);
  verifyHeader(header, trailer);
  if (trailer.sequence !== o.sequence) {
    throw new FormatError(`its trailer says it is object ${trailer.sequence}`);
  }
  if (
    trailer.origins !== undefined && trailer.origins.length !== entries.length + trailer.zeroRanges.length
  ) {
    throw new FormatError("its trailer has origins for a different number of entries");
  }
  return { entries, zeroRanges: trailer.zeroRanges, trailer };
}

function checkLength(body: Uint8Array, expected: number, o: LoggedObject): void {
  if (body.length !== expected) {
    throw new FormatError(`read ${body.length} of ${expected} bytes of "${o.key}" (truncated or changed)`);
  }
}
