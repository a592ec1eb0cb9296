/**
 * @module
 * The S3 store's options and their check, apart from the store itself: src/store/s3.ts imports the
 * AWS SDK, whose module graph costs a daemon about 25 MiB of resident memory from the moment it is
 * loaded, so lazy_s3.ts checks options here at once and loads the SDK only when a bucket is used.
 */

import { StoreError } from "./store.ts";

/** Concurrent requests and sockets of an S3 store (`--connections`). */
export const S3_CONNECTIONS_DEFAULT = 100;

export interface S3StoreOptions {
  bucket: string;
  /** e.g. `http://127.0.0.1:7480`; default the SDK's AWS endpoint for the region. */
  endpoint?: string;
  /** Default AWS_REGION, then AWS_DEFAULT_REGION, then `us-east-1`; R2 takes `auto`. */
  region?: string;
  /** Path-style URLs (`endpoint/bucket/key`), needed by RGW and MinIO; default false. */
  forcePathStyle?: boolean;
  /** Concurrent requests and sockets; default S3_CONNECTIONS_DEFAULT. */
  connections?: number;
  /** Socket connect bound per request; default 5,000. */
  connectTimeoutMs?: number;
  /** Deadline for a request that moves no data; past it the request is aborted (Transient). Default 30,000. */
  requestDeadlineMs?: number;
  /** The deadline grows by the time the body takes at this rate; default 1 MiB/s. */
  deadlineBytesPerSecondMin?: number;
  /** Default: the SDK's chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profiles, instance roles). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
}

/** Throws the one-line Fatal StoreError for options no S3 store can take. */
export function checkS3StoreOptions(options: S3StoreOptions): void {
  if (!options.bucket) throw new StoreError("Fatal", "Cannot open the S3 store: no bucket was given");
  const connections = options.connections ?? S3_CONNECTIONS_DEFAULT;
  if (!(Number.isInteger(connections) && connections >= 1)) {
    throw new StoreError(
      "Fatal",
      `Cannot open the S3 store: connections ${connections} is not a positive integer`,
    );
  }
  const deadlineMs = options.requestDeadlineMs ?? 30_000;
  const rate = options.deadlineBytesPerSecondMin ?? 1;
  if (!(deadlineMs > 0 && rate > 0)) {
    throw new StoreError("Fatal", "Cannot open the S3 store: request deadlines must be positive");
  }
}
