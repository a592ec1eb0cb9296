/**
 * @module
 * Checks that what an endpoint answered is an S3 answer to the request S3Store made, before the
 * store trusts it. The SDK turns any 200 into an output object: an HTML page from a web server, a
 * captive portal or a mistyped endpoint becomes an empty key list, a PUT "succeeds" without an ETag
 * and a ranged GET hands back the page as object bytes. Unchecked, lsvd would acknowledge writes that
 * were never stored and later recover an empty volume, without a word.
 *
 * A malformed answer is Fatal (the endpoint is not the S3 service it should be); a body shorter
 * than its own headers announce is Transient (a transfer cut short, worth another try).
 */

import { compareKeys } from "./key_order.ts";
import type { ByteRange, ListPage, StoreErrorCode } from "./store.ts";

/** A rejected answer; S3Store turns it into a StoreError naming the action. */
export class BadAnswer extends Error {
  readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, why: string) {
    super(why);
    this.name = "BadAnswer";
    this.code = code;
  }
}

/** The parts of a ListObjectsV2 output the check reads (the SDK's type, loosened for tests). */
export interface ListAnswer {
  Name?: string | undefined;
  KeyCount?: number | undefined;
  IsTruncated?: boolean | undefined;
  Contents?: { Key?: string | undefined; Size?: number | undefined }[] | undefined;
}

export interface ListRequest {
  bucket: string;
  prefix: string;
  startAfter: string | undefined;
  maxKeys: number;
}

/** A ListBucketResult for this bucket whose keys are under the prefix, after startAfter, ascending. */
export function checkListAnswer(answer: ListAnswer, request: ListRequest): ListPage {
  if (answer.Name === undefined) throw new BadAnswer("Fatal", "the answer is not an S3 ListBucketResult");
  if (answer.Name !== request.bucket) {
    throw new BadAnswer("Fatal", `the answer lists bucket "${answer.Name}" instead`);
  }
  const contents = answer.Contents ?? [];
  if (answer.KeyCount !== undefined && answer.KeyCount !== contents.length) {
    throw new BadAnswer("Fatal", `the answer counts ${answer.KeyCount} keys but holds ${contents.length}`);
  }
  if (contents.length > request.maxKeys) {
    throw new BadAnswer(
      "Fatal",
      `the answer holds ${contents.length} keys, more than the ${request.maxKeys} asked for`,
    );
  }
  const isTruncated = answer.IsTruncated === true;
  if (isTruncated && contents.length === 0) {
    throw new BadAnswer("Fatal", "the answer says more keys follow but holds none");
  }
  let previous = request.startAfter;
  const objects = contents.map(({ Key: key, Size: sizeBytes }) => {
    if (
      key === undefined || sizeBytes === undefined || !(Number.isSafeInteger(sizeBytes) && sizeBytes >= 0)
    ) {
      throw new BadAnswer("Fatal", "the answer has an entry without a key or size");
    }
    if (!key.startsWith(request.prefix)) {
      throw new BadAnswer("Fatal", `the answer holds key "${key}", which is not under the prefix`);
    }
    if (previous !== undefined && previous !== "" && compareKeys(key, previous) <= 0) {
      throw new BadAnswer("Fatal", `the answer holds key "${key}" out of order`);
    }
    previous = key;
    return { key, sizeBytes };
  });
  return { objects, isTruncated };
}

/** A stored PUT (or copy) comes back with the new object's ETag. */
export function checkWriteAnswer(eTag: string | undefined): void {
  if (eTag === undefined || eTag === "" || eTag === '""') {
    throw new BadAnswer("Fatal", "the answer has no ETag, so the write is not confirmed");
  }
}

export interface GetAnswer {
  ContentRange?: string | undefined;
  ContentLength?: number | undefined;
}

/**
 * The whole object's size after checking the body is what was asked for: for a range, a
 * `Content-Range: bytes a-b/total` starting at the offset and ending at the range's end or the
 * object's, with a body of exactly that length; without one, a body of the announced length.
 */
export function checkGetAnswer(answer: GetAnswer, range: ByteRange | undefined, bodyBytes: number): number {
  if (answer.ContentLength !== undefined && answer.ContentLength !== bodyBytes) {
    throw new BadAnswer(
      "Transient",
      `the answer was cut short (${bodyBytes} of ${answer.ContentLength} bytes arrived)`,
    );
  }
  if (range === undefined) return bodyBytes;
  const asked = `${range.offsetBytes}-${range.offsetBytes + range.lengthBytes - 1}`;
  const match = answer.ContentRange?.match(/^bytes (\d+)-(\d+)\/(\d+)$/);
  if (!match) {
    throw new BadAnswer("Fatal", `the answer to a GET of bytes ${asked} has no Content-Range`);
  }
  const [first, last, total] = [Number(match[1]), Number(match[2]), Number(match[3])];
  const lastWanted = Math.min(range.offsetBytes + range.lengthBytes, total) - 1;
  if (first !== range.offsetBytes || last !== lastWanted) {
    throw new BadAnswer("Fatal", `the answer to a GET of bytes ${asked} holds bytes ${first}-${last}`);
  }
  if (bodyBytes !== last - first + 1) {
    throw new BadAnswer("Fatal", `the answer to a GET of bytes ${asked} holds ${bodyBytes} bytes`);
  }
  return total;
}
