/**
 * @module
 * The ObjectStore over any S3-compatible service (AWS S3, Cloudflare R2, Ceph RGW, MinIO)
 * through `@aws-sdk/client-s3`. It owns the parts the SDK leaves to callers: a bound on
 * concurrent requests, retries with backoff on 5xx/SlowDown/timeouts, and the mapping of
 * every failure onto the five StoreError codes with a message a user can act on.
 *
 * Create-only writes use `If-None-Match: *`. A 412 on such a write is checked against the
 * stored bytes: RGW sometimes answers a racing conditional PUT with 500 and then 412 on the
 * retry, and a write whose acknowledgement was lost also comes back as 412 when retried.
 * When the stored object is byte-identical to ours, the write did land and succeeds.
 */

import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import * as http from "node:http";
import * as https from "node:https";
import {
  assertRange,
  type ByteRange,
  type GetResult,
  type ListOptions,
  type ListPage,
  type ObjectStore,
  type PutOptions,
  StoreError,
} from "./store.ts";

export interface S3StoreOptions {
  bucket: string;
  /** e.g. `http://127.0.0.1:7480`; default the SDK's AWS endpoint for the region. */
  endpoint?: string;
  /** Default AWS_REGION, then AWS_DEFAULT_REGION, then `us-east-1`; R2 takes `auto`. */
  region?: string;
  /** Path-style URLs (`endpoint/bucket/key`), needed by RGW and MinIO; default false. */
  forcePathStyle?: boolean;
  /** Concurrent requests and sockets; default 100. */
  connections?: number;
  /** Attempts per operation, first try included; default 8. */
  maxAttempts?: number;
  /** First retry delay; doubles per attempt up to retryDelayMsMax, with jitter. Default 100. */
  retryDelayMs?: number;
  /** Default 5,000. */
  retryDelayMsMax?: number;
  /** Socket connect bound per attempt; default 5,000. */
  connectTimeoutMs?: number;
  /** Socket inactivity bound per attempt; default 30,000. */
  requestTimeoutMs?: number;
  /** Default: the SDK's chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, instance roles). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/** What one operation is doing, for error messages: `Cannot <action>: <cause>`. */
interface Action {
  text: string;
  /** The operation targets an object (a 404 then means NotFound, unless the bucket is missing). */
  objectKey?: string;
}

interface SdkError {
  name?: string;
  Code?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
}

const TRANSIENT_NAMES = new Set([
  "SlowDown",
  "RequestTimeout",
  "RequestTimeTooSkewed",
  "InternalError",
  "ServiceUnavailable",
  "Throttling",
  "ThrottlingException",
  "TooManyRequestsException",
  "TimeoutError",
  "RequestTimeoutException",
]);

const CREDENTIAL_NAMES = new Set([
  "SignatureDoesNotMatch",
  "InvalidAccessKeyId",
  "AccessDenied",
  "InvalidToken",
  "ExpiredToken",
  "AuthorizationHeaderMalformed",
]);

export class S3Store implements ObjectStore {
  readonly description: string;
  readonly bucket: string;
  #client: S3Client;
  #endpoint: string;
  #maxAttempts: number;
  #retryDelayMs: number;
  #retryDelayMsMax: number;
  #slots: Semaphore;

  constructor(options: S3StoreOptions) {
    checkOptions(options);
    this.bucket = options.bucket;
    this.description = `the ${options.bucket} bucket`;
    this.#endpoint = options.endpoint ?? "the AWS S3 endpoint";
    this.#maxAttempts = options.maxAttempts ?? 8;
    this.#retryDelayMs = options.retryDelayMs ?? 100;
    this.#retryDelayMsMax = options.retryDelayMsMax ?? 5_000;
    const connections = options.connections ?? 100;
    this.#slots = new Semaphore(connections);
    this.#client = new S3Client(clientConfig(options, connections));
  }

  /**
   * Checks at startup that the bucket exists and the credentials work, so a mistake becomes one
   * clear Fatal error instead of failures deep inside the engine.
   */
  async checkBucket(): Promise<void> {
    const action = { text: `open bucket "${this.bucket}" at ${this.#endpoint}` };
    try {
      await this.#send(action, () => this.#client.send(new HeadBucketCommand({ Bucket: this.bucket })));
    } catch (error) {
      if (error instanceof StoreError && error.code !== "Fatal") {
        throw new StoreError("Fatal", error.message, { cause: error });
      }
      throw error;
    }
  }

  /** The ObjectStore start-up probe: same as checkBucket(). */
  check(): Promise<void> {
    return this.checkBucket();
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<void> {
    const copy = body; // callers leave it unchanged until put() settles (ObjectStore.put)
    const ifNoneMatch = options.ifNoneMatch === true;
    const action = { text: `write object "${key}" to bucket "${this.bucket}"`, objectKey: key };
    try {
      await this.#send(action, () =>
        this.#client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: copy,
            ContentLength: copy.length,
            ...(ifNoneMatch ? { IfNoneMatch: "*" } : {}),
          }),
        ));
    } catch (error) {
      if (!(error instanceof StoreError && error.code === "PreconditionFailed")) throw error;
      if (!(await this.#holds(key, copy))) throw error;
    }
  }

  get(key: string, range?: ByteRange): Promise<GetResult> {
    const action = { text: `read object "${key}" from bucket "${this.bucket}"`, objectKey: key };
    if (range !== undefined) assertRange(range);
    const header = range === undefined
      ? {}
      : { Range: `bytes=${range.offsetBytes}-${range.offsetBytes + range.lengthBytes - 1}` };
    return this.#send(action, async () => {
      const response = await this.#client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, ...header }),
      );
      const body = response.Body === undefined
        ? new Uint8Array(0)
        : await response.Body.transformToByteArray();
      const totalSizeBytes = totalSize(response.ContentRange, response.ContentLength, body.length);
      return { body, totalSizeBytes };
    });
  }

  list(options: ListOptions): Promise<ListPage> {
    const action = { text: `list keys under "${options.prefix}" in bucket "${this.bucket}"` };
    return this.#send(action, async () => {
      const response = await this.#client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: options.prefix,
          ...(options.startAfter ? { StartAfter: options.startAfter } : {}),
          MaxKeys: options.maxKeys ?? 1000,
        }),
      );
      const objects = (response.Contents ?? []).map((o) => ({ key: o.Key ?? "", sizeBytes: o.Size ?? 0 }));
      return { objects, isTruncated: response.IsTruncated === true };
    });
  }

  async delete(key: string): Promise<void> {
    const action = { text: `delete object "${key}" from bucket "${this.bucket}"` };
    await this.#send(
      action,
      () => this.#client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })),
    );
  }

  async copy(sourceKey: string, destinationKey: string, options: PutOptions = {}): Promise<void> {
    if (options.ifNoneMatch === true) {
      // CopyObject has no create-only condition on S3 or RGW: read and write create-only instead.
      const source = await this.get(sourceKey);
      return await this.put(destinationKey, source.body, { ifNoneMatch: true });
    }
    const action = {
      text: `copy object "${sourceKey}" to "${destinationKey}" in bucket "${this.bucket}"`,
      objectKey: sourceKey,
    };
    const copySource = `${this.bucket}/${encodeURIComponent(sourceKey).replaceAll("%2F", "/")}`;
    await this.#send(
      action,
      () =>
        this.#client.send(
          new CopyObjectCommand({ Bucket: this.bucket, Key: destinationKey, CopySource: copySource }),
        ),
    );
  }

  close(): Promise<void> {
    this.#client.destroy();
    return Promise.resolve();
  }

  /** True when key holds exactly these bytes (our own create-only write landed earlier). */
  async #holds(key: string, body: Uint8Array): Promise<boolean> {
    try {
      const stored = await this.get(key);
      return stored.body.length === body.length && stored.body.every((b, i) => b === body[i]);
    } catch (error) {
      if (error instanceof StoreError && error.code === "NotFound") return false;
      throw error;
    }
  }

  /** Runs one request within the connection bound, retrying what is worth retrying. */
  async #send<T>(action: Action, request: () => Promise<T>): Promise<T> {
    await this.#slots.acquire();
    try {
      for (let attempt = 1;; attempt++) {
        try {
          return await request();
        } catch (error) {
          const mapped = mapError(error, action, this.#endpoint);
          if (mapped.code !== "Transient" || attempt >= this.#maxAttempts) throw mapped;
          await sleep(this.#backoffMs(attempt));
        }
      }
    } finally {
      this.#slots.release();
    }
  }

  #backoffMs(attempt: number): number {
    const ceiling = Math.min(this.#retryDelayMsMax, this.#retryDelayMs * 2 ** (attempt - 1));
    return ceiling * (0.5 + Math.random() / 2);
  }
}

function checkOptions(options: S3StoreOptions): void {
  if (!options.bucket) throw new StoreError("Fatal", "Cannot open the S3 store: no bucket was given");
  const connections = options.connections ?? 100;
  if (!(Number.isInteger(connections) && connections >= 1)) {
    throw new StoreError(
      "Fatal",
      `Cannot open the S3 store: connections ${connections} is not a positive integer`,
    );
  }
  const attempts = options.maxAttempts ?? 8;
  if (!(Number.isInteger(attempts) && attempts >= 1)) {
    throw new StoreError(
      "Fatal",
      `Cannot open the S3 store: maxAttempts ${attempts} is not a positive integer`,
    );
  }
}

function clientConfig(options: S3StoreOptions, connections: number): S3ClientConfig {
  const agent = { keepAlive: true, maxSockets: connections };
  const region = options.region ?? Deno.env.get("AWS_REGION") ?? Deno.env.get("AWS_DEFAULT_REGION") ??
    "us-east-1";
  return {
    region,
    forcePathStyle: options.forcePathStyle ?? false,
    maxAttempts: 1, // S3Store retries itself, so it sees every attempt's outcome
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: {
      httpAgent: new http.Agent(agent),
      httpsAgent: new https.Agent(agent),
      connectionTimeout: options.connectTimeoutMs ?? 5_000,
      requestTimeout: options.requestTimeoutMs ?? 30_000,
    },
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
  };
}

/** The whole object's size: from `Content-Range: bytes a-b/total` when ranged, else the length. */
function totalSize(
  contentRange: string | undefined,
  contentLength: number | undefined,
  bodyBytes: number,
): number {
  const match = contentRange?.match(/\/(\d+)\s*$/);
  if (match) return Number(match[1]);
  return contentLength ?? bodyBytes;
}

/** Maps any SDK or network failure onto a StoreError with a `Cannot <action>: <cause>` message. */
export function mapError(error: unknown, action: Action, endpoint: string): StoreError {
  if (error instanceof StoreError) return error;
  const e = (error ?? {}) as SdkError;
  const name = e.name ?? e.Code ?? "";
  const status = e.$metadata?.httpStatusCode;
  const fail = (code: StoreError["code"], cause: string) =>
    new StoreError(code, `Cannot ${action.text}: ${cause}`, { cause: error });
  if (name === "NoSuchBucket" || (status === 404 && action.objectKey === undefined && name !== "NoSuchKey")) {
    return fail("Fatal", "the bucket does not exist");
  }
  if (name === "NoSuchKey" || (status === 404 && action.objectKey !== undefined)) {
    return fail("NotFound", "no such key");
  }
  if (name === "PreconditionFailed" || status === 412) {
    return fail("PreconditionFailed", "the key already exists");
  }
  if (name === "InvalidRange" || status === 416) return fail("InvalidRange", "the range is not satisfiable");
  if (CREDENTIAL_NAMES.has(name) || status === 403 || status === 401) {
    return fail("Fatal", `the credentials were rejected (${name || `HTTP ${status}`})`);
  }
  if (name === "CredentialsProviderError") {
    return fail("Fatal", "no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
  }
  if (TRANSIENT_NAMES.has(name) || status === 429 || (status !== undefined && status >= 500)) {
    return fail("Transient", `the server answered ${name || `HTTP ${status}`}`);
  }
  if (status === undefined) return fail("Transient", `cannot reach ${endpoint} (${networkCause(e)})`);
  return fail(
    "Fatal",
    `the server answered ${name || "an error"} (HTTP ${status}): ${e.message ?? ""}`.trim(),
  );
}

function networkCause(e: SdkError): string {
  return [e.code, e.name, e.message].filter((s) => s !== undefined && s !== "").join(": ") || "network error";
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A counting semaphore bounding requests in flight. */
class Semaphore {
  #free: number;
  #waiters: (() => void)[] = [];

  constructor(count: number) {
    this.#free = count;
  }

  acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  release(): void {
    const next = this.#waiters.shift();
    if (next) next();
    else this.#free++;
  }
}
