/**
 * @module
 * The ObjectStore over any S3-compatible service (AWS S3, Cloudflare R2, Ceph RGW, MinIO)
 * through `@aws-sdk/client-s3`. It owns the parts the SDK leaves to callers: a bound on
 * concurrent requests, an enforced deadline on every request (deadline.ts), a check that every
 * answer is the S3 answer asked for (s3_answers.ts), and the mapping of every failure onto the
 * five StoreError codes with a message a user can act on.
 *
 * Each call is exactly one request: S3Store does not retry, and neither does the SDK
 * (maxAttempts 1). Callers retry Transient errors through a RetryingStore (retry.ts), the one retry
 * loop, which can wait out an outage of any length.
 *
 * Create-only writes use `If-None-Match: *`. A 412 on such a write is checked against the
 * stored bytes: RGW sometimes answers a racing conditional PUT with 500 and then 412 on the
 * retry, and a write whose acknowledgement was lost also comes back as 412 when retried.
 * When the stored object is byte-identical to ours, the write did land and succeeds.
 *
 * Conditional overwrites use `If-Match` with the ETag unquoted: Ceph RGW matches only the bare
 * value (AWS documents the quoted form and accepts the bare one). ETags are returned bare too.
 */

import {
  CopyObjectCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from "@aws-sdk/client-s3";
import * as http from "node:http";
import * as https from "node:https";
import { Deadline, DeadlineExpired, type DeadlineOptions } from "./deadline.ts";
import { checkS3StoreOptions, S3_CONNECTIONS_DEFAULT, type S3StoreOptions } from "./s3_options.ts";

export type { S3StoreOptions };
import { BadAnswer, checkGetAnswer, checkListAnswer, checkWriteAnswer } from "./s3_answers.ts";
import {
  assertRange,
  type ByteRange,
  type GetResult,
  type HeadResult,
  type ListOptions,
  type ListPage,
  type ObjectStore,
  type PutOptions,
  type PutResult,
  StoreError,
} from "./store.ts";

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
  cause?: unknown;
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
  /** Appended to a rejected answer's message: the usual cause is an endpoint that is not S3. */
  #notS3Hint: string;
  #deadline: DeadlineOptions;
  #slots: Semaphore;
  #agents: http.Agent[];
  #options: S3StoreOptions;
  #siblings = new Map<string, S3Store>();

  constructor(options: S3StoreOptions) {
    checkS3StoreOptions(options);
    this.#options = options;
    this.bucket = options.bucket;
    this.description = `the ${options.bucket} bucket`;
    this.#endpoint = options.endpoint ?? "the AWS S3 endpoint";
    this.#notS3Hint = options.endpoint === undefined ? "" : ` (is ${options.endpoint} an S3 endpoint?)`;
    this.#deadline = {
      baseMs: options.requestDeadlineMs ?? 30_000,
      bytesPerSecondMin: options.deadlineBytesPerSecondMin ?? 1024 * 1024,
    };
    const connections = options.connections ?? S3_CONNECTIONS_DEFAULT;
    this.#slots = new Semaphore(connections);
    const agent = { keepAlive: true, maxSockets: connections };
    this.#agents = [new http.Agent(agent), new https.Agent(agent)];
    this.#client = new S3Client(clientConfig(options, this.#agents as [http.Agent, https.Agent]));
  }

  /**
   * Checks at startup that the bucket exists and the credentials work, so a mistake becomes one
   * clear Fatal error instead of failures deep inside the engine.
   */
  async checkBucket(): Promise<void> {
    const action = { text: `open bucket "${this.bucket}" at ${this.#endpoint}` };
    try {
      await this.#send(
        action,
        0,
        (signal) =>
          this.#client.send(new HeadBucketCommand({ Bucket: this.bucket }), { abortSignal: signal }),
      );
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

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<PutResult> {
    const copy = body; // callers leave it unchanged until put() settles (ObjectStore.put)
    const ifNoneMatch = options.ifNoneMatch === true;
    const ifMatch = options.ifMatch;
    const action = { text: `write object "${key}" to bucket "${this.bucket}"`, objectKey: key };
    try {
      const etag = await this.#send(action, copy.length, async (signal) => {
        const response = await this.#client.send(
          new PutObjectCommand({
            Bucket: this.bucket,
            Key: key,
            Body: copy,
            ContentLength: copy.length,
            ...(ifNoneMatch ? { IfNoneMatch: "*" } : {}),
            ...(ifMatch === undefined ? {} : { IfMatch: ifMatch }),
          }),
          { abortSignal: signal },
        );
        checkWriteAnswer(response.ETag);
        return bareEtag(response.ETag);
      });
      return { etag };
    } catch (error) {
      const failed = conditionFailed(error, ifMatch !== undefined);
      if (failed === undefined) throw error;
      const stored = await this.#holding(key, copy);
      if (stored !== undefined) return { etag: stored };
      throw failed;
    }
  }

  async head(key: string): Promise<HeadResult> {
    const action = { text: `read object "${key}" from bucket "${this.bucket}"`, objectKey: key };
    return await this.#send(action, 0, async (signal) => {
      const response = await this.#client.send(
        new HeadObjectCommand({ Bucket: this.bucket, Key: key }),
        { abortSignal: signal },
      );
      if (!response.ETag) throw new BadAnswer("Fatal", "the answer has no ETag");
      return { sizeBytes: response.ContentLength ?? 0, etag: bareEtag(response.ETag) };
    });
  }

  get(key: string, range?: ByteRange): Promise<GetResult> {
    const action = { text: `read object "${key}" from bucket "${this.bucket}"`, objectKey: key };
    if (range !== undefined) assertRange(range);
    const header = range === undefined
      ? {}
      : { Range: `bytes=${range.offsetBytes}-${range.offsetBytes + range.lengthBytes - 1}` };
    return this.#send(action, range?.lengthBytes ?? 0, async (signal, deadline) => {
      const response = await this.#client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: key, ...header }),
        { abortSignal: signal },
      );
      // A whole-object GET learns its size only now: allow for it from here.
      if (range === undefined) deadline.restart(response.ContentLength ?? 0);
      const stream = response.Body;
      if (stream === undefined) throw new BadAnswer("Fatal", "the answer has no body");
      // Stop reading when the deadline passes (the SDK's abort covers the request, not the body).
      signal.addEventListener("abort", () => (stream as { destroy?: () => void }).destroy?.(), {
        once: true,
      });
      const body = await stream.transformToByteArray();
      const totalSizeBytes = checkGetAnswer(response, range, body.length);
      return { body, totalSizeBytes, etag: bareEtag(response.ETag) };
    });
  }

  list(options: ListOptions): Promise<ListPage> {
    const action = { text: `list keys under "${options.prefix}" in bucket "${this.bucket}"` };
    const maxKeys = options.maxKeys ?? 1000;
    return this.#send(action, 0, async (signal) => {
      const response = await this.#client.send(
        new ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: options.prefix,
          ...(options.startAfter ? { StartAfter: options.startAfter } : {}),
          MaxKeys: maxKeys,
        }),
        { abortSignal: signal },
      );
      return checkListAnswer(response, {
        bucket: this.bucket,
        prefix: options.prefix,
        startAfter: options.startAfter,
        maxKeys,
      });
    });
  }

  async delete(key: string): Promise<void> {
    const action = { text: `delete object "${key}" from bucket "${this.bucket}"` };
    await this.#send(
      action,
      0,
      (signal) =>
        this.#client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), {
          abortSignal: signal,
        }),
    );
  }

  async copy(sourceKey: string, destinationKey: string, options: PutOptions = {}): Promise<void> {
    if (options.ifNoneMatch === true) {
      // CopyObject has no create-only condition on S3 or RGW: read and write create-only instead.
      const source = await this.get(sourceKey);
      await this.put(destinationKey, source.body, { ifNoneMatch: true });
      return;
    }
    const action = {
      text: `copy object "${sourceKey}" to "${destinationKey}" in bucket "${this.bucket}"`,
      objectKey: sourceKey,
    };
    const copySource = `${this.bucket}/${encodeURIComponent(sourceKey).replaceAll("%2F", "/")}`;
    await this.#send(action, 0, async (signal) => {
      const response = await this.#client.send(
        new CopyObjectCommand({ Bucket: this.bucket, Key: destinationKey, CopySource: copySource }),
        { abortSignal: signal },
      );
      checkWriteAnswer(response.CopyObjectResult?.ETag);
    });
  }

  /** The same endpoint, credentials and settings on another bucket; closed with this store. */
  inBucket(bucket: string): ObjectStore {
    if (bucket === this.bucket) return this;
    let sibling = this.#siblings.get(bucket);
    if (sibling === undefined) {
      sibling = new S3Store({ ...this.#options, bucket });
      this.#siblings.set(bucket, sibling);
    }
    return sibling;
  }

  async close(): Promise<void> {
    for (const sibling of this.#siblings.values()) await sibling.close();
    this.#client.destroy();
  }

  /**
   * After a request got no answer in time, the idle pooled connections to the same endpoint most
   * likely lead into the same black hole (a dropped NAT or load-balancer entry keeps them open and
   * silent): reusing them would cost every retry another full deadline. New connections are cheap.
   */
  #dropIdleConnections(): void {
    for (const agent of this.#agents) {
      const free = (agent as unknown as { freeSockets?: Record<string, { destroy(): void }[]> }).freeSockets;
      for (const sockets of Object.values(free ?? {})) for (const socket of [...sockets]) socket.destroy();
    }
  }

  /** The ETag when key holds exactly these bytes (our own conditional write landed earlier). */
  async #holding(key: string, body: Uint8Array): Promise<string | undefined> {
    try {
      const stored = await this.get(key);
      const same = stored.body.length === body.length && stored.body.every((b, i) => b === body[i]);
      return same ? stored.etag : undefined;
    } catch (error) {
      if (error instanceof StoreError && error.code === "NotFound") return undefined;
      throw error;
    }
  }

  /**
   * Runs one request within the connection bound and under a deadline for sizeBytes (started once
   * a connection slot is free: waiting for a slot is not the server's delay).
   */
  async #send<T>(
    action: Action,
    sizeBytes: number,
    request: (signal: AbortSignal, deadline: Deadline) => Promise<T>,
  ): Promise<T> {
    await this.#slots.acquire();
    const deadline = new Deadline(this.#deadline, sizeBytes);
    try {
      return await deadline.race(request(deadline.signal, deadline));
    } catch (error) {
      if (error instanceof BadAnswer) {
        const hint = error.code === "Fatal" ? this.#notS3Hint : "";
        throw new StoreError(error.code, `Cannot ${action.text}: ${error.message}${hint}`, { cause: error });
      }
      const mapped = mapError(error, action, this.#endpoint);
      if (deadline.signal.aborted) this.#dropIdleConnections();
      throw mapped;
    } finally {
      deadline.cancel();
      this.#slots.release();
    }
  }
}

/** S3 quotes ETags in headers; lsvd passes them around bare (what RGW's If-Match matches). */
function bareEtag(etag: string | undefined): string {
  return (etag ?? "").replace(/^"(.*)"$/, "$1");
}

/**
 * The PreconditionFailed a conditional PUT's error means, or undefined for any other error. An
 * If-Match on a missing key comes back as 404 from some servers: the condition failed all the same.
 */
function conditionFailed(error: unknown, ifMatch: boolean): StoreError | undefined {
  if (!(error instanceof StoreError)) return undefined;
  if (error.code === "PreconditionFailed") {
    if (!ifMatch) return error;
    return new StoreError(
      "PreconditionFailed",
      error.message.replace(/the key already exists$/, "the key has changed"),
      {
        cause: error,
      },
    );
  }
  if (ifMatch && error.code === "NotFound") {
    return new StoreError(
      "PreconditionFailed",
      error.message.replace(/no such key$/, "the key does not exist"),
      {
        cause: error,
      },
    );
  }
  return undefined;
}

function clientConfig(
  options: S3StoreOptions,
  [httpAgent, httpsAgent]: [http.Agent, https.Agent],
): S3ClientConfig {
  const region = options.region ?? Deno.env.get("AWS_REGION") ?? Deno.env.get("AWS_DEFAULT_REGION") ??
    "us-east-1";
  return {
    region,
    forcePathStyle: options.forcePathStyle ?? false,
    maxAttempts: 1, // one loop: callers retry through a RetryingStore (retry.ts)
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: {
      httpAgent,
      httpsAgent,
      // No requestTimeout: the SDK's only logs a warning; S3Store's deadline aborts instead.
      connectionTimeout: options.connectTimeoutMs ?? 5_000,
    },
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
  };
}

/** Maps any SDK or network failure onto a StoreError with a `Cannot <action>: <cause>` message. */
export function mapError(error: unknown, action: Action, endpoint: string): StoreError {
  if (error instanceof StoreError) return error;
  const e = (error ?? {}) as SdkError;
  // The SDK names an answer it cannot parse "Unknown"/"UnknownError": that says nothing to a user.
  const name = /^Unknown(Error)?$/.test(e.name ?? e.Code ?? "") ? "" : e.name ?? e.Code ?? "";
  const status = e.$metadata?.httpStatusCode;
  const fail = (code: StoreError["code"], cause: string) =>
    new StoreError(code, `Cannot ${action.text}: ${cause}`, { cause: error });
  const expired = error instanceof DeadlineExpired ? error : e.cause;
  if (expired instanceof DeadlineExpired) return fail("Transient", `${expired.message} from ${endpoint}`);
  if (name === "AbortError") return fail("Transient", `the request to ${endpoint} was aborted`);
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
  // No status: no HTTP answer at all (refused, reset, timed out), whatever name the SDK gave it.
  if (status === undefined) {
    const where = action.text.includes(endpoint) ? "it" : endpoint; // said once, not twice
    return fail("Transient", `cannot reach ${where} (${networkCause(e)})`);
  }
  if (TRANSIENT_NAMES.has(name) || status === 429 || status >= 500) {
    return fail("Transient", `the server answered ${name || `HTTP ${status}`}`);
  }
  if (name === "") {
    return fail("Fatal", `the server answered HTTP ${status} without an S3 error code (is ${endpoint} S3?)`);
  }
  const message = e.message ?? "";
  const detail = message === "" || message === name || /^Unknown(Error)?$/.test(message)
    ? ""
    : `: ${message}`;
  return fail("Fatal", `the server answered ${name} (HTTP ${status})${detail}`);
}

/** `connect ECONNREFUSED 127.0.0.1:1`: the message, with the code only when the message lacks it. */
function networkCause(e: SdkError): string {
  const message = e.message ?? "";
  const code = e.code !== undefined && e.code !== "" && !message.includes(e.code) ? e.code : undefined;
  const text = message !== "" ? message : e.name === "Error" ? "" : e.name;
  return [code, text].filter((s) => s !== undefined && s !== "").join(": ") || "network error";
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
