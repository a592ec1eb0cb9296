/**
 * @module
 * The backend limit: raw PUT/GET throughput and latency of a store measured with the same SDK and
 * concurrency lsvd uses, in its own process (as lsvd is), printing one JSON line:
 *   {"ops":N,"seconds":S,"opsPerS":..,"bytesPerS":..,"p50Ms":..,"probeP50Ms":..}
 *
 * Modes:
 *   put      N PUTs of --object-bytes at --concurrency into --bucket (or, with --dir, files written
 *            the way the directory store writes them: temp file, fsync, rename, fsync of the directory)
 *   get      writes --objects objects of --object-bytes through --endpoint (not timed), then N ranged
 *            GETs of --range-bytes at random aligned offsets through --read-endpoint (the WAN proxy);
 *            first --probe GETs at concurrency 1 give the unloaded per-request latency
 * Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { getRange, makeS3Client, putObject, runConcurrently, type S3Endpoint } from "./s3_client.ts";
import { median } from "./stats.ts";

export interface RawResult {
  ops: number;
  seconds: number;
  opsPerS: number;
  bytesPerS: number;
  p50Ms: number;
  probeP50Ms: number | undefined;
}

interface RawOptions {
  mode: "put" | "get";
  count: number;
  concurrency: number;
  objectBytes: number;
  rangeBytes: number;
  objects: number;
  probe: number;
  bucket: string | undefined;
  dir: string | undefined;
  endpoint: string | undefined;
  readEndpoint: string | undefined;
  prefix: string;
}

function randomBody(bytes: number): Uint8Array {
  const body = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i += 65536) crypto.getRandomValues(body.subarray(i, Math.min(bytes, i + 65536)));
  return body;
}

function s3Endpoint(url: string): S3Endpoint {
  const accessKeyId = Deno.env.get("AWS_ACCESS_KEY_ID");
  const secretAccessKey = Deno.env.get("AWS_SECRET_ACCESS_KEY");
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    throw new Error("Cannot reach the store: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set");
  }
  return { endpoint: url, accessKeyId, secretAccessKey };
}

function summarize(latenciesMs: number[], seconds: number, bytesPerOp: number, probe?: number[]): RawResult {
  return {
    ops: latenciesMs.length,
    seconds,
    opsPerS: latenciesMs.length / seconds,
    bytesPerS: (latenciesMs.length * bytesPerOp) / seconds,
    p50Ms: median(latenciesMs),
    probeP50Ms: probe === undefined || probe.length === 0 ? undefined : median(probe),
  };
}

async function dirPut(dir: string, key: string, body: Uint8Array): Promise<void> {
  const path = join(dir, key);
  const temp = `${path}.tmp-${crypto.randomUUID()}`;
  const file = await Deno.open(temp, { write: true, createNew: true });
  try {
    let written = 0;
    while (written < body.length) written += await file.write(body.subarray(written));
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(temp, path);
  // A durable create also needs the directory entry on disk, as the directory store does.
  const directory = await Deno.open(dir, { read: true });
  try {
    await directory.sync();
  } finally {
    directory.close();
  }
}

async function runPut(o: RawOptions): Promise<RawResult> {
  const body = randomBody(o.objectBytes);
  let put: (key: string) => Promise<void>;
  if (o.dir !== undefined) {
    await Deno.mkdir(o.dir, { recursive: true });
    put = (key) => dirPut(o.dir!, key, body);
  } else {
    const client = makeS3Client(s3Endpoint(o.endpoint!), o.concurrency);
    put = (key) => putObject(client, o.bucket!, key, body);
  }
  const t0 = performance.now();
  const latencies = await runConcurrently(o.count, o.concurrency, (i) => put(`${o.prefix}put-${i}`));
  return summarize(latencies, (performance.now() - t0) / 1000, o.objectBytes);
}

async function runGet(o: RawOptions): Promise<RawResult> {
  const writer = makeS3Client(s3Endpoint(o.endpoint!), 32);
  const body = randomBody(o.objectBytes);
  const key = (i: number) => `${o.prefix}get-${i}`;
  await runConcurrently(o.objects, 32, (i) => putObject(writer, o.bucket!, key(i), body));
  writer.destroy();
  const reader = makeS3Client(s3Endpoint(o.readEndpoint ?? o.endpoint!), o.concurrency);
  const slots = Math.floor(o.objectBytes / o.rangeBytes);
  const read = () => {
    const object = Math.floor(Math.random() * o.objects);
    const slot = Math.floor(Math.random() * slots);
    return getRange(reader, o.bucket!, key(object), slot * o.rangeBytes, o.rangeBytes).then(() => {});
  };
  const probe = await runConcurrently(o.probe, 1, read);
  const t0 = performance.now();
  const latencies = await runConcurrently(o.count, o.concurrency, read);
  const seconds = (performance.now() - t0) / 1000;
  reader.destroy();
  return summarize(latencies, seconds, o.rangeBytes, probe);
}

function parseRawOptions(args: string[]): RawOptions {
  const { values } = parseArgs({
    args,
    options: {
      mode: { type: "string" },
      count: { type: "string", default: "100" },
      concurrency: { type: "string", default: "32" },
      "object-bytes": { type: "string", default: String(4 << 20) },
      "range-bytes": { type: "string", default: "4096" },
      objects: { type: "string", default: "16" },
      probe: { type: "string", default: "0" },
      bucket: { type: "string" },
      dir: { type: "string" },
      endpoint: { type: "string" },
      "read-endpoint": { type: "string" },
      prefix: { type: "string", default: "" },
    },
  });
  const mode = values.mode;
  if (mode !== "put" && mode !== "get") throw new Error(`Invalid --mode "${mode}": expected put or get`);
  if (values.dir === undefined && (values.bucket === undefined || values.endpoint === undefined)) {
    throw new Error("Invalid options: give --dir, or --bucket and --endpoint");
  }
  if (mode === "get" && values.dir !== undefined) throw new Error("Invalid options: get needs a bucket");
  return {
    mode,
    count: Number(values.count),
    concurrency: Number(values.concurrency),
    objectBytes: Number(values["object-bytes"]),
    rangeBytes: Number(values["range-bytes"]),
    objects: Number(values.objects),
    probe: Number(values.probe),
    bucket: values.bucket,
    dir: values.dir,
    endpoint: values.endpoint,
    readEndpoint: values["read-endpoint"],
    prefix: values.prefix,
  };
}

if (import.meta.main) {
  const options = parseRawOptions(Deno.args);
  const result = options.mode === "put" ? await runPut(options) : await runGet(options);
  console.log(JSON.stringify(result));
  Deno.exit(0);
}
