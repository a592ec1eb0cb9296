/**
 * @module
 * Restart speed: objects replayed per second in WAN mode. N log objects (a few 4 KiB entries
 * each, in lsvd's own format) are written straight into a bucket with the SDK; then `lsvd serve
 * --read-only` (which archives and checkpoints nothing, so every start replays all N) is timed
 * from spawn to `lsvd: Device is now operational.`, alternating with a start on a one-object volume.
 * Replay rate = (N − 1) ÷ (time with N objects − time with one).
 *
 * Then one ordinary (writable) start and clean stop on the same log, which leaves a map checkpoint
 * the way every lsvd shutdown does, and the read-only starts are timed again: that is the restart
 * a user of an lsvd-written volume sees (one checkpoint GET plus the headers after it).
 */

import { join } from "node:path";
import { logKey, normalizePrefix } from "../src/format/keys.ts";
import { ObjectBuilder } from "../src/format/object.ts";
import { makeS3Client, putObject, runConcurrently } from "./s3_client.ts";
import { startLsvd, type TargetContext } from "./targets.ts";
import { median } from "./stats.ts";
import type { Figures } from "./measure.ts";

const ENTRIES_PER_OBJECT = 4;
const SECTOR_BYTES = 4096;

function buildObject(sequence: number, volumeBytes: number): Uint8Array {
  const builder = new ObjectBuilder({ dataBytes: ENTRIES_PER_OBJECT * SECTOR_BYTES, zeroRanges: 0 });
  const sectors = volumeBytes / SECTOR_BYTES;
  for (let i = 0; i < ENTRIES_PER_OBJECT; i++) {
    const data = builder.addEntry(Math.floor(Math.random() * sectors) * SECTOR_BYTES, SECTOR_BYTES);
    data.fill(sequence & 0xff);
  }
  return builder.finish({ sequence, writerEpoch: 1, volumeSizeBytes: volumeBytes, sealTimeMs: Date.now() });
}

async function writeLog(ctx: TargetContext, bucket: string, prefix: string, count: number): Promise<void> {
  const s3 = ctx.s3!;
  const client = makeS3Client(s3, 32);
  try {
    await runConcurrently(
      count,
      32,
      (i) => putObject(client, bucket, logKey(prefix, i + 1), buildObject(i + 1, ctx.volumeBytes)),
    );
  } finally {
    client.destroy();
  }
}

/** Milliseconds from spawn to "operational", and from "Starting recovery" to "Recovery complete". */
async function timeStart(
  ctx: TargetContext,
  bucket: string,
  prefix: string,
  readOnly = true,
): Promise<{ startMs: number; recoveryMs: number }> {
  const socketPath = join(ctx.tmpDir, `restart-${ctx.nextId()}.sock`);
  const daemon = await startLsvd(ctx, {
    socketPath,
    storeArgs: ["--bucket", bucket, "--path-style", "--prefix", prefix, ...(readOnly ? ["--read-only"] : [])],
    wan: true,
    label: "lsvd (restart)",
  });
  const readyAtMs = performance.now();
  const from = daemon.lineTime(/Starting recovery/);
  const to = daemon.lineTime(/Recovery complete/);
  const code = await daemon.stop();
  await Deno.remove(socketPath).catch(() => {});
  if (code !== 0) {
    throw new Error(`Cannot stop lsvd cleanly after a restart: exit code ${code}\n${daemon.output}`);
  }
  return {
    startMs: readyAtMs - daemon.startedAtMs,
    recoveryMs: from !== undefined && to !== undefined ? to - from : NaN,
  };
}

export async function measureRestart(ctx: TargetContext, objects: number, rounds: number): Promise<Figures> {
  if (ctx.s3 === undefined) throw new Error("Cannot measure restarts: no S3 backend was started");
  const bucket = await ctx.s3.newBucket();
  try {
    const full = normalizePrefix(`log-${objects}`);
    const empty = normalizePrefix("empty");
    const t0 = performance.now();
    await writeLog(ctx, bucket, full, objects);
    const writeS = (performance.now() - t0) / 1000;
    // The baseline is a one-object volume: a read-only start on a prefix with no volume is refused.
    await writeLog(ctx, bucket, empty, 1);
    const emptyStarts: number[] = [];
    const fullStarts: number[] = [];
    const fullRecoveries: number[] = [];
    const emptyRecoveries: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const e = await timeStart(ctx, bucket, empty);
      const f = await timeStart(ctx, bucket, full);
      emptyStarts.push(e.startMs);
      fullStarts.push(f.startMs);
      emptyRecoveries.push(e.recoveryMs);
      fullRecoveries.push(f.recoveryMs);
    }
    const replayMs = median(fullStarts) - median(emptyStarts);
    await timeStart(ctx, bucket, full, false); // a writable start + clean stop leaves a checkpoint
    const checkpointedStarts: number[] = [];
    for (let r = 0; r < rounds; r++) checkpointedStarts.push((await timeStart(ctx, bucket, full)).startMs);
    // Within noise of an empty start the difference can be ≤ 0: count at least 1 ms.
    const checkpointedMs = Math.max(1, median(checkpointedStarts) - median(emptyStarts));
    return {
      value: (objects - 1) / (replayMs / 1000),
      checkpointedObjectsPerS: objects / (checkpointedMs / 1000),
      checkpointedStartMs: median(checkpointedStarts),
      emptyStartMs: median(emptyStarts),
      fullStartMs: median(fullStarts),
      recoveryLinesMs: median(fullRecoveries) - median(emptyRecoveries),
      writeObjectsPerS: objects / writeS,
    };
  } finally {
    await ctx.s3.dropBucket(bucket);
  }
}
