/**
 * @module
 * The object-store interface every backend implements (S3, local directory, in-memory).
 * The volume engine only ever talks to this interface, so a seeded simulation can drive
 * the real engine through the fault-injecting memory store.
 */

import { assertFail } from "../util/assert.ts";
import { createHash } from "node:crypto";

/** Why a store operation failed; the engine decides what to retry from this. */
export type StoreErrorCode =
  | "NotFound" // the key does not exist
  | "PreconditionFailed" // a conditional PUT's condition did not hold (key present, or another ETag)
  | "InvalidRange" // the byte range lies outside the object
  | "Transient" // worth retrying: 5xx, SlowDown, timeouts, connection resets
  | "Fatal"; // not worth retrying: bad credentials, missing bucket, crash of the store

export class StoreError extends Error {
  readonly code: StoreErrorCode;
  constructor(code: StoreErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "StoreError";
    this.code = code;
  }
}

export function isStoreError(e: unknown, code?: StoreErrorCode): e is StoreError {
  return e instanceof StoreError && (code === undefined || e.code === code);
}

export interface PutOptions {
  /**
   * Create-only: fail with PreconditionFailed when the key exists (S3 `If-None-Match: *`) holding
   * other bytes. Finding exactly these bytes already there succeeds, so retrying a PUT that landed
   * although its answer was lost is not mistaken for another writer.
   */
  ifNoneMatch?: boolean;
  /**
   * Conditional overwrite: store only while the key still has this ETag (S3 `If-Match`), else
   * PreconditionFailed (also when the key is missing). Finding exactly these bytes already there
   * succeeds, as for ifNoneMatch. This is how the writer lease is renewed and taken over.
   */
  ifMatch?: string;
}

export interface PutResult {
  /** The stored object's ETag, without quotes: the value to pass as ifMatch next time. */
  readonly etag: string;
}

/**
 * The ETag the local stores give an object: the MD5 of its bytes, lower-case hex, as S3 gives an
 * object written by one PutObject. Only equality matters; nothing depends on it being MD5.
 */
export function contentEtag(body: Uint8Array): string {
  return createHash("md5").update(body).digest("hex");
}

/**
 * A local store's PutResult whose ETag is hashed on first read, not on every PUT: MD5 of a 4 MiB log
 * object costs ~10 ms of the one JavaScript thread, and the log writer never reads it (only the
 * lease and fence, with small bodies, do). Read it before changing body, as right after the PUT.
 */
export function lazyPutResult(body: Uint8Array): PutResult {
  let etag: string | undefined;
  return {
    get etag(): string {
      return etag ??= contentEtag(body);
    },
  };
}

export interface ByteRange {
  offsetBytes: number;
  lengthBytes: number;
}

/** Asserts a range is well formed: callers (the engine) never ask for anything else. */
export function assertRange(range: ByteRange): void {
  // Messages are built only on failure: this runs on every GET.
  const { offsetBytes, lengthBytes } = range;
  if (!(Number.isSafeInteger(offsetBytes) && offsetBytes >= 0)) assertFail(`bad offset ${offsetBytes}`);
  if (!(Number.isSafeInteger(lengthBytes) && lengthBytes >= 1)) assertFail(`bad length ${lengthBytes}`);
}

export interface GetResult {
  body: Uint8Array;
  /** Size of the whole object, whatever range was asked for. */
  totalSizeBytes: number;
  /** The ETag of the version read; always present when the whole object was read. */
  etag?: string;
}

export interface HeadResult {
  sizeBytes: number;
  etag: string;
}

export interface ListOptions {
  prefix: string;
  /** Only keys that sort strictly after this one. */
  startAfter?: string;
  /** Page size; the store may return fewer. */
  maxKeys?: number;
}

export interface ListedObject {
  key: string;
  sizeBytes: number;
}

export interface ListPage {
  objects: ListedObject[];
  /** True when more keys follow; continue with startAfter = last key of this page. */
  isTruncated: boolean;
}

export interface ObjectStore {
  /** Human description for log lines, e.g. `the my-bucket bucket`. */
  readonly description: string;
  /**
   * Stores body under key. The store may read body until the returned promise settles, so callers
   * must not change it before then (lsvd's sealed objects never change); a store that keeps the
   * bytes longer (memory) copies them.
   */
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<PutResult>;
  /** Reads the whole object, or a byte range of it (InvalidRange when it starts past the end). */
  get(key: string, range?: ByteRange): Promise<GetResult>;
  /**
   * Optional: the bytes of a ranged GET (dest.length of them from offsetBytes) read into dest at
   * once, for a store that can do so without waiting on a network or a thread (the directory
   * store, when the object's file is already open). False means "ask get()", which is also the
   * answer to anything that went wrong (get() reports it, with retries); dest may then hold part
   * of the range. Lets a read of data the OS page cache holds finish without a promise hop or a
   * buffer of its own (docs/design/read-path.md).
   */
  readNow?(key: string, offsetBytes: number, dest: Uint8Array): boolean;
  /** Size and ETag of an object; NotFound when it is missing. */
  head(key: string): Promise<HeadResult>;
  /** One page of keys in ascending byte order. */
  list(options: ListOptions): Promise<ListPage>;
  /** Deleting a missing key is not an error. */
  delete(key: string): Promise<void>;
  /** Server-side copy; NotFound when the source is missing. */
  copy(sourceKey: string, destinationKey: string, options?: PutOptions): Promise<void>;
  /** Releases connections and timers (and those of every store inBucket() made). */
  close(): Promise<void>;
  /** The bucket's name, for a store that is one bucket. */
  readonly bucket?: string;
  /**
   * Optional: another bucket of the same store (same endpoint, credentials and settings), made
   * once per name and closed with this store. What a clone in one bucket reads its parent in
   * another through (docs/FORMAT.md "Clones"); a store without it has one namespace only.
   */
  inBucket?(bucket: string): ObjectStore;
  /**
   * Optional start-up probe: verifies the store is reachable and usable (bucket exists,
   * credentials work) and throws a Fatal StoreError with one clear sentence otherwise.
   */
  check?(): Promise<void>;
}

/** Lists every key under a prefix, page by page, in key order. */
export async function* listAll(
  store: ObjectStore,
  options: ListOptions,
): AsyncGenerator<ListedObject> {
  let startAfter = options.startAfter;
  for (;;) {
    const page = await store.list({
      prefix: options.prefix,
      maxKeys: options.maxKeys ?? 1000,
      ...(startAfter === undefined ? {} : { startAfter }),
    });
    for (const o of page.objects) yield o;
    const last = page.objects.at(-1);
    if (!page.isTruncated || last === undefined) return;
    startAfter = last.key;
  }
}
