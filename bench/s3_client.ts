/**
 * @module
 * The benchmark's own S3 client: the same SDK lsvd uses (`npm:@aws-sdk/client-s3`), with a socket
 * pool as large as the concurrency asked for, for the raw-throughput baseline and for writing log
 * objects straight into a bucket.
 */

import {
  CreateBucketCommand,
  DeleteBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";

export interface S3Endpoint {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region?: string;
}

export function makeS3Client(endpoint: S3Endpoint, sockets: number): S3Client {
  const agent = { keepAlive: true, maxSockets: sockets };
  return new S3Client({
    endpoint: endpoint.endpoint,
    region: endpoint.region ?? "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: endpoint.accessKeyId, secretAccessKey: endpoint.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
    requestHandler: { httpAgent: agent, httpsAgent: agent },
    maxAttempts: 3,
  });
}

export async function putObject(
  client: S3Client,
  bucket: string,
  key: string,
  body: Uint8Array,
): Promise<void> {
  await client.send(
    // Create-only, like every PUT lsvd makes (`If-None-Match: *`), so the baseline costs what lsvd's do.
    new PutObjectCommand({
      Bucket: bucket,
      Key: key,
      Body: body,
      ContentLength: body.length,
      IfNoneMatch: "*",
    }),
  );
}

/** A ranged GET; returns the number of bytes received. */
export async function getRange(
  client: S3Client,
  bucket: string,
  key: string,
  offsetBytes: number,
  lengthBytes: number,
): Promise<number> {
  const out = await client.send(
    new GetObjectCommand({
      Bucket: bucket,
      Key: key,
      Range: `bytes=${offsetBytes}-${offsetBytes + lengthBytes - 1}`,
    }),
  );
  const body = await out.Body!.transformToByteArray();
  if (body.length !== lengthBytes) {
    throw new Error(`Cannot read "${key}": got ${body.length} bytes, expected ${lengthBytes}`);
  }
  return body.length;
}

export async function createBucket(client: S3Client, bucket: string): Promise<void> {
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
}

/** Deletes every object of a bucket, then the bucket, so RGW's in-memory store does not fill up. */
export async function deleteBucket(client: S3Client, bucket: string): Promise<void> {
  for (;;) {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, MaxKeys: 1000 }));
    const keys = (page.Contents ?? []).map((o) => ({ Key: o.Key! }));
    if (keys.length === 0) break;
    await client.send(new DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }));
  }
  await client.send(new DeleteBucketCommand({ Bucket: bucket }));
}

/** Runs count tasks with at most `concurrency` in flight; returns each task's latency in ms. */
export async function runConcurrently(
  count: number,
  concurrency: number,
  task: (index: number) => Promise<void>,
): Promise<number[]> {
  const latenciesMs: number[] = new Array(count);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= count) return;
      const t0 = performance.now();
      await task(i);
      latenciesMs[i] = performance.now() - t0;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return latenciesMs;
}
